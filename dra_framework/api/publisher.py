"""Publishing a driver's ResourceSlices and keeping them published.

``SlicePublisher`` owns the slices of one driver for one set of pools: the node-local pool
of ``serve`` (``node_name`` set; slices listed by ``spec.driver`` and ``spec.nodeName``) or
the cluster pools of the controller (``node_name=None``; slices without ``nodeName`` of the
pools it publishes now or did earlier in this process).  A reconcile is level-based: list
the slices, build and validate the desired ones (an invalid pool is logged with device and
field and left as it is; the other pools are still published), diff them semantically
(``slices.diff_pool``) and write only the difference, in the Go helper's order: delete,
update, create.  A server with a feature gate off drops fields (taints, counters); the
publisher sees that in the object a write returns, warns once and from then on ignores
those fields when it compares, so it never updates in a loop.

``start()`` runs two daemon threads.  The worker reconciles at once, on ``trigger()`` (wire
the backend's ``inventory_changed`` to it) and every ``resync_interval``; failures are
retried with ``rest.Backoff`` capped at the interval, and a refusal by the server (422 and
other 4xx) is logged with the server's message as is and tried again only at the next
resync or trigger.  The watcher watches the same slices (with bookmarks) and triggers a
reconcile when someone else changes or deletes one (the kubelet wipes a node's slices when
it starts); after 410 Gone or a broken stream it lists again and reconciles, as events may
have been missed.  ``stop()`` ends both threads and leaves the slices published.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from prometheus_client import Counter, Gauge

from ..models import Pool
from .apiversions import ResourceApi
from .rest import ApiError, Backoff, KubeApi, with_retries
from .rest import path as rest_path
from .slices import (
    FieldPath,
    NodePool,
    PoolSlices,
    cluster_pool_slices,
    diff_pool,
    dropped_fields,
    node_pool_slices,
    show_path,
    update_object,
)
from .slicevalidation import pool_problems

log = logging.getLogger(__name__)

SLICE_WRITES = Counter("dra_framework_slice_writes_total",
                       "ResourceSlice writes made by the slice publisher, by verb.",
                       ["driver", "verb"])
PUBLISH_ERRORS = Counter("dra_framework_publish_errors_total",
                         "Slice publishing problems, by kind (invalid, rejected, conflict, "
                         "unreachable, server, dropped_fields, backend).", ["driver", "kind"])
PUBLISHED_SLICES = Gauge("dra_framework_published_slices",
                         "Slices of the driver's pools after the last reconcile.", ["driver"])

DesiredPools = NodePool | Sequence[Pool]
_MAX_PASSES = 5


@attrs.define
class PublishResult:
    """What one reconcile did: writes by verb, pools refused by validation, and the
    messages of writes the API server refused."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    invalid_pools: list[str] = attrs.Factory(list)
    errors: list[str] = attrs.Factory(list)

    @property
    def writes(self) -> int:
        return self.created + self.updated + self.deleted

    @property
    def ok(self) -> bool:
        return not self.invalid_pools and not self.errors


class _WriteFailed(Exception):
    """A write failed: ``conflict`` (re-read and try again) or refused (give up the pool)."""

    def __init__(self, error: ApiError, *, conflict: bool) -> None:
        super().__init__(str(error))
        self.error, self.conflict = error, conflict


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj.get("metadata") or {})


def _spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj.get("spec") or {})


class SlicePublisher:
    """Keeps the ResourceSlices of one driver's pools equal to what ``pools()`` returns.

    ``pools`` returns a ``NodePool`` when ``node_name`` is set (e.g. ``lambda:
    NodePool(backend.inventory(), backend.counter_sets())``), else the cluster pools
    (``backend.cluster_pools``).  ``clock`` schedules resyncs; ``sleep`` waits between
    retries of one API call (default: a wait that ``stop()`` interrupts).
    """

    def __init__(self, *, api: KubeApi, resource_api: ResourceApi, driver: str,
                 node_name: str | None, pools: Callable[[], DesiredPools],
                 resync_interval: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None, watch_timeout: int = 300,
                 retry_initial: float = 0.2) -> None:
        self.driver = driver
        self.node_name = node_name
        self.resync_interval = resync_interval
        self._api, self._resource_api, self._pools = api, resource_api, pools
        self._clock = clock
        self._sleep = sleep or self._pause
        self._watch_timeout = watch_timeout
        self._retry_initial = retry_initial
        self._lock = threading.Lock()  # one reconcile at a time
        self._own_lock = threading.Lock()
        self._own_rv: dict[str, str] = {}
        self._own_deletes: set[str] = set()
        self._node_uid: str | None = None
        self._known_pools: set[str] = set()
        self._owned: frozenset[str] = frozenset()
        self._dropped: frozenset[FieldPath] = frozenset()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._watching = threading.Event()
        self._threads: list[threading.Thread] = []
        selector = f"spec.driver={driver}"
        self._selector = selector + (f",spec.nodeName={node_name}" if node_name else "")
        self._path = resource_api.path("resourceslices")

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Reconcile now and keep reconciling (worker and watch threads, both daemons)."""
        if self._threads:
            return
        # A fresh event per start: a watch thread of an earlier start may still be blocked.
        self._stopping = stopping = threading.Event()
        # The worker starts once the watcher has listed, so that no change goes unseen.
        self._watching = watching = threading.Event()
        self._wake.set()
        for target, role in ((self._run, "worker"), (self._watch_loop, "watch")):
            thread = threading.Thread(target=target, args=(stopping, watching), daemon=True,
                                      name=f"slices-{role}-{self.driver}")
            thread.start()
            self._threads.append(thread)

    def stop(self, *, timeout: float = 5.0) -> None:
        """End the threads; the slices stay published (the kubelet cleans up if needed).

        A watch blocked on a quiet connection ends at its next event or server timeout;
        its thread is a daemon and does nothing after ``stop()``.
        """
        self._stopping.set()
        self._watching.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=timeout if thread.name.startswith("slices-worker") else 0.5)
        self._threads.clear()

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return any(t.is_alive() and "worker" in t.name for t in self._threads)

    def trigger(self) -> None:
        """Ask for a reconcile as soon as possible (thread-safe; calls are coalesced)."""
        self._wake.set()

    # -- one reconcile ------------------------------------------------------------------
    def reconcile_once(self) -> PublishResult:
        """List, compare and write once (re-reading after conflicts).

        Invalid pools and writes the server refused are in the result, not raised.  Raises
        ``ApiError`` when the API cannot be used (after a few quick retries), ``RuntimeError``
        when ``pools()`` fails and ``TypeError`` when it returns the wrong kind of value.
        """
        with self._lock:
            result = PublishResult()
            for attempt in range(1, _MAX_PASSES + 1):
                try:
                    self._pass(result)
                    break
                except _WriteFailed as exc:  # only conflicts get here
                    PUBLISH_ERRORS.labels(self.driver, "conflict").inc()
                    log.info(f"ResourceSlice changed by someone else, re-reading: {exc}",
                             extra={"driver": self.driver, "attempt": attempt})
                    if attempt == _MAX_PASSES:
                        raise exc.error from exc
            if result.writes:
                log.info(f"published ResourceSlices: {result.created} created, "
                         f"{result.updated} updated, {result.deleted} deleted",
                         extra={"driver": self.driver})
            return result

    def _call(self, fn: Callable[[], dict[str, Any]], what: str) -> dict[str, Any]:
        return with_retries(fn, what=what, attempts=3, sleep=self._sleep,
                            backoff=Backoff(initial=self._retry_initial))

    def _desired(self) -> list[PoolSlices | tuple[str, list[str]]]:
        """Each pool's slices, or (pool name, problems) when they cannot be built."""
        try:
            wanted = self._pools()
        except Exception as exc:
            PUBLISH_ERRORS.labels(self.driver, "backend").inc()
            raise RuntimeError(f"the backend failed to list its devices: {exc}") from exc
        if isinstance(wanted, NodePool) != (self.node_name is not None):
            raise TypeError(f"pools() returned a {type(wanted).__name__}: a node-local "
                            "publisher needs a NodePool, a cluster publisher Pools")
        out: list[PoolSlices | tuple[str, list[str]]] = []
        for pool in [wanted] if isinstance(wanted, NodePool) else wanted:
            name = (self.node_name or "") if isinstance(pool, NodePool) else pool.name
            try:
                if any((o.name if isinstance(o, PoolSlices) else o[0]) == name for o in out):
                    raise ValueError(f'pool "{name}": Duplicate value: the pool is listed twice')
                out.append(node_pool_slices(driver=self.driver, node_name=name,
                                            node_uid=self._get_node_uid(), pool=pool)
                           if isinstance(pool, NodePool) else
                           cluster_pool_slices(driver=self.driver, pool=pool))
            except (TypeError, ValueError) as exc:
                out.append((name, [str(exc)]))
        return out

    def _get_node_uid(self) -> str:
        """The uid of this node's Node object (read once)."""
        if self._node_uid is None:
            node = self._call(lambda: self._api.get(rest_path(
                group_version="v1", resource="nodes", name=self.node_name)), "get Node")
            self._node_uid = str(_meta(node).get("uid") or "")
        return self._node_uid

    def _list(self) -> list[dict[str, Any]]:
        data = self._resource_api.to_v1(self._call(
            lambda: self._api.list(self._path, field_selector=self._selector),
            "list ResourceSlices"))
        items: list[dict[str, Any]] = list(data.get("items") or [])
        return sorted(items, key=lambda o: str(_meta(o).get("name")))

    def _pass(self, done: PublishResult) -> None:
        desired = self._desired()
        names = {d.name if isinstance(d, PoolSlices) else d[0] for d in desired}
        owned = names | self._known_pools
        self._owned = frozenset(owned)
        existing: dict[str, list[dict[str, Any]]] = {}
        for obj in self._list():
            spec = _spec(obj)
            pool = str((spec.get("pool") or {}).get("name") or "")
            if self.node_name is None and (spec.get("nodeName") or pool not in owned):
                continue
            existing.setdefault(pool, []).append(obj)
        for pool in sorted(set(existing) - names):
            log.info(f'deleting the slices of pool "{pool}", which is no longer published',
                     extra={"driver": self.driver, "pool": pool})
            for obj in existing[pool]:
                self._delete(obj, done)
            self._known_pools.discard(pool)
        published = 0
        for plan in desired:
            if not isinstance(plan, PoolSlices):
                self._report_invalid(plan[0], plan[1], done)
                continue
            problems = pool_problems(plan.objects(generation=0))
            if problems:
                self._report_invalid(plan.name, problems, done)
                continue
            self._known_pools.add(plan.name)
            try:
                self._sync_pool(plan, existing.get(plan.name, []), done)
                published += len(plan.contents)
            except _WriteFailed as exc:
                if exc.conflict:
                    raise
                PUBLISH_ERRORS.labels(self.driver, "rejected").inc()
                log.error(f"the API server refused a ResourceSlice of pool \"{plan.name}\": "
                          f"{exc.error.message}",
                          extra={"driver": self.driver, "pool": plan.name,
                                 "code": exc.error.code})
                done.errors.append(exc.error.message)
        PUBLISHED_SLICES.labels(self.driver).set(published)

    def _report_invalid(self, pool: str, problems: list[str], done: PublishResult) -> None:
        PUBLISH_ERRORS.labels(self.driver, "invalid").inc()
        log.error(f'not publishing pool "{pool}": ' + "; ".join(problems),
                  extra={"driver": self.driver, "pool": pool})
        done.invalid_pools.append(pool)

    # -- one pool -----------------------------------------------------------------------
    def _sync_pool(self, plan: PoolSlices, existing: list[dict[str, Any]], done: PublishResult
                   ) -> None:
        changes = diff_pool(plan, existing, ignore=self._dropped)
        if changes.writes:
            log.info(f'pool "{plan.name}" ({len(plan.contents)} slices): generation '
                     f"{changes.generation}, {len(changes.delete)} to delete, "
                     f"{len(changes.update)} to update, {len(changes.create)} to create",
                     extra={"driver": self.driver, "pool": plan.name})
        for j in changes.delete:
            self._delete(existing[j], done)
        for i, j in changes.update:
            self._put(plan, update_object(plan, index=i, generation=changes.generation,
                                          stored=existing[j]))
            done.updated += 1
        for i in changes.create:
            self._put(plan, plan.object(index=i, generation=changes.generation))
            done.created += 1

    # -- writes -------------------------------------------------------------------------
    def _write(self, verb: str, fn: Callable[[], dict[str, Any]], name: str) -> dict[str, Any]:
        try:
            result = self._call(fn, f"{verb} ResourceSlice {name}")
        except ApiError as exc:
            if exc.code == 404 and verb == "delete":
                return {}
            if exc.code == 409 or exc.code == 404 or not exc.transient:
                raise _WriteFailed(exc, conflict=exc.code in (404, 409)) from exc
            raise
        SLICE_WRITES.labels(self.driver, verb).inc()
        return result

    def _delete(self, obj: Mapping[str, Any], done: PublishResult) -> None:
        name = str(_meta(obj).get("name"))
        with self._own_lock:
            self._own_deletes.add(name)
            self._own_rv.pop(name, None)
        self._write("delete", lambda: self._api.delete(
            self._resource_api.path("resourceslices", name=name),
            precondition_uid=_meta(obj).get("uid")), name)
        done.deleted += 1

    def _put(self, plan: PoolSlices, body: dict[str, Any]) -> None:
        """Create (no name yet) or update one slice, then look at what the server kept."""
        wire = self._resource_api.from_v1(body)
        name = str(body["metadata"].get("name") or "")
        if name:
            answer = self._write("update", lambda: self._api.replace(
                self._resource_api.path("resourceslices", name=name), wire), name)
        else:
            answer = self._write("create", lambda: self._api.create(self._path, wire),
                                 body["metadata"]["generateName"])
        stored = self._resource_api.to_v1(answer)
        sent = body["spec"]
        meta = _meta(stored)
        with self._own_lock:
            self._own_rv[str(meta.get("name"))] = str(meta.get("resourceVersion"))
        lost = dropped_fields(sent=sent, stored=_spec(stored)) - self._dropped
        if lost:
            self._dropped |= lost
            PUBLISH_ERRORS.labels(self.driver, "dropped_fields").inc()
            log.warning("the API server dropped fields of a ResourceSlice, probably because a "
                        "feature gate is off; they are not published: "
                        + ", ".join(sorted(show_path(p) for p in lost)),
                        extra={"driver": self.driver, "pool": plan.name})

    # -- threads ------------------------------------------------------------------------
    def _run(self, stopping: threading.Event, watching: threading.Event) -> None:
        backoff = Backoff(initial=self._retry_initial,
                          maximum=max(self.resync_interval, self._retry_initial))
        watching.wait(timeout=10)
        due = self._clock()
        while not stopping.is_set():
            wait = due - self._clock()
            if wait > 0:
                self._wake.wait(wait)
            if stopping.is_set():
                return
            self._wake.clear()
            try:
                result = self.reconcile_once()
            except ApiError as exc:
                kind = {0: "unreachable", 409: "conflict"}.get(exc.code)
                PUBLISH_ERRORS.labels(self.driver, kind or (
                    "server" if exc.transient else "rejected")).inc()
                retry = exc.transient or exc.code == 409
                delay = backoff.next() if retry else self.resync_interval
                log.warning(f"publishing ResourceSlices failed, retrying in {delay:.1f}s: {exc}",
                            extra={"driver": self.driver, "code": exc.code})
            except Exception as exc:
                delay = backoff.next()
                log.error(f"publishing ResourceSlices failed, retrying in {delay:.1f}s: {exc}",
                          exc_info=not isinstance(exc, RuntimeError | TypeError),
                          extra={"driver": self.driver})
            else:
                backoff.reset()
                delay = self.resync_interval
                if not result.ok:
                    log.debug("some pools were not published; retrying at the next resync",
                              extra={"driver": self.driver})
            due = self._clock() + delay

    def _foreign(self, kind: str, obj: Mapping[str, Any]) -> bool:
        """Whether a watch event is a change that this publisher did not make."""
        meta, spec = _meta(obj), _spec(obj)
        if self.node_name is None and (spec.get("nodeName") or (
                spec.get("pool") or {}).get("name") not in self._owned):
            return False
        name = str(meta.get("name"))
        with self._own_lock:
            if kind == "DELETED":
                if name in self._own_deletes:
                    self._own_deletes.discard(name)
                    return False
                self._own_rv.pop(name, None)
                return True
            return self._own_rv.get(name) != str(meta.get("resourceVersion"))

    def _watch_loop(self, stopping: threading.Event, watching: threading.Event) -> None:
        backoff = Backoff(initial=self._retry_initial, maximum=max(self.resync_interval, 1.0))
        version, relist = "", False
        while not stopping.is_set():
            try:
                if not version:
                    listed = self._api.list(self._path, field_selector=self._selector)
                    version = str(_meta(listed).get("resourceVersion") or "")
                    if relist:  # events may have been missed
                        self.trigger()
                    relist = True
                    watching.set()
                for event in self._api.watch(self._path, resource_version=version,
                                             field_selector=self._selector,
                                             timeout_seconds=self._watch_timeout):
                    if stopping.is_set():
                        return
                    obj = self._resource_api.to_v1(event.get("object") or {})
                    version = str(_meta(obj).get("resourceVersion") or version)
                    kind = str(event.get("type"))
                    if kind != "BOOKMARK" and self._foreign(kind, obj):
                        log.info(f"ResourceSlice {_meta(obj).get('name')} {kind.lower()} by "
                                 "someone else; reconciling", extra={"driver": self.driver})
                        self.trigger()
                backoff.reset()
            except ApiError as exc:
                if stopping.is_set():
                    return
                watching.set()
                version, relist = "", True  # 410 Gone or a broken stream: list, reconcile
                if exc.code != 410:
                    delay = backoff.next()
                    log.debug(f"watching ResourceSlices failed, again in {delay:.1f}s: {exc}",
                              extra={"driver": self.driver, "code": exc.code})
                    stopping.wait(delay)
            except Exception:
                log.exception("watching ResourceSlices failed", extra={"driver": self.driver})
                watching.set()
                version, relist = "", True
                stopping.wait(backoff.next())
