"""Serialization of state changes across threads and processes.

During a rolling update an old and a new plugin pod serve the same driver side by side, and the
kubelet may prepare a claim in one and unprepare it in the other.  Every load → act → store on
the checkpoint therefore runs under an exclusive ``flock`` on ``<plugin data dir>/serialize.lock``
(the file the Go helper uses).  The lock file stays open for the life of the process and the
kernel's blocking ``flock`` does the waiting, so an uncontended acquisition costs two system
calls; a ``threading.Lock`` in front serializes the threads of one process, because ``flock``
locks belong to the open file description, which all threads share.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE_NAME = "serialize.lock"


class SerializeLock:
    """An exclusive lock shared by every process (and thread) of one driver on a node."""

    def __init__(self, *, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / LOCK_FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._thread_lock = threading.Lock()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock for the duration of the ``with`` block."""
        with self._thread_lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)
