"""This driver's entries in a ResourceClaim's ``status.devices``.

A backend may return a ``DeviceStatus`` with each ``PreparedDevice`` (conditions, ``data``,
``networkData``).  After a prepare the framework publishes it in the claim's
``status.devices``; after an unprepare it removes this driver's entries again, if the claim
still exists.  Entries of other drivers are never touched.

How a write is made, and why:

* The list is keyed by ``driver``/``pool``/``device``/``shareID``; the server refuses an entry
  for a device that is not in the claim's allocation (422, reported as is).
* Every kind of patch of a claim whose opaque ``parameters`` were created with whitespace is
  refused as an immutable-field change (``status.allocation: … field is immutable``), because
  the server re-serialises the stored object to apply the patch (see ``dra_framework.api.rawjson``).
  So a write is a full ``PUT …/status`` built from a fresh GET: the answer's text is kept,
  every RawExtension value is spliced back verbatim, and only ``status.devices`` is rebuilt.
  ``metadata.resourceVersion`` is sent, so a concurrent change gives 409 and the write starts
  again from a new GET (``conflict_attempts`` times in all).
* The server *serves* those values compacted, which differs from what it stored when a client
  wrote them with whitespace.  When the PUT is refused for that reason the writer tries
  ``rawjson.guesses`` of how the ``status.allocation`` parameters were first written (one
  layout per config source, ``FromClass``/``FromClaim``), most likely first, and remembers per
  claim what worked.  For claims written compactly — kubectl, client-go, this framework — the
  first PUT succeeds.
* ``lastTransitionTime`` of a condition is taken from the backend, else kept from the entry
  already in the claim when type and status did not change, else set to now (RFC 3339).

``StatusUpdater`` does one write synchronously.  ``ClaimStatusWriter`` runs them in a
background thread, coalescing writes per claim, retrying transient API errors with
``rest.Backoff``: a status write never fails nor delays a prepare.  Failures are logged with the
claim's uid/namespace/name and kept in ``ClaimStatusWriter.failures``.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
from prometheus_client import Counter

from ..convert import unstructure
from ..logs import claim_extra
from ..models import ClaimRef, DeviceStatus
from ..node.checkpoint import ClaimRecord, RecordedDevice
from . import jsondecode, rawjson
from .apiversions import V1, ResourceApi
from .rest import ApiError, Backoff, KubeApi, with_retries

log = logging.getLogger(__name__)

STATUS_WRITES = Counter(
    "dra_framework_claim_status_writes_total",
    "Writes of this driver's status.devices entries, by outcome (written, unchanged, gone: "
    "the claim was deleted or replaced, failed).",
    ["driver", "outcome"],
)


@attrs.frozen
class DeviceStatusEntry:
    """The status of one prepared device, to be written to ``status.devices``."""

    pool: str
    device: str
    status: DeviceStatus
    share_id: str | None = None


def status_entries(devices: Iterable[RecordedDevice]) -> tuple[DeviceStatusEntry, ...]:
    """The entries for a claim's recorded devices that carry a backend status."""
    out: dict[tuple[str, str, str], DeviceStatusEntry] = {}
    for d in devices:
        status = d.prepared.status if d.prepared is not None else None
        if status is not None:
            out.setdefault((d.pool, d.device, d.share_id or ""), DeviceStatusEntry(
                pool=d.pool, device=d.device, status=status, share_id=d.share_id or None))
    return tuple(out.values())


def rfc3339_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry_key(entry: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(entry.get("pool") or ""), str(entry.get("device") or ""),
            str(entry.get("shareID") or ""))


def device_status_json(entry: DeviceStatusEntry, *, driver: str,
                       previous: Mapping[str, Any] | None = None,
                       now: str | None = None) -> dict[str, Any]:
    """One ``status.devices`` item (camelCase JSON) for ``entry``."""
    item: dict[str, Any] = {"driver": driver, "pool": entry.pool, "device": entry.device}
    if entry.share_id:
        item["shareID"] = entry.share_id
    before = {c.get("type"): c for c in (previous or {}).get("conditions") or []
              if isinstance(c, Mapping)}
    conditions = []
    for condition in entry.status.conditions:
        c: dict[str, Any] = json.loads(json.dumps(unstructure(condition)))
        c.setdefault("message", "")
        if not c.get("lastTransitionTime"):  # no transition: the old time stays
            old = before.get(condition.type) or {}
            kept = old.get("lastTransitionTime") if old.get("status") == condition.status else None
            c["lastTransitionTime"] = kept or now or rfc3339_now()
        conditions.append(c)
    if conditions:
        item["conditions"] = conditions
    if entry.status.data is not None:
        item["data"] = json.loads(json.dumps(dict(entry.status.data)))
    if entry.status.network_data is not None:
        network = json.loads(json.dumps(unstructure(entry.status.network_data)))
        if network:
            item["networkData"] = network
    return item


def merge_device_statuses(existing: Sequence[Any], *, driver: str,
                          entries: Sequence[DeviceStatusEntry] | None,
                          now: str | None = None) -> list[Any]:
    """``status.devices`` with this driver's entries replaced by ``entries`` (None: removed).

    Other drivers' entries keep their place and content; this driver's follow them.
    """
    others = [e for e in existing if not (isinstance(e, Mapping) and e.get("driver") == driver)]
    mine = {_entry_key(e): e for e in existing
            if isinstance(e, Mapping) and e.get("driver") == driver}
    stamp = now or rfc3339_now()
    return others + [
        device_status_json(e, driver=driver, now=stamp,
                           previous=mine.get((e.pool, e.device, e.share_id or "")))
        for e in entries or ()
    ]


def _allocation_immutable(exc: ApiError) -> bool:
    if exc.code != 422:
        return False
    causes = (exc.status.get("details") or {}).get("causes") or []
    fields = {c.get("field") for c in causes if isinstance(c, Mapping)}
    return "status.allocation" in fields or (
        "status.allocation" in exc.message and "field is immutable" in exc.message)


class StatusUpdater:
    """Synchronous read-modify-write of this driver's ``status.devices`` entries of a claim.

    Calls are meant to come from one thread (``ClaimStatusWriter``'s worker)."""

    def __init__(self, *, api: KubeApi, driver: str, resources: ResourceApi = V1,
                 conflict_attempts: int = 5, max_style_attempts: int = 24,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        self.driver = driver
        self._api = api
        self._resources = resources
        self._conflict_attempts = conflict_attempts
        self._max_style_attempts = max_style_attempts
        self._sleep = sleep
        self._guesses: collections.OrderedDict[str, rawjson.Guess] = collections.OrderedDict()

    def write(self, claim: ClaimRef, entries: Sequence[DeviceStatusEntry]) -> str:
        """Publish ``entries`` as this driver's entries.  Returns ``written``, ``unchanged``
        or ``gone`` (no such claim, or another UID); other failures raise ``ApiError``."""
        return self._update(claim, entries)

    def clear(self, claim: ClaimRef) -> str:
        """Remove this driver's entries; a missing claim is fine (``gone``)."""
        outcome = self._update(claim, None)
        self._guesses.pop(claim.uid, None)
        return outcome

    def _update(self, claim: ClaimRef, entries: Sequence[DeviceStatusEntry] | None) -> str:
        url = self._resources.path("resourceclaims", namespace=claim.namespace,
                                   name=claim.name, subresource="status")
        backoff = Backoff(initial=0.05, maximum=1.0)
        for attempt in range(1, self._conflict_attempts + 1):
            try:
                text = self._api.send("GET", url).data.decode()
            except ApiError as exc:
                if exc.code == 404:
                    return "gone"
                raise
            obj = self._resources.to_v1(jsondecode.loads(text))
            meta = obj.get("metadata") or {}
            if meta.get("uid") != claim.uid:
                log.info("claim was replaced; its status is not ours to write",
                         extra=claim_extra(claim, api_uid=meta.get("uid")))
                return "gone"
            status = obj.setdefault("status", {})
            existing = list(status.get("devices") or [])
            devices = merge_device_statuses(existing, driver=self.driver, entries=entries)
            if devices == existing:
                return "unchanged"
            raw = _remap_device_data(rawjson.scan(text), existing, devices, self.driver)
            if devices:
                status["devices"] = devices
            else:
                status.pop("devices", None)
            try:
                self._put(claim, url, self._resources.from_v1(obj), raw)
                return "written"
            except ApiError as exc:
                if exc.code == 404:
                    return "gone"
                if exc.code != 409 or attempt == self._conflict_attempts:
                    raise
                log.debug("claim changed while writing its status, reading it again",
                          extra=claim_extra(claim, attempt=attempt))
                self._sleep(backoff.next())
        raise AssertionError("unreachable")

    def _put(self, claim: ClaimRef, url: str, body: dict[str, Any],
             raw: Mapping[rawjson.RawPath, str]) -> dict[str, Any]:
        sources = rawjson.allocation_sources(body, raw)
        groups = sorted(set(sources.values()))
        known = self._guesses.get(claim.uid)
        candidates = rawjson.guesses(groups, limit=self._max_style_attempts)
        if known is not None and sorted(g for g, _ in known) == groups:
            candidates.insert(0, known)
        tried: set[bytes] = set()
        last: ApiError | None = None
        for guess in candidates:
            data = rawjson.dumps(body, rawjson.apply_guess(raw, sources, guess))
            if data in tried:
                continue
            tried.add(data)
            try:
                resp = self._api.send("PUT", url, body=data)
            except ApiError as exc:
                if not _allocation_immutable(exc):
                    raise
                last = exc
                continue
            if any(layout != ("server", 0) for _, layout in guess):
                self._remember(claim.uid, guess)
                log.info("claim status written with its opaque parameters re-spaced",
                         extra=claim_extra(claim, layouts=dict(guess)))
            result: dict[str, Any] = jsondecode.loads(resp.data) if resp.data else {}
            return result
        assert last is not None
        raise last

    def _remember(self, uid: str, guess: rawjson.Guess) -> None:
        self._guesses[uid] = guess
        self._guesses.move_to_end(uid)
        while len(self._guesses) > 4096:
            self._guesses.popitem(last=False)


def _remap_device_data(raw: dict[rawjson.RawPath, str], before: Sequence[Any],
                       after: Sequence[Any], driver: str) -> dict[rawjson.RawPath, str]:
    """Move the kept ``status.devices[i].data`` texts of other drivers to their new index;
    this driver's rebuilt entries are serialised afresh."""
    out = {p: t for p, t in raw.items() if p[:2] != ("status", "devices")}
    kept = [i for i, e in enumerate(before)
            if not (isinstance(e, Mapping) and e.get("driver") == driver)]
    for new_index, old_index in enumerate(kept):
        text = raw.get(("status", "devices", old_index, "data"))
        if text is not None and after[new_index] is before[old_index]:
            out[("status", "devices", new_index, "data")] = text
    return out


@attrs.frozen
class _Job:
    claim: ClaimRef
    entries: tuple[DeviceStatusEntry, ...] | None  # None: clear


class ClaimStatusWriter:
    """Background, coalescing, retrying ``StatusUpdater`` of one driver."""

    def __init__(self, *, api: KubeApi, driver: str, resources: ResourceApi = V1,
                 attempts: int = 5, backoff: Callable[[], Backoff] | None = None,
                 updater: StatusUpdater | None = None) -> None:
        self.driver = driver
        self.updater = updater or StatusUpdater(api=api, driver=driver, resources=resources)
        self._attempts = attempts
        self._backoff = backoff or (lambda: Backoff(initial=0.2, maximum=5.0))
        self._cond = threading.Condition()
        self._pending: dict[str, _Job] = {}
        self._busy = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures: collections.deque[tuple[ClaimRef, ApiError]] = collections.deque(
            maxlen=100)
        """The most recent failed writes, oldest first."""

    # -- what the preparer calls --------------------------------------------------------

    def claim_prepared(self, record: ClaimRecord) -> bool:
        """Queue the status of a newly prepared claim; False when it has none."""
        entries = status_entries(record.devices)
        if entries:
            self.submit(_ref(record), entries)
        return bool(entries)

    def claim_unprepared(self, record: ClaimRecord) -> bool:
        """Queue the removal of the entries written for ``record``; False when it had none."""
        if not status_entries(record.devices):
            return False
        self.submit(_ref(record), None)
        return True

    def submit(self, claim: ClaimRef, entries: Sequence[DeviceStatusEntry] | None) -> None:
        """Queue a write (``None``: remove this driver's entries).  Never blocks on the API;
        a queued, not yet started write of the same claim is replaced."""
        job = _Job(claim=claim, entries=None if entries is None else tuple(entries))
        with self._cond:
            if self._stopping.is_set():
                log.warning("status writer stopped; status not written",
                            extra=claim_extra(claim, driver=self.driver))
                return
            self._pending.pop(claim.uid, None)
            self._pending[claim.uid] = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"claim-status-{self.driver}")
                self._thread.start()
            self._cond.notify_all()

    # -- lifecycle ----------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued write is done; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the write in progress; writes still queued are dropped (and logged)."""
        with self._cond:
            self._stopping.set()
            dropped = list(self._pending.values())
            self._pending.clear()
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        for job in dropped:
            log.warning("status writer stopped; status not written",
                        extra=claim_extra(job.claim, driver=self.driver))
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopping.is_set())
                if self._stopping.is_set():
                    return
                uid = next(iter(self._pending))
                job = self._pending.pop(uid)
                self._busy = True
            try:
                self._do(job)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _do(self, job: _Job) -> None:
        claim, what = job.claim, "clear" if job.entries is None else "write"
        entries = job.entries

        def once() -> str:
            if entries is None:
                return self.updater.clear(claim)
            return self.updater.write(claim, entries)

        def nap(delay: float) -> None:
            self._stopping.wait(delay)

        try:
            outcome = with_retries(
                once, what=f"claim status {what} {claim.namespace}/{claim.name}",
                attempts=self._attempts, backoff=self._backoff(),
                sleep=nap,
                retry_on=lambda e: e.transient and not self._stopping.is_set())
        except ApiError as exc:
            STATUS_WRITES.labels(self.driver, "failed").inc()
            self.failures.append((claim, exc))
            log.error(f"claim status {what} failed: {exc}",
                      extra=claim_extra(claim, driver=self.driver, code=exc.code))
            return
        except Exception:  # a bug must not kill the writer thread
            STATUS_WRITES.labels(self.driver, "failed").inc()
            log.exception(f"claim status {what} failed",
                          extra=claim_extra(claim, driver=self.driver))
            return
        STATUS_WRITES.labels(self.driver, outcome).inc()
        log.debug(f"claim status {what}: {outcome}", extra=claim_extra(claim, driver=self.driver))


def _ref(record: ClaimRecord) -> ClaimRef:
    return ClaimRef(namespace=record.namespace, name=record.name, uid=record.uid)
