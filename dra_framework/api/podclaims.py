"""The claims of the Pods bound to this node, read ahead of the kubelet: the default claim source.

Why Pods: claims cannot be selected by node, so a watch of claims (``claimcache``) brings
every node every claim change of the cluster.  Pods can (``fieldSelector=spec.nodeName=<node>``,
as the kubelet watches them), and a pod names its claims: ``spec.resourceClaims[]
.resourceClaimName`` directly, ``status.resourceClaimStatuses[].resourceClaimName`` for one made
from a template.  ``PodClaimCache`` watches this node's pods (``listwatch.ListWatch``) and, as
soon as a pod appears or changes, reads the claims it names, one GET each, in ``workers``
background threads.  The scheduler allocates and reserves a pod's claims before it binds the
pod, and the kubelet prepares after that: the claim is usually in memory before it is asked for.
The API server pays one watch of a few pods per node and one GET per claim, as for the upstream
helper's GET at prepare time, but off the prepare path (docs/claim-sources.md).

What is kept (the claim objects only; of a pod just its UID and the claims it names):

* a claim only while it is ``claimcache.relevant`` for one of the ``drivers`` and its
  ``status.reservedFor`` names a pod of this node that names the claim and is live (not
  ``Succeeded``/``Failed``, no ``deletionTimestamp``).  While a pod is reserved the claim's
  allocation cannot change (it is cleared only when ``reservedFor`` is empty, and a pod leaves
  ``reservedFor`` only for good), so a claim kept this way cannot hold a released allocation;
* a claim read before its allocation is there is not kept: it is read again when the pod
  changes, and when asked (live);
* the claims of a pod that is gone (deleted, finished, being deleted) are forgotten unless
  another live pod of the node names them;
* at most ``max_claims`` claims are followed; the others are read live when asked.

``get`` (through the per-driver view ``for_driver``, a ``ClaimSource``) answers from memory
when it holds the claim under the requested UID, allocated to that driver, reserved for a live
pod that names it; a claim whose background GET is under way is waited for (within the
caller's ``timeout``), one still queued is not; everything else is read live with ``timeout``
(the ``fallback``, ``ClaimReader`` by default), so an answer is never worse than a GET: a UID
mismatch reads live, and the caller's UID check sees what the API says now.

``forget`` (after an unprepare) drops the claim and remembers which pods it was reserved for:
a read that still shows only those pods (the API server or this watch lagging behind the
kubelet) is not kept, so a claim deallocated and allocated anew under the same UID is only
served once it is reserved for a new pod.

Every method may be called from any thread.  The kept objects are shared and read-only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import ClaimError, TransientApiError
from ..logs import claim_extra
from ..models import ClaimRef
from .apiversions import V1, ResourceApi
from .claimcache import Lookups, relevant
from .claimreader import ClaimReader
from .listwatch import Key, ListWatch, field, object_key, object_uid
from .rest import Backoff, KubeApi

if TYPE_CHECKING:
    from ..node.ports import ClaimSource

log = logging.getLogger(__name__)

PODS = "/api/v1/pods"
_MAX_NAME = 253


@attrs.frozen
class _Pod:
    uid: str
    claims: frozenset[Key]


@attrs.frozen
class _Held:
    """A kept claim, with what ``get`` checks worked out once."""

    obj: Mapping[str, Any]
    uid: str
    drivers: frozenset[str]  # the drivers it is relevant to on this node
    reserved: frozenset[str]  # the UIDs of the pods it is reserved for


def claim_names(pod: Mapping[str, Any]) -> list[str]:
    """The ResourceClaims ``pod`` uses, by name (in its namespace): the direct references of
    ``spec.resourceClaims`` and the claims made from templates in
    ``status.resourceClaimStatuses``.  Entries of the wrong shape are left out."""
    names: list[str] = []
    for path in (("spec", "resourceClaims"), ("status", "resourceClaimStatuses")):
        entries = field(pod, *path)
        for entry in entries if isinstance(entries, list) else ():
            name = field(entry, "resourceClaimName")
            if isinstance(name, str) and 0 < len(name) <= _MAX_NAME and name not in names:
                names.append(name)
    return names


def live(pod: Mapping[str, Any]) -> bool:
    """Whether ``pod`` may still be prepared for: not finished, not being deleted."""
    return (field(pod, "status", "phase") not in ("Succeeded", "Failed")
            and not field(pod, "metadata", "deletionTimestamp"))


def _reserved(claim: Mapping[str, Any]) -> frozenset[str]:
    """The UIDs of the pods in ``claim``'s ``status.reservedFor``."""
    entries = field(claim, "status", "reservedFor")
    if not isinstance(entries, list):
        return frozenset()
    return frozenset(str(e.get("uid")) for e in entries
                     if isinstance(e, Mapping) and e.get("resource") == "pods" and e.get("uid"))


class PodClaimCache:
    """The claims of this node's pods, read ahead; ``for_driver`` gives each preparer its
    ``ClaimSource``.

    ``backoff`` paces the pod watch's retries, ``read_backoff`` the retries of a claim read
    that failed for a reason that may pass (no answer, a server error); ``workers`` threads
    read claims, at most ``max_claims`` claims are followed.
    """

    def __init__(
        self,
        *,
        api: KubeApi,
        node_name: str,
        drivers: Sequence[str],
        resources: ResourceApi = V1,
        fallback: ClaimSource | None = None,
        watch_timeout: int = 300,
        backoff: Backoff | None = None,
        read_backoff: Backoff | None = None,
        workers: int = 4,
        max_claims: int = 4096,
    ) -> None:
        self.node_name = node_name
        self.drivers = tuple(drivers)
        self._api = api
        self._fallback: ClaimSource = fallback or ClaimReader(api=api, resources=resources)
        self._workers = workers
        self._max_claims = max_claims
        self._retry = read_backoff or Backoff(initial=0.2, maximum=10.0)
        self._lock = threading.Lock()
        self._pods: dict[Key, _Pod] = {}
        self._users: dict[Key, set[Key]] = {}  # claim → the live pods naming it
        self._claims: dict[Key, _Held] = {}
        self._forgotten: dict[Key, tuple[str, frozenset[str]]] = {}  # claim → (uid, pod uids)
        self._queue: queue.Queue[Key | None] = queue.Queue()
        self._queued: set[Key] = set()
        self._reading: dict[Key, threading.Event] = {}
        self._threads: list[threading.Thread] = []
        self._views: dict[str, PodClaims] = {}
        self.reads = 0
        """Claims read in the background and done with (one GET each, failed ones included)."""
        self._watch = ListWatch(api=api, path=PODS, sink=self, name=f"pod-claims-{node_name}",
                                field_selector=f"spec.nodeName={node_name}",
                                watch_timeout=watch_timeout, backoff=backoff,
                                log_extra={"node": node_name})

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> PodClaimCache:
        """Start the pod watch and the claim readers (idempotent); returns ``self``."""
        if not self._threads:
            self._threads = [threading.Thread(target=self._read_claims, daemon=True,
                                              name=f"pod-claims-read-{i}")
                             for i in range(self._workers)]
            for thread in self._threads:
                thread.start()
        self._watch.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the watch and the readers (a read in progress ends at its own timeout)."""
        self._watch.stop(timeout)
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait until the first list of pods is in; False if ``timeout`` passed first."""
        return self._watch.wait_synced(timeout)

    @property
    def synced(self) -> bool:
        return self._watch.synced

    @property
    def resource_version(self) -> str:
        """The last resourceVersion of the pod watch."""
        return self._watch.resource_version

    @property
    def lists(self) -> int:
        """Successful pod lists (the first one and every re-list)."""
        return self._watch.lists

    # -- reading ----------------------------------------------------------------------------

    def for_driver(self, driver: str) -> PodClaims:
        """The ``ClaimSource`` of ``driver``'s preparer."""
        if driver not in self.drivers:
            raise ValueError(f"{driver!r} is not one of this cache's drivers {self.drivers}")
        view = self._views.get(driver)
        if view is None:
            view = self._views[driver] = PodClaims(self, driver)
        return view

    @property
    def hits(self) -> int:
        """Reads answered from memory, all drivers."""
        return sum(v.lookups.hits for v in self._views.values())

    @property
    def misses(self) -> int:
        """Reads that went to the API, all drivers (``uid_mismatches`` included)."""
        return sum(v.lookups.misses for v in self._views.values())

    @property
    def uid_mismatches(self) -> int:
        return sum(v.lookups.uid_mismatches for v in self._views.values())

    def holds(self, claim: ClaimRef) -> bool:
        """Whether ``get(claim)`` would answer from memory now, for a driver the claim is
        allocated to (no API call, no counting)."""
        key = (claim.namespace, claim.name)
        with self._lock:
            held = self._claims.get(key)
            return held is not None and held.uid == claim.uid and self._servable(key, held)

    def cached(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The kept object of ``namespace/name``, or None (no API call, no counting)."""
        with self._lock:
            held = self._claims.get((namespace, name))
        return None if held is None else held.obj

    def __len__(self) -> int:
        with self._lock:
            return len(self._claims)

    def lookup(self, claim: ClaimRef, *, driver: str, lookups: Lookups,
               ) -> Mapping[str, Any] | None:
        """``PodClaims.lookup`` of ``driver``: the kept claim if ``get`` would answer it from
        memory now (counted as a hit), else None."""
        key = (claim.namespace, claim.name)
        with self._lock:
            held = self._claims.get(key)
            if held is not None and held.uid == claim.uid and driver in held.drivers \
                    and self._servable(key, held):
                lookups.hit()
                return held.obj
        return None

    def get(self, claim: ClaimRef, *, driver: str, lookups: Lookups,
            timeout: float | None = None) -> Mapping[str, Any]:
        """``PodClaims.get`` of ``driver``: see the module docstring."""
        key = (claim.namespace, claim.name)
        deadline = time.monotonic() + (self._api.timeout if timeout is None else timeout)
        for attempt in (1, 2):
            with self._lock:
                held = self._claims.get(key)
                reading = self._reading.get(key)
                if held is not None and held.uid == claim.uid and driver in held.drivers \
                        and self._servable(key, held):
                    lookups.hit()
                    return held.obj
            if attempt == 2 or reading is None or not reading.wait(deadline - time.monotonic()):
                break
        lookups.miss(uid_mismatch=held is not None and held.uid != claim.uid)
        log.debug("claim not in memory, reading it from the API",
                  extra=claim_extra(claim, driver=driver))
        return self._fallback.get(claim, timeout=max(deadline - time.monotonic(), 0.001))

    def forget(self, claim: ClaimRef) -> None:
        """Drop ``claim`` and keep no read of it that is reserved only for the pods it is
        reserved for now (call it when the claim is unprepared)."""
        key = (claim.namespace, claim.name)
        with self._lock:
            held = self._claims.pop(key, None)
            pods = {self._pods[p].uid for p in self._users.get(key, ())}
            if held is not None and held.uid == claim.uid:
                pods |= held.reserved
            before = self._forgotten.get(key)
            if before is not None and before[0] == claim.uid:
                pods |= before[1]
            if key in self._users:
                self._forgotten[key] = (claim.uid, frozenset(pods))

    def _servable(self, key: Key, held: _Held) -> bool:
        """Reserved for a live pod of this node that names it (and that ``forget`` did not
        see).  Called with the lock held."""
        forgotten = self._forgotten.get(key)
        gone = forgotten[1] if forgotten is not None and forgotten[0] == held.uid else ()
        return any((uid := self._pods[p].uid) in held.reserved and uid not in gone
                   for p in self._users.get(key, ()))

    # -- what the pod watch feeds (listwatch.Sink) ------------------------------------------

    def convert(self, raw: dict[str, Any]) -> Mapping[str, Any]:
        if not isinstance(raw.get("metadata"), Mapping) or not object_key(raw)[1]:
            raise ValueError("a pod without metadata.name")
        return raw

    def replace(self, objects: Sequence[Mapping[str, Any]]) -> None:
        with self._lock:
            self._pods, self._users = {}, {}
            wanted = [c for obj in objects for c in self._track(object_key(obj), obj)]
            self._prune()
        self._enqueue(wanted)

    def apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        key = object_key(obj)
        with self._lock:
            named = self._untrack(key)
            wanted = self._track(key, obj) if kind != "DELETED" else []
            self._prune(named)
        self._enqueue(wanted)

    def drop(self, raw: Mapping[str, Any]) -> None:
        with self._lock:
            self._prune(self._untrack(object_key(raw)))

    def describe(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        namespace, name = object_key(raw)
        return {"pod_namespace": namespace[:256], "pod_name": name[:256],
                "pod_uid": object_uid(raw)[:256]}

    # -- bookkeeping (lock held) ------------------------------------------------------------

    def _track(self, key: Key, pod: Mapping[str, Any]) -> list[Key]:
        """Record ``pod`` if it is live on this node; the claims it names that cannot be
        served now (to read)."""
        if field(pod, "spec", "nodeName") != self.node_name or not live(pod):
            return []
        claims, over = [], 0
        for name in claim_names(pod):
            claim = (key[0], name)
            if claim not in self._users and len(self._users) >= self._max_claims:
                over += 1
                continue
            self._users.setdefault(claim, set()).add(key)
            claims.append(claim)
        if over:
            log.warning(f"too many claims on this node to read {over} of this pod's ahead; "
                        "they are read when asked", extra={**self.describe(pod),
                                                          "max_claims": self._max_claims})
        self._pods[key] = _Pod(uid=object_uid(pod), claims=frozenset(claims))
        return [c for c in claims if c not in self._claims
                or not self._servable(c, self._claims[c])]

    def _untrack(self, key: Key) -> frozenset[Key]:
        """Stop tracking the pod; the claims it named (the only ones that can lose users)."""
        pod = self._pods.pop(key, None)
        for claim in pod.claims if pod is not None else ():
            users = self._users.get(claim)
            if users is not None:
                users.discard(key)
                if not users:
                    del self._users[claim]
        return pod.claims if pod is not None else frozenset()

    def _prune(self, claims: Iterable[Key] | None = None) -> None:
        """Forget what no live pod of this node names any more: among ``claims`` (those a
        changed pod named), or everywhere (after a list)."""
        for store in (self._claims, self._forgotten):
            candidates = list(store) if claims is None else [c for c in claims if c in store]
            for claim in candidates:
                if claim not in self._users:
                    del store[claim]

    # -- background reads -------------------------------------------------------------------

    def _enqueue(self, claims: list[Key]) -> None:
        with self._lock:
            fresh = [c for c in claims if c not in self._queued]
            self._queued.update(fresh)
        for claim in fresh:
            self._queue.put(claim)

    def _read_claims(self) -> None:
        while (key := self._queue.get()) is not None:
            with self._lock:
                self._queued.discard(key)
                wanted = key in self._users
                # ``get`` waits for a read in progress, never for one still queued
                reading = self._reading.setdefault(key, threading.Event()) if wanted else None
            again = False
            try:
                if wanted:
                    again = self._read(key)
            except Exception:  # a reader thread must not die
                log.exception("reading a claim ahead failed",
                              extra={"claim_namespace": key[0], "claim_name": key[1]})
            finally:
                if reading is not None:
                    with self._lock:
                        self.reads += 1
                        if self._reading.get(key) is reading:
                            del self._reading[key]
                    reading.set()
            if again and not self._watch.stopping.wait(self._retry.next()):
                with self._lock:
                    again = key in self._users and key not in self._claims
                if again:
                    self._enqueue([key])

    def _read(self, key: Key) -> bool:
        """Read one claim and keep it if the rules allow; True: failed, try again later."""
        claim = ClaimRef(namespace=key[0], name=key[1], uid="")
        try:
            obj = self._fallback.get(claim, timeout=self._api.timeout)
        except TransientApiError as exc:
            log.info(f"reading a claim ahead failed, retrying: {exc}",
                     extra=claim_extra(claim, node=self.node_name))
            return True
        except ClaimError as exc:  # not there (yet): read when asked, or when the pod changes
            log.debug(f"claim not read ahead: {exc}", extra=claim_extra(claim))
            return False
        self._retry.reset()
        held = _Held(obj=obj, uid=object_uid(obj), reserved=_reserved(obj), drivers=frozenset(
            d for d in self.drivers if relevant(obj, driver=d, node_name=self.node_name)))
        with self._lock:
            if key in self._users and held.drivers and self._servable(key, held):
                self._claims[key] = held
        return False


class PodClaims:
    """One driver's ``ClaimSource`` over a ``PodClaimCache``."""

    def __init__(self, cache: PodClaimCache, driver: str) -> None:
        self.cache = cache
        self.driver = driver
        self.lookups = Lookups(driver)

    def lookup(self, claim: ClaimRef) -> Mapping[str, Any] | None:
        return self.cache.lookup(claim, driver=self.driver, lookups=self.lookups)

    def get(self, claim: ClaimRef, *, timeout: float | None = None) -> Mapping[str, Any]:
        """The claim: from memory when kept for ``claim.uid`` and this driver, else read live
        within ``timeout`` (see ``ClaimSource.get``)."""
        return self.cache.get(claim, driver=self.driver, lookups=self.lookups, timeout=timeout)

    def forget(self, claim: ClaimRef) -> None:
        self.cache.forget(claim)
