"""Serialization of state changes across threads and processes.

During a rolling update an old and a new plugin pod serve the same driver side by side, and the
kubelet may prepare a claim in one and unprepare it in the other.  Every load → act → store on
the checkpoint therefore runs under an exclusive ``flock`` on ``<plugin data dir>/serialize.lock``
(the file the Go helper uses).  The lock file stays open for the life of the process, so an
uncontended acquisition costs two system calls; a ``threading.Lock`` in front serializes the
threads of one process, because ``flock`` locks belong to the open file description, which all
threads share.

A holder may wait with a ``timeout`` (a kubelet call must answer before its deadline even when
another process holds the lock for long): the thread lock is taken with that timeout and the
``flock`` is polled without blocking until it passes (``LockTimeout``).  The file is opened
without following a link, so a planted link cannot make us open (or block on) another file.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import SetupError

LOCK_FILE_NAME = "serialize.lock"


class LockTimeout(TimeoutError):
    """The lock stayed held by another call or process for longer than the caller could wait."""


class SerializeLock:
    """An exclusive lock shared by every process (and thread) of one driver on a node."""

    def __init__(self, *, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / LOCK_FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._thread_lock = threading.Lock()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                               0o600)
        except OSError as exc:
            raise SetupError(f"cannot open the lock file {self.path}: {exc}") from exc

    @contextmanager
    def hold(self, *, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock for the duration of the ``with`` block.

        With ``timeout`` (seconds), raise ``LockTimeout`` instead of waiting longer."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            raise LockTimeout(f"{self.path} is held by another call of this plugin")
        try:
            self._flock(deadline)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _flock(self, deadline: float | None) -> None:
        if deadline is None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            return
        pause = 0.001
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LockTimeout(f"{self.path} is held by another plugin process") from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, 0.05)

    def close(self) -> None:
        os.close(self._fd)
