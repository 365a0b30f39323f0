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

Watch handling: a 410 Gone (an ``ERROR`` event or an HTTP 410) means the resourceVersion was
compacted away: the cache lists again (after a ``rest.Backoff`` pause if that happens again
before the new watch delivered anything).  Connection failures and server errors are retried
with backoff from the last resourceVersion seen; BOOKMARK events advance that version, so a
re-watch after a quiet period does not need a re-list.  Deleted claims leave the cache.
The watch is never held up by one event: any claim of any driver is decoded whatever its
opaque parameters hold (``jsondecode``), a line that is no JSON object is skipped by
``rest.watch_events``, and a claim the cache fails to convert or apply (in an event, or an
item of a list) is skipped too, dropped from the cache so that reads of it go to the API;
both are counted in ``rest.WATCH_EVENTS_SKIPPED`` and logged once.

``get``, ``forget`` and ``cached`` may be called from any thread.  The cached objects are
shared and read-only: callers must not modify what ``get`` returns.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from ..logs import claim_extra
from ..models import ClaimRef
from .apiversions import V1, ResourceApi
from .claimreader import ClaimReader
from .rest import ApiError, Backoff, KubeApi, skip_event, watch_events

if TYPE_CHECKING:
    from ..node.ports import ClaimSource

log = logging.getLogger(__name__)

CACHE_LOOKUPS = Counter(
    "dra_framework_claim_cache_total",
    "Claim reads of the prepare path, by result: hit (answered from the watch cache), "
    "miss (not cached: live read) or uid_mismatch (cached under another UID: live read).",
    ["driver", "result"],
)

Key = tuple[str, str]


def _field(obj: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def _term_names_node(term: Any, node_name: str) -> bool:
    fields = _field(term, "matchFields")
    if not isinstance(fields, list) or not fields or _field(term, "matchExpressions"):
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
    allocation = _field(obj, "status", "allocation")
    if not isinstance(allocation, Mapping):
        return False
    results = _field(allocation, "devices", "results")
    if not isinstance(results, list) or not any(
            isinstance(r, Mapping) and r.get("driver") == driver for r in results):
        return False
    selector = allocation.get("nodeSelector")
    if selector is None:
        return True
    terms = _field(selector, "nodeSelectorTerms")
    return isinstance(terms, list) and any(_term_names_node(t, node_name) for t in terms)


def _key(obj: Mapping[str, Any]) -> Key:
    return (str(_field(obj, "metadata", "namespace") or ""),
            str(_field(obj, "metadata", "name") or ""))


def _uid(obj: Mapping[str, Any]) -> str:
    return str(_field(obj, "metadata", "uid") or "")


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
        self._api = api
        self._resources = resources
        self._fallback: ClaimSource = fallback or ClaimReader(api=api, resources=resources)
        self._path = resources.path("resourceclaims")
        self._watch_timeout = watch_timeout
        self._backoff = backoff or Backoff(initial=0.2, maximum=10.0)
        self._lock = threading.Lock()
        self._claims: dict[Key, Mapping[str, Any]] = {}
        self._forgotten: set[str] = set()
        self._rv = ""
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self._expired_after_list = False
        self._hit = CACHE_LOOKUPS.labels(driver, "hit")
        self._miss = CACHE_LOOKUPS.labels(driver, "miss")
        self._mismatch = CACHE_LOOKUPS.labels(driver, "uid_mismatch")
        self.hits = 0
        """Reads answered from memory."""
        self.misses = 0
        """Reads that went to the API (``uid_mismatches`` included)."""
        self.uid_mismatches = 0
        """Reads of a claim cached under another UID."""
        self.lists = 0
        """Successful list calls (the first one and every re-list)."""

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> ClaimCache:
        """Start the list+watch thread (idempotent); returns ``self``."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"claim-cache-{self.driver}")
            self._thread.start()
        return self

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

    # -- reading ----------------------------------------------------------------------------

    def get(self, claim: ClaimRef, *, timeout: float | None = None) -> Mapping[str, Any]:
        """The claim: from memory when cached under ``claim.uid``, else a live read that
        ``timeout`` bounds (see ``ClaimSource.get``; a hit ignores it)."""
        key = (claim.namespace, claim.name)
        with self._lock:
            obj = self._claims.get(key)
            if obj is not None and claim.uid not in self._forgotten:
                if _uid(obj) == claim.uid:
                    self.hits += 1
                    self._hit.inc()
                    return obj
                self.uid_mismatches += 1
                self._mismatch.inc()
            self.misses += 1
            if obj is None:
                self._miss.inc()
        log.debug("claim not in the cache, reading it from the API",
                  extra=claim_extra(claim, driver=self.driver))
        return self._fallback.get(claim, timeout=timeout)

    def forget(self, claim: ClaimRef) -> None:
        """Stop answering for ``claim.uid`` until the claim is seen deallocated or deleted."""
        with self._lock:
            self._forgotten.add(claim.uid)

    def cached(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The cached object of ``namespace/name``, or None (no API call, no counting)."""
        with self._lock:
            return self._claims.get((namespace, name))

    def __len__(self) -> int:
        with self._lock:
            return len(self._claims)

    # -- list and watch ---------------------------------------------------------------------

    def _run(self) -> None:
        need_list = True
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
                    log.info("claim watch expired, listing again",
                             extra={"driver": self.driver, "resource_version": self._rv})
                    if need_list or self._expired_after_list:  # again at once: do not spin
                        self._pause("claim watch expired right after a list")
                    need_list = True
                    continue
                self._pause(f"claim {'list' if need_list else 'watch'} failed: {exc}")
            except Exception as exc:  # never let the thread die: the cache would go stale
                if self._stopping.is_set():
                    return
                log.exception("claim cache error", extra={"driver": self.driver})
                self._pause(f"claim cache error: {exc}")

    def _pause(self, why: str) -> None:
        delay = self._backoff.next()
        log.warning(f"{why}; retrying in {delay:.2f}s",
                    extra={"driver": self.driver, "resource_version": self._rv})
        self._stopping.wait(delay)

    def _relist(self) -> None:
        data = self._api.list(self._path)
        claims: dict[Key, Mapping[str, Any]] = {}
        for raw in data.get("items") or []:
            if not isinstance(raw, dict):
                continue
            try:  # one by one: a claim that cannot be converted costs only itself
                item = self._resources.to_v1(raw, kind="ResourceClaim")
            except Exception as exc:
                self._unusable(raw, exc)
                continue
            if relevant(item, driver=self.driver, node_name=self.node_name):
                claims[_key(item)] = item
        with self._lock:
            self._claims = claims
            self._forgotten &= {_uid(obj) for obj in claims.values()}
            self._rv = str(_field(data, "metadata", "resourceVersion") or "")
            self.lists += 1
        self._synced.set()
        log.info("claims listed", extra={"driver": self.driver, "cached": len(claims),
                                         "resource_version": self._rv})

    def _watch(self) -> None:
        """One watch request, streamed here rather than through ``KubeApi.watch`` so that
        ``stop`` can shut the connection down instead of waiting for the next event."""
        query = [("watch", "1"), ("resourceVersion", self._rv),
                 ("timeoutSeconds", str(self._watch_timeout)), ("allowWatchBookmarks", "true")]
        resp = self._api.send("GET", self._path, query=query, stream=True,
                               timeout=self._watch_timeout + 30)
        with self._lock:
            self._response = resp
        try:
            if self._stopping.is_set():  # stop() came before there was a response to shut
                return
            for event in watch_events(resp, where=self._path):
                if self._stopping.is_set():
                    return
                try:
                    self._apply(event)
                except Exception as exc:  # an event this cache cannot use must not stall it
                    self._unusable(event.get("object"), exc, advance=True)
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

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        raw = event.get("object")
        if not isinstance(raw, dict):
            return
        rv = str(_field(raw, "metadata", "resourceVersion") or "")
        if kind == "BOOKMARK":
            if rv:
                self._rv = rv
            return
        obj = self._resources.to_v1(raw)
        key, uid = _key(obj), _uid(obj)
        keep = kind in ("ADDED", "MODIFIED") and relevant(obj, driver=self.driver,
                                                         node_name=self.node_name)
        with self._lock:
            if keep:
                self._claims[key] = obj
            else:
                self._claims.pop(key, None)
                self._forgotten.discard(uid)
            if rv:
                self._rv = rv

    def _unusable(self, raw: Any, exc: Exception, *, advance: bool = False) -> None:
        """Skip the claim ``raw`` (as served) of a list or of a watch event: it leaves the
        cache (reads of it go to the API, which is always right); ``advance``: the watch
        goes on after the event."""
        obj: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        rv = str(_field(obj, "metadata", "resourceVersion") or "")
        key = _key(obj)
        with self._lock:
            self._claims.pop(key, None)
            if rv and advance:
                self._rv = rv
        claim = ClaimRef(namespace=key[0], name=key[1], uid=_uid(obj))
        skip_event(where=self._path, reason="unusable", why=f"{type(exc).__name__}: {exc}",
                   **claim_extra(claim, driver=self.driver, resource_version=rv))
