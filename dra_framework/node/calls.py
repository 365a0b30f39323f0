"""One kubelet call: its admission, its time, and how any failure becomes a claim's answer.

* ``CallGate`` admits calls until closing begins, then lets ``close`` wait until the calls in
  flight are done: the preparer releases its lock only after that.
* A call answers before its deadline (the kubelet gives 45 s, ``DEFAULT_CALL_BUDGET``); the
  claim reads of one call run on threads of that call alone (``start_reads``), each bounded by
  the time left, so a call stuck on a hung API server never delays another.
* ``claim_error`` turns whatever went wrong with one claim (a ``ClaimError``, a failed read of the
  state, a bug) into that claim's error, and ``bounded`` cuts what is answered and logged to
  ``MAX_ERROR_CHARS``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..errors import ClaimError, ConfigError, StateError, TransientApiError
from .locking import LockTimeout

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_CALL_BUDGET = 45.0
"""Seconds a call may take when the caller gives no deadline (the kubelet's per-call timeout)."""

REPLY_RESERVE = 5.0
"""Seconds of a call's budget kept back from claim reads for the locked work and the reply (a
fifth of the budget when that is less)."""

MAX_ERROR_CHARS = 1024
"""Longest error string answered (and logged) for one claim; a pod event quotes it."""

STOPPING = "the plugin is stopping; the kubelet retries the claim with the plugin that replaces it"


def bounded(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``message``, cut to ``limit`` characters with a note of how much was left out."""
    if len(message) <= limit:
        return message
    note = f"... ({len(message) - limit} more characters)"
    return message[: limit - len(note)] + note


def claim_error(exc: Exception) -> ClaimError:
    """Whatever went wrong with one claim, as that claim's error."""
    if isinstance(exc, ClaimError):
        return exc
    if isinstance(exc, LockTimeout):
        return StateError(f"the plugin state is locked for too long: {exc}; retried later")
    if isinstance(exc, (OSError, sqlite3.Error)):
        return StateError(f"cannot use the plugin state: {exc}")
    if isinstance(exc, RecursionError):
        return ConfigError("the claim is nested too deeply to be processed")
    return ClaimError(f"internal error: {type(exc).__name__}: {exc}; see the plugin log")


class CallGate:
    """The calls in flight: refused once closing began; ``close`` waits until none is left."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._closing = False

    def enter(self) -> bool:
        with self._cond:
            if self._closing:
                return False
            self._active += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def close(self, *, waiting: Callable[[int], None]) -> None:
        with self._cond:
            self._closing = True
            while self._active:
                if not self._cond.wait(timeout=5.0):
                    waiting(self._active)


def start_reads(items: Sequence[T], read: Callable[[T, float], R | ClaimError], *, until: float,
                workers: int, name: str) -> list[Callable[[], R | ClaimError]]:
    """Start ``read(item, timeout)`` for each item; each returned callable gives that item's
    outcome by ``until`` (a ``time.monotonic()`` instant).  One read runs in the caller's
    thread when asked; several run on threads of this call alone."""
    def bounded_read(item: T) -> R | ClaimError:
        left = until - time.monotonic()
        if left <= 0:
            return TransientApiError("no time was left before the kubelet's deadline to "
                                     "read the claim")
        return read(item, left)

    if len(items) <= 1:
        return [functools.partial(bounded_read, item) for item in items]
    pool = ThreadPoolExecutor(max_workers=min(len(items), workers), thread_name_prefix=name)
    futures = [pool.submit(bounded_read, item) for item in items]
    pool.shutdown(wait=False)  # its threads end with their reads, which end by ``until``

    def result(future: concurrent.futures.Future[R | ClaimError]) -> R | ClaimError:
        try:
            return future.result(timeout=max(until - time.monotonic(), 0) + 1.0)
        except concurrent.futures.TimeoutError:
            return TransientApiError("the claim could not be read before the kubelet's "
                                     "deadline")
    return [functools.partial(result, f) for f in futures]
