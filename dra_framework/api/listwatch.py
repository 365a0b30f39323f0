"""One list+watch loop, shared by the watches that keep objects in memory.

``ListWatch`` lists a collection (optionally with a ``fieldSelector``), then watches it from
the list's resourceVersion with ``allowWatchBookmarks``, in one background thread, and hands
what it reads to a ``Sink``: the listed objects (``replace``) and each event's object
(``apply``).  The claim cache (all ResourceClaims) and the pod claim cache (this node's Pods)
are such sinks; what they keep is their business, how the collection is followed is this
module's:

* A 410 Gone (an ``ERROR`` event or an HTTP 410) means the resourceVersion was compacted away:
  list again (after a ``rest.Backoff`` pause if that happens again before the new watch
  delivered anything, so a server that keeps expiring watches is not hammered).
* Connection failures and server errors are retried with backoff from the last
  resourceVersion seen; BOOKMARK events advance that version, so a re-watch after a quiet
  period does not need a re-list.  Every event resets the backoff.
* One object never holds the watch up: a line that is no JSON object is skipped by
  ``rest.watch_events``; an object the sink fails to convert or apply (an event, or an item
  of a list) is skipped too, after ``Sink.drop`` (so the sink forgets what it held of it and
  reads go to the API); both are counted in ``rest.WATCH_EVENTS_SKIPPED`` and logged once.
* ``stop`` shuts the open watch connection down rather than waiting for the next event.

The resourceVersion is advanced after the sink saw the event, so a caller that waits for
``resource_version`` to reach the server's sees the sink up to date.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .rest import ApiError, Backoff, KubeApi, skip_event, watch_events

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""``(namespace, name)``; the namespace is ``""`` for cluster-scoped objects."""


def field(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...``, or None where a step is missing or not a mapping."""
    for part in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def object_key(obj: Mapping[str, Any]) -> Key:
    return (str(field(obj, "metadata", "namespace") or ""),
            str(field(obj, "metadata", "name") or ""))


def object_uid(obj: Mapping[str, Any]) -> str:
    return str(field(obj, "metadata", "uid") or "")


class Sink(Protocol):
    """What a ``ListWatch`` feeds.  Each method is called from the watch thread only."""

    def convert(self, raw: dict[str, Any]) -> Mapping[str, Any]:
        """The object as the sink wants it (raises: the object is skipped)."""
        ...

    def replace(self, objects: Sequence[Mapping[str, Any]]) -> None:
        """After a list: ``objects`` (the converted items) are all there is."""

    def apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        """One ``ADDED``, ``MODIFIED`` or ``DELETED`` event's converted object (raises: the
        event is skipped)."""

    def drop(self, raw: Mapping[str, Any]) -> None:
        """``raw`` (as served) could not be used: forget what is held of it."""

    def describe(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Log fields that name ``raw`` (the object of a skipped event or list item)."""
        ...


class ListWatch:
    """List, then watch, ``path`` into ``sink`` from a background thread."""

    def __init__(self, *, api: KubeApi, path: str, sink: Sink, name: str,
                 field_selector: str = "", watch_timeout: int = 300,
                 backoff: Backoff | None = None, log_extra: Mapping[str, Any] | None = None
                 ) -> None:
        self.path = path
        self._api = api
        self._sink = sink
        self._name = name
        self._field_selector = field_selector
        self._watch_timeout = watch_timeout
        self._backoff = backoff or Backoff(initial=0.2, maximum=10.0)
        self._extra = dict(log_extra or {})
        self._lock = threading.Lock()
        self._rv = ""
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self._expired_after_list = False
        self.lists = 0
        """Successful list calls (the first one and every re-list)."""

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the list+watch thread (idempotent)."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, daemon=True, name=self._name)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching: the open watch connection is shut down, the thread waited for."""
        self._stopping.set()
        with self._lock:
            resp = self._response
        if resp is not None:
            with contextlib.suppress(Exception):
                if hasattr(resp, "shutdown"):  # urllib3 >= 2.3: unblocks a pending read
                    resp.shutdown()
                else:
                    resp.close()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def stopping(self) -> threading.Event:
        """Set once ``stop`` was called (sinks' own threads wait on it)."""
        return self._stopping

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait until the first list is in; False if ``timeout`` passed first."""
        return self._synced.wait(timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    @property
    def resource_version(self) -> str:
        """The last resourceVersion seen (list, event or bookmark)."""
        return self._rv

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        need_list = True
        what = self.path.rstrip("/").rsplit("/", 1)[-1]
        while not self._stopping.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                    self._expired_after_list = True  # until the watch delivers an event
                self._watch()
            except ApiError as exc:
                if self._stopping.is_set():
                    return
                if exc.code == 410:
                    log.info(f"{what} watch expired, listing again",
                             extra={**self._extra, "resource_version": self._rv})
                    if need_list or self._expired_after_list:  # again at once: do not spin
                        self._pause(f"{what} watch expired right after a list")
                    need_list = True
                    continue
                self._pause(f"{what} {'list' if need_list else 'watch'} failed: {exc}")
            except Exception as exc:  # never let the thread die: the sink would go stale
                if self._stopping.is_set():
                    return
                log.exception(f"{what} watch error", extra=self._extra)
                self._pause(f"{what} watch error: {exc}")

    def _pause(self, why: str) -> None:
        delay = self._backoff.next()
        log.warning(f"{why}; retrying in {delay:.2f}s",
                    extra={**self._extra, "resource_version": self._rv})
        self._stopping.wait(delay)

    def _relist(self) -> None:
        data = self._api.list(self.path, field_selector=self._field_selector)
        objects: list[Mapping[str, Any]] = []
        for raw in data.get("items") or []:
            if not isinstance(raw, dict):
                continue
            try:  # one by one: an object that cannot be converted costs only itself
                objects.append(self._sink.convert(raw))
            except Exception as exc:
                self._skip(raw, exc)
        self._sink.replace(objects)
        self._rv = str(field(data, "metadata", "resourceVersion") or "")
        self.lists += 1
        self._synced.set()
        log.info(f"{self.path.rstrip('/').rsplit('/', 1)[-1]} listed",
                 extra={**self._extra, "listed": len(objects), "resource_version": self._rv})

    def _watch(self) -> None:
        """One watch request, streamed here rather than through ``KubeApi.watch`` so that
        ``stop`` can shut the connection down instead of waiting for the next event."""
        query = [("watch", "1"), ("resourceVersion", self._rv),
                 ("timeoutSeconds", str(self._watch_timeout)), ("allowWatchBookmarks", "true")]
        if self._field_selector:
            query.append(("fieldSelector", self._field_selector))
        resp = self._api.send("GET", self.path, query=query, stream=True,
                              timeout=self._watch_timeout + 30)
        with self._lock:
            self._response = resp
        try:
            if self._stopping.is_set():  # stop() came before there was a response to shut
                return
            for event in watch_events(resp, where=self.path):
                if self._stopping.is_set():
                    return
                self._event(event)
                self._expired_after_list = False
                self._backoff.reset()
        except ApiError:
            if self._stopping.is_set():
                return
            raise
        finally:
            with self._lock:
                self._response = None
            resp.release_conn()

    def _event(self, event: Mapping[str, Any]) -> None:
        kind, raw = event.get("type"), event.get("object")
        if not isinstance(raw, dict):
            return
        rv = str(field(raw, "metadata", "resourceVersion") or "")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            try:
                self._sink.apply(str(kind), self._sink.convert(raw))
            except Exception as exc:  # an event the sink cannot use must not stall the watch
                self._skip(raw, exc)
        if rv:
            self._rv = rv

    def _skip(self, raw: Mapping[str, Any], exc: Exception) -> None:
        self._sink.drop(raw)
        skip_event(where=self.path, reason="unusable", why=f"{type(exc).__name__}: {exc}",
                   **self._sink.describe(raw),
                   resource_version=str(field(raw, "metadata", "resourceVersion") or ""))
