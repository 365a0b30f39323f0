"""Serialization of state changes across threads and processes.

During a rolling update an old and a new plugin pod serve the same driver side by side, and the
kubelet may prepare a claim in one and unprepare it in the other.  Every load → act → store on
the checkpoint therefore runs under an exclusive ``flock`` on ``<plugin data dir>/serialize.lock``
(the file the Go helper uses), taken through ``filelock``.  A ``threading.Lock`` in front keeps
threads of one process from polling the file lock against each other.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import UnixFileLock

LOCK_FILE_NAME = "serialize.lock"


class SerializeLock:
    """An exclusive, reentrant-free lock shared by every process of one driver on a node."""

    def __init__(self, *, directory: str | os.PathLike[str], timeout: float = 40.0) -> None:
        self.path = Path(directory) / LOCK_FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._thread_lock = threading.Lock()
        self._file_lock = UnixFileLock(
            str(self.path), mode=0o600, thread_local=False, is_singleton=False
        )
        self._timeout = timeout

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock; raise ``filelock.Timeout`` after ``timeout`` seconds of waiting."""
        if not self._thread_lock.acquire(timeout=self._timeout):
            raise TimeoutError(f"timed out waiting for {self.path}")
        try:
            self._file_lock.acquire(timeout=self._timeout, poll_interval=0.002)
            try:
                yield
            finally:
                self._file_lock.release()
        finally:
            self._thread_lock.release()
