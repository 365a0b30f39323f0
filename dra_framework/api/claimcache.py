"""A watch cache of the ResourceClaims allocated to one driver on this node.

``ClaimCache`` is a ``ClaimSource`` (see ``dra_framework.node.prepare``): a prepare that finds its
claim here costs no API call.  It lists and then watches ResourceClaims of all namespaces
(``/apis/resource.k8s.io/<version>/resourceclaims`` with ``allowWatchBookmarks``) in one
background thread, and keeps a claim only while it is *relevant* (``relevant``):

* its ``status.allocation.devices.results`` has at least one result with ``driver`` equal to
  this driver, and
* its ``status.allocation.nodeSelector`` is absent, or one of its terms names this node through
  ``matchFields`` ``metadata.name`` (``In`` listing the node, or ``NotIn`` not listing it; a term
  with label expressions is not evaluated and does not count).

The rule only decides what is worth memory; it never makes an answer wrong, because
everything else falls back to a live read (the default fallback is ``ClaimReader``):

* a claim not in the cache, or cached under another UID, is read live, so the caller's UID
  check ("got replaced") sees what the API says now;
* after ``forget`` (call it when a claim is unprepared) the cache does not answer for that UID
  again until it has seen the claim deallocated or deleted.  An allocation the cache holds for
  a UID is then never one that was already released: a claim that is deallocated and allocated
  anew under the same UID is only served once the watch has delivered the new allocation.

The list and the watch are ``listwatch.ListWatch``'s (410 Gone, reconnects with backoff,
bookmarks, objects that cannot be used skipped); deleted claims leave the cache, and any claim
of any driver is decoded whatever its opaque parameters hold (``jsondecode``).  A claim the
cache fails to convert is dropped from it, so that reads of it go to the API.

This cache watches every claim of the cluster from every node: the API server sends each node
every claim change, and the node's service account may read every namespace's claims.
``podclaims`` (the default claim source) scales instead; this one is ``--claim-source
cluster``, for small clusters (see docs/claim-sources.md).

``get``, ``forget`` and ``cached`` may be called from any thread.  The cached objects are
shared and read-only: callers must not modify what ``get`` returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from ..logs import claim_extra
from ..models import ClaimRef
from .apiversions import V1, ResourceApi
from .claimreader import ClaimReader
from .listwatch import Key, ListWatch, field, object_key, object_uid
from .rest import Backoff, KubeApi

if TYPE_CHECKING:
    from ..node.ports import ClaimSource

log = logging.getLogger(__name__)

CACHE_LOOKUPS = Counter(
    "dra_framework_claim_cache_total",
    "Claim reads of the prepare path, by result: hit (answered from the watch cache), "
    "miss (not cached: live read) or uid_mismatch (cached under another UID: live read).",
    ["driver", "result"],
)



class Lookups:
    """The reads of a claim source by result, counted and exported (``CACHE_LOOKUPS``)."""

    def __init__(self, driver: str) -> None:
        self._hit = CACHE_LOOKUPS.labels(driver, "hit")
        self._miss = CACHE_LOOKUPS.labels(driver, "miss")
        self._mismatch = CACHE_LOOKUPS.labels(driver, "uid_mismatch")
        self.hits = 0
        """Reads answered from memory."""
        self.misses = 0
        """Reads that went to the API (``uid_mismatches`` included)."""
        self.uid_mismatches = 0
        """Reads of a claim held under another UID."""

    def hit(self) -> None:
        self.hits += 1
        self._hit.inc()

    def miss(self, *, uid_mismatch: bool = False) -> None:
        self.misses += 1
        if uid_mismatch:
            self.uid_mismatches += 1
            self._mismatch.inc()
        else:
            self._miss.inc()


def _term_names_node(term: Any, node_name: str) -> bool:
    fields = field(term, "matchFields")
    if not isinstance(fields, list) or not fields or field(term, "matchExpressions"):
        return False
    for req in fields:
        if not isinstance(req, Mapping) or req.get("key") != "metadata.name":
            return False
        values = req.get("values") or []
        if req.get("operator") == "In" and node_name in values:
            continue
        if req.get("operator") == "NotIn" and node_name not in values:
            continue
        return False
    return True


def relevant(obj: Mapping[str, Any], *, driver: str, node_name: str) -> bool:
    """Whether ``obj`` is a claim allocated to ``driver`` on ``node_name`` (the module rule)."""
    allocation = field(obj, "status", "allocation")
    if not isinstance(allocation, Mapping):
        return False
    results = field(allocation, "devices", "results")
    if not isinstance(results, list) or not any(
            isinstance(r, Mapping) and r.get("driver") == driver for r in results):
        return False
    selector = allocation.get("nodeSelector")
    if selector is None:
        return True
    terms = field(selector, "nodeSelectorTerms")
    return isinstance(terms, list) and any(_term_names_node(t, node_name) for t in terms)


class ClaimCache:
    """List+watch cache of this driver's claims on this node; a ``ClaimSource``."""

    def __init__(
        self,
        *,
        api: KubeApi,
        driver: str,
        node_name: str,
        resources: ResourceApi = V1,
        fallback: ClaimSource | None = None,
        watch_timeout: int = 300,
        backoff: Backoff | None = None,
    ) -> None:
        self.driver = driver
        self.node_name = node_name
        self._resources = resources
        self._fallback: ClaimSource = fallback or ClaimReader(api=api, resources=resources)
        self._lock = threading.Lock()
        self._claims: dict[Key, Mapping[str, Any]] = {}
        self._forgotten: set[str] = set()
        self._lookups = Lookups(driver)
        self._watch = ListWatch(api=api, path=resources.path("resourceclaims"), sink=self,
                                name=f"claim-cache-{driver}", watch_timeout=watch_timeout,
                                backoff=backoff, log_extra={"driver": driver})

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> ClaimCache:
        """Start the list+watch thread (idempotent); returns ``self``."""
        self._watch.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching: the open watch connection is shut down, the thread waited for."""
        self._watch.stop(timeout)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait until the first list is in; False if ``timeout`` passed first."""
        return self._watch.wait_synced(timeout)

    @property
    def synced(self) -> bool:
        return self._watch.synced

    @property
    def resource_version(self) -> str:
        """The last resourceVersion seen (list, event or bookmark)."""
        return self._watch.resource_version

    @property
    def lists(self) -> int:
        """Successful list calls (the first one and every re-list)."""
        return self._watch.lists

    @property
    def hits(self) -> int:
        """Reads answered from memory."""
        return self._lookups.hits

    @property
    def misses(self) -> int:
        """Reads that went to the API (``uid_mismatches`` included)."""
        return self._lookups.misses

    @property
    def uid_mismatches(self) -> int:
        """Reads of a claim cached under another UID."""
        return self._lookups.uid_mismatches

    # -- reading ----------------------------------------------------------------------------

    def lookup(self, claim: ClaimRef) -> Mapping[str, Any] | None:
        """The claim when cached under ``claim.uid`` (counted as a hit), else None."""
        with self._lock:
            obj = self._claims.get((claim.namespace, claim.name))
            if obj is not None and claim.uid not in self._forgotten \
                    and object_uid(obj) == claim.uid:
                self._lookups.hit()
                return obj
        return None

    def get(self, claim: ClaimRef, *, timeout: float | None = None) -> Mapping[str, Any]:
        """The claim: from memory when cached under ``claim.uid``, else a live read that
        ``timeout`` bounds (see ``ClaimSource.get``; a hit ignores it)."""
        obj = self.lookup(claim)
        if obj is not None:
            return obj
        with self._lock:
            obj = self._claims.get((claim.namespace, claim.name))
            self._lookups.miss(uid_mismatch=obj is not None and claim.uid not in self._forgotten)
        log.debug("claim not in the cache, reading it from the API",
                  extra=claim_extra(claim, driver=self.driver))
        return self._fallback.get(claim, timeout=timeout)

    def forget(self, claim: ClaimRef) -> None:
        """Stop answering for ``claim.uid`` until the claim is seen deallocated or deleted."""
        with self._lock:
            self._forgotten.add(claim.uid)

    def holds(self, claim: ClaimRef) -> bool:
        """Whether ``get(claim)`` would answer from memory now (no API call, no counting)."""
        with self._lock:
            obj = self._claims.get((claim.namespace, claim.name))
            return (obj is not None and claim.uid not in self._forgotten
                    and object_uid(obj) == claim.uid)

    def cached(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The cached object of ``namespace/name``, or None (no API call, no counting)."""
        with self._lock:
            return self._claims.get((namespace, name))

    def __len__(self) -> int:
        with self._lock:
            return len(self._claims)

    # -- what the watch feeds (listwatch.Sink) ----------------------------------------------

    def convert(self, raw: dict[str, Any]) -> Mapping[str, Any]:
        return self._resources.to_v1(raw, kind="ResourceClaim")

    def replace(self, objects: Sequence[Mapping[str, Any]]) -> None:
        claims = {object_key(obj): obj for obj in objects
                  if relevant(obj, driver=self.driver, node_name=self.node_name)}
        with self._lock:
            self._claims = claims
            self._forgotten &= {object_uid(obj) for obj in claims.values()}

    def apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        key = object_key(obj)
        keep = kind != "DELETED" and relevant(obj, driver=self.driver,
                                              node_name=self.node_name)
        with self._lock:
            if keep:
                self._claims[key] = obj
            else:
                self._claims.pop(key, None)
                self._forgotten.discard(object_uid(obj))

    def drop(self, raw: Mapping[str, Any]) -> None:
        with self._lock:
            self._claims.pop(object_key(raw), None)

    def describe(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        namespace, name = object_key(raw)
        return claim_extra(ClaimRef(namespace=namespace, name=name, uid=object_uid(raw)),
                           driver=self.driver)
