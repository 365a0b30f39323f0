"""The fake API server's storage: objects, one resourceVersion counter, events, watches.

Like etcd behind kube-apiserver, every successful write takes the next value of a
single global counter, and each write is appended to an event log that watches replay
from any resourceVersion not older than the last ``compact()``. Stored objects are
immutable once committed (a write builds a new dict), so readers and events share them
without copying, and each object's JSON is encoded once, at commit: a GET only joins
bytes. One lock guards the store; watchers get their events through their own queue so
a slow client never blocks a writer.

Write semantics follow the generic registry: preconditions on resourceVersion and uid,
``generateName``, ``metadata.generation`` bumped on spec changes, no-op updates that
write nothing, finalizers (a delete only sets ``deletionTimestamp``; removing the last
finalizer of such an object deletes it, and the DELETED event carries the previous state).
"""

from __future__ import annotations

import bisect
import datetime
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dra_framework.testing import _fakeapi_status as st
from dra_framework.testing import _fakeapi_strategy as strategy
from dra_framework.testing._fakeapi_json import clone, dumps
from dra_framework.testing._fakeapi_patch import apply_patch, patched_raw
from dra_framework.testing._fakeapi_rawjson import RawMap, scan_raw
from dra_framework.testing._fakeapi_resources import ResourceInfo, order_metadata, shape
from dra_framework.testing._fakeapi_validation import raw_equal, semantic_equal

JsonDict = dict[str, Any]
Key = tuple[str, str]
Predicate = Callable[[JsonDict], bool]
_HTML = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                       "\u2028": "\\u2028", "\u2029": "\\u2029"})
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
HISTORY = 10_000  # events kept per resource for watches to replay


def encode(obj: Any) -> bytes:
    """JSON as Go's encoder writes it: compact, UTF-8, HTML characters escaped."""
    return dumps(obj).translate(_HTML).encode()


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def typed(info: ResourceInfo, body: bytes, api_version: str) -> bytes:
    """Prefix an object's stored JSON with its kind and apiVersion."""
    head = f'{{"kind":"{info.kind}","apiVersion":"{api_version}",'.encode()
    return head + body[1:]


@dataclass(frozen=True)
class Entry:
    """One committed object version; ``obj`` has no kind/apiVersion and is never mutated."""

    obj: JsonDict
    body: bytes
    raw: RawMap

    @property
    def rv(self) -> str:
        return str(self.obj["metadata"].get("resourceVersion", ""))


@dataclass(frozen=True)
class Event:
    rv: int
    type: str
    entry: Entry
    old: Entry | None


@dataclass(eq=False)
class Watcher:
    """An open watch: its filter, and the encoded events waiting to be written."""

    info: ResourceInfo
    namespace: str | None
    predicate: Predicate
    bookmarks: bool
    api_version: str
    queue: deque[bytes] = field(default_factory=deque)
    cond: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False

    def line(self, kind: str, entry: Entry) -> bytes:
        return b'{"type":"' + kind.encode() + b'","object":' + typed(
            self.info, entry.body, self.api_version) + b"}\n"

    def push(self, data: bytes) -> None:
        with self.cond:
            self.queue.append(data)
            self.cond.notify()

    def offer(self, event: Event) -> None:
        if self.namespace is not None and event.entry.obj["metadata"].get(
                "namespace") != self.namespace:
            return
        now_in = self.predicate(event.entry.obj)
        was_in = event.old is not None and self.predicate(event.old.obj)
        kind, entry = event.type, event.entry
        if kind == "MODIFIED" and now_in != was_in:
            kind = "ADDED" if now_in else "DELETED"
            if not now_in and event.old is not None:
                # The watch cache sends the previous content at the event's version.
                meta = {**event.old.obj["metadata"], "resourceVersion": str(event.rv)}
                previous = {**event.old.obj, "metadata": meta}
                entry = Entry(previous, encode(previous), event.old.raw)
        elif not now_in:
            return
        self.push(self.line(kind, entry))

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()

    def next(self, timeout: float) -> bytes | None:
        with self.cond:
            if not self.queue and not self.closed:
                self.cond.wait(timeout)
            return self.queue.popleft() if self.queue else None


class Store:
    """All objects of one fake API server."""

    def __init__(self, gates: Mapping[str, bool]) -> None:
        self.gates = dict(gates)
        self.lock = threading.RLock()
        self.rv = 100
        self.compacted = 0
        self.objects: dict[str, dict[Key, Entry]] = {}
        self.events: dict[str, list[Event]] = {}
        self.floor: dict[str, int] = {}
        self.watchers: set[Watcher] = set()

    # -- reading --------------------------------------------------------------------
    def get(self, info: ResourceInfo, namespace: str, name: str) -> Entry:
        entry = self.objects.get(info.plural, {}).get((namespace, name))
        if entry is None:
            raise st.not_found(info.plural, info.group, name)
        return entry

    def list(self, info: ResourceInfo, namespace: str | None,
             predicate: Predicate) -> tuple[int, list[Entry]]:
        with self.lock:
            items = sorted(self.objects.get(info.plural, {}).items())
            rv = self.rv
        return rv, [e for (ns, _), e in items
                    if (namespace is None or ns == namespace) and predicate(e.obj)]

    # -- committing -----------------------------------------------------------------
    def _commit(self, info: ResourceInfo, kind: str, obj: JsonDict, raw: RawMap,
                old: Entry | None, *, dry_run: bool = False) -> Entry:
        if dry_run:
            return Entry(obj, encode(obj), raw)
        self.rv += 1
        obj["metadata"] = order_metadata({**obj["metadata"], "resourceVersion": str(self.rv)})
        entry = Entry(obj, encode(obj), raw)
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        table = self.objects.setdefault(info.plural, {})
        if kind == "DELETED":
            table.pop(key, None)
        else:
            table[key] = entry
        event = Event(self.rv, kind, entry, old)
        events = self.events.setdefault(info.plural, [])
        events.append(event)
        if len(events) > HISTORY:  # like the apiserver's bounded watch cache
            drop = len(events) - HISTORY + HISTORY // 10
            self.floor[info.plural] = events[drop - 1].rv
            del events[:drop]
        for watcher in list(self.watchers):
            if watcher.info is info:
                watcher.offer(event)
        return entry

    def seed(self, info: ResourceInfo, obj: JsonDict, raw_text: str | None) -> Entry:
        with self.lock:
            body = clone(obj)
            meta = body.setdefault("metadata", {})
            if not info.namespaced:
                meta.pop("namespace", None)
            elif not meta.get("namespace"):
                meta["namespace"] = "default"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now())
            if info.generation:
                meta.setdefault("generation", 1)
            shaped = shape(info, body)
            raw = strategy.select_raw(shaped, scan_raw(raw_text) if raw_text else {})
            key = (meta.get("namespace", ""), meta["name"])
            old = self.objects.get(info.plural, {}).get(key)
            return self._commit(info, "MODIFIED" if old else "ADDED", shaped, raw, old)

    # -- writing --------------------------------------------------------------------
    def create(self, info: ResourceInfo, namespace: str, body: JsonDict, raw_body: RawMap, *,
               dry_run: bool = False) -> Entry:
        meta = dict(body.get("metadata") or {})
        if info.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise st.bad_request("the namespace of the provided object does not match the "
                                     "namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        for key in ("uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                    "generation", "selfLink"):
            meta.pop(key, None)
        meta["creationTimestamp"] = now()
        if info.generation:
            meta["generation"] = 1
        obj = strategy.prepare_create(info, {**body, "metadata": meta}, self.gates)
        with self.lock:
            for _ in range(8):
                if meta.get("generateName") and not (body.get("metadata") or {}).get("name"):
                    suffix = "".join(random.choice(_NAME_CHARS) for _ in range(5))
                    obj["metadata"]["name"] = meta["generateName"][:58] + suffix
                shaped = shape(info, obj)
                raw = strategy.select_raw(shaped, raw_body)
                strategy.validate(info, shaped, None, raw, {}, status=False)
                name = shaped["metadata"]["name"]
                if (shaped["metadata"].get("namespace", ""), name) not in self.objects.get(
                        info.plural, {}):
                    break
                if not meta.get("generateName") or (body.get("metadata") or {}).get("name"):
                    raise st.already_exists(info.plural, info.group, name)
            else:
                raise st.already_exists(info.plural, info.group, name)
            shaped["metadata"]["uid"] = str(uuid.uuid4())
            return self._commit(info, "ADDED", shape(info, shaped), raw, None, dry_run=dry_run)

    def update(self, info: ResourceInfo, namespace: str, name: str, body: JsonDict,
               raw_body: RawMap, *, status: bool, dry_run: bool = False) -> Entry:
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, "", name):
            raise st.bad_request(f"the name of the object ({meta['name']}) does not match the "
                                 f"name on the URL ({name})")
        if info.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise st.bad_request("the namespace of the provided object does not match the "
                                 "namespace sent on the request")
        with self.lock:
            old = self.get(info, namespace, name)
            return self._update(info, old, body, raw_body, status=status, dry_run=dry_run)

    def patch(self, info: ResourceInfo, namespace: str, name: str, content_type: str,
              patch: Any, *, status: bool, dry_run: bool = False) -> Entry:
        with self.lock:
            old = self.get(info, namespace, name)
            doc = {"kind": info.kind, "apiVersion": info.group_version, **old.obj}
            result = apply_patch(content_type, clone(doc), patch)
            if not isinstance(result, dict):
                raise st.bad_request("the patch did not produce an object")
            result["metadata"] = dict(result.get("metadata") or {})
            for key in ("name", "namespace"):
                result["metadata"][key] = old.obj["metadata"].get(key)
            raw = patched_raw(content_type, patch, result, old.raw)
            return self._update(info, old, result, raw, status=status, dry_run=dry_run)

    def _update(self, info: ResourceInfo, old: Entry, body: JsonDict, raw_body: RawMap, *,
                status: bool, dry_run: bool) -> Entry:
        name = old.obj["metadata"]["name"]
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != old.rv:
            raise st.conflict(info.plural, info.group, name)
        obj = strategy.prepare_update(info, body, old.obj, status=status, gates=self.gates)
        meta = obj.setdefault("metadata", {})
        for key in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "generation"):
            meta.pop(key, None)
            if key in old.obj["metadata"]:
                meta[key] = old.obj["metadata"][key]
        if "managedFields" not in meta and "managedFields" in old.obj["metadata"]:
            meta["managedFields"] = old.obj["metadata"]["managedFields"]
        meta["resourceVersion"] = old.rv
        shaped = shape(info, obj)
        raw = strategy.select_raw(shaped, strategy.merge_raw(info, raw_body, old.raw,
                                                             status=status))
        strategy.validate(info, shaped, old.obj, raw, old.raw, status=status)
        spec_changed = not (semantic_equal(shaped.get("spec"), old.obj.get("spec"))
                            and raw_equal(raw, old.raw, ("spec",)))
        if info.generation and spec_changed:
            shaped["metadata"]["generation"] = int(old.obj["metadata"].get("generation", 0)) + 1
        if raw == old.raw and encode(shaped) == old.body:  # etcd compares the bytes too
            return old
        if shaped["metadata"].get("deletionTimestamp") and not shaped["metadata"].get("finalizers"):
            return self._commit(info, "DELETED", clone(old.obj), old.raw, old,
                                dry_run=dry_run)
        return self._commit(info, "MODIFIED", shaped, raw, old, dry_run=dry_run)

    def delete(self, info: ResourceInfo, namespace: str, name: str, options: JsonDict, *,
               dry_run: bool = False) -> tuple[Entry, bool]:
        with self.lock:
            old = self.get(info, namespace, name)
            pre = options.get("preconditions") or {}
            for key, field_name, mine in (("uid", "UID", old.obj["metadata"].get("uid")),
                                          ("resourceVersion", "ResourceVersion", old.rv)):
                wanted = pre.get(key)
                if wanted and wanted != mine:
                    raise st.conflict(info.plural, info.group, name,
                                      f"Precondition failed: {field_name} in precondition: "
                                      f"{wanted}, {field_name} in object meta: {mine}")
            meta = old.obj["metadata"]
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return old, False
                obj = clone(old.obj)
                obj["metadata"]["deletionTimestamp"] = now()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                return self._commit(info, "MODIFIED", shape(info, obj), old.raw, old,
                                    dry_run=dry_run), False
            return self._commit(info, "DELETED", clone(old.obj), old.raw, old,
                                dry_run=dry_run), True

    # -- watching -------------------------------------------------------------------
    def watch(self, info: ResourceInfo, namespace: str | None, predicate: Predicate,
              resource_version: str, *, bookmarks: bool, api_version: str,
              initial_events_end: bool = False) -> Watcher:
        """Register a watch and queue what it must replay (raises a 410 Status body)."""
        watcher = Watcher(info, namespace, predicate, bookmarks, api_version)
        with self.lock:
            if resource_version in ("", "0"):
                for (ns, _), entry in sorted(self.objects.get(info.plural, {}).items()):
                    if (namespace is None or ns == namespace) and predicate(entry.obj):
                        watcher.push(watcher.line("ADDED", entry))
                if initial_events_end and bookmarks:
                    watcher.push(self.bookmark_line(watcher, initial_events_end=True))
            else:
                since = int(resource_version)
                oldest = max(self.compacted, self.floor.get(info.plural, 0))
                if since < oldest:
                    raise st.ApiError(st.expired(
                        f"too old resource version: {since} ({oldest})"))
                events = self.events.get(info.plural, [])
                start = bisect.bisect_right([e.rv for e in events], since)
                for event in events[start:]:
                    watcher.offer(event)
            self.watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        with self.lock:
            self.watchers.discard(watcher)
        watcher.close()

    def bookmark_line(self, watcher: Watcher, *, initial_events_end: bool = False) -> bytes:
        meta: JsonDict = {"resourceVersion": str(self.rv)}
        if initial_events_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        body = encode({"metadata": meta, **watcher.info.zero})
        return b'{"type":"BOOKMARK","object":' + typed(watcher.info, body,
                                                        watcher.api_version) + b"}\n"

    def send_bookmarks(self) -> None:
        with self.lock:
            for watcher in list(self.watchers):
                if watcher.bookmarks:
                    watcher.push(self.bookmark_line(watcher))

    def compact(self) -> None:
        with self.lock:
            self.compacted = self.rv
            for plural in self.events:
                self.events[plural] = [e for e in self.events[plural] if e.rv > self.compacted]

    def close_watches(self) -> None:
        with self.lock:
            watchers, self.watchers = list(self.watchers), set()
        for watcher in watchers:
            watcher.close()
