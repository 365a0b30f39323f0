"""Faults injected into the fake API server: error answers, connection resets, hung requests.

A ``Fault`` matches requests by HTTP method or API verb and by resource; ``Faults.take`` hands
the handler the first pending fault that matches a request and counts it down.  An error fault
replaces the answer; a hang fault holds the request before it is served as usual, for a
``delay`` or until ``release``, which is how an overloaded apiserver, or one cut off from etcd,
looks to a client: the connection is accepted, the request read, and no answer comes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class Fault:
    """``status`` answers (0: reset the connection); ``hang`` holds the request instead."""

    method: str | None
    resource: str | None
    status: int
    remaining: int
    body: bytes | None
    hang: bool = False
    delay: float | None = None


class Faults:
    """The pending faults of one server, and the requests held by hang faults."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: list[Fault] = []
        self._held = 0
        self._releases = 0
        self._stopped = False

    def add(self, fault: Fault) -> None:
        with self._cond:
            self._pending.append(fault)

    def take(self, method: str, verb: str, resource: str) -> Fault | None:
        """The first pending fault for this request, counted down (removed when used up)."""
        with self._cond:
            for fault in self._pending:
                if fault.method is not None and fault.method not in (method, verb):
                    continue
                if fault.resource is not None and fault.resource not in (
                        resource, resource.split("/")[0]):
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._pending.remove(fault)
                return fault
        return None

    def hold(self, delay: float | None) -> None:
        """Block the calling request for ``delay`` seconds (None: until ``release``)."""
        with self._cond:
            self._held += 1
            self._cond.notify_all()
            releases = self._releases
            try:
                self._cond.wait_for(lambda: self._releases != releases or self._stopped, delay)
            finally:
                self._held -= 1
                self._cond.notify_all()

    @property
    def held(self) -> int:
        """Requests being held now."""
        with self._cond:
            return self._held

    def release(self) -> None:
        """Let every request held now go on."""
        with self._cond:
            self._releases += 1
            self._cond.notify_all()

    def stop(self) -> None:
        """Release held requests and hold no more (the server is stopping)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def restart(self) -> None:
        with self._cond:
            self._stopped = False
