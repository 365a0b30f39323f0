"""The prepare/unprepare state machine of one driver.

``ClaimPreparer`` does what the kubelet asks of a DRA plugin for a batch of claims, following the
points of "What a plugin must do on each call" in the kubelet reference:

* claims already prepared are answered from the checkpoint, without the API or the backend;
* the others are read from the API (in parallel, before the lock), checked (UID, allocation,
  this driver's results) and their opaque config decoded by the backend;
* under the cross-process lock, each claim goes through
  ``recorded → backend prepared → CDI spec written → committed``: a ``preparing`` record is
  written before the backend touches anything, so a crash at any step is rolled back at the next
  start (backend unprepare + CDI removal), and a device already held by another claim is refused
  unless the result has admin access or a share ID (a device allowing multiple allocations);
* every claim gets its own answer; one claim's failure never fails the others.

Unprepare needs only the checkpoint: the claim may be gone from the API.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

from ..errors import ClaimError, ConfigError, DeviceInUseError, SetupError, StateError
from ..loader import Backend
from ..logs import claim_extra
from ..metrics import LATENCY, OPERATION_ERRORS, OPERATIONS, PREPARED_CLAIMS, STATE_CORRUPTIONS
from ..models import AllocatedDevice, ClaimRef, PreparedDevice
from . import faults
from .allocation import allocated_devices
from .cdi import CdiSpecStore
from .checkpoint import Checkpoint, ClaimRecord, RecordedDevice
from .locking import SerializeLock
from .ports import ClaimObserver, ClaimSource

log = logging.getLogger(__name__)


@attrs.frozen
class ResultDevice:
    """One ``Device`` entry of a NodePrepareResources answer."""

    request_names: tuple[str, ...]
    pool: str
    device: str
    cdi_ids: tuple[str, ...]
    share_id: str | None = None


@attrs.frozen
class ClaimResult:
    """The answer for one claim: its devices, or an error string."""

    error: str = ""
    devices: tuple[ResultDevice, ...] = ()


def _answer(record: ClaimRecord) -> ClaimResult:
    return ClaimResult(devices=tuple(
        ResultDevice(
            request_names=(d.request.split("/", 1)[0],),
            pool=d.pool,
            device=d.device,
            cdi_ids=d.cdi_ids,
            share_id=d.share_id,
        )
        for d in record.devices
    ))


def _check_ref(claim: ClaimRef) -> None:
    """The kubelet always sends all three; refuse a request that does not, for that claim."""
    missing = [f for f in ("namespace", "name", "uid") if not getattr(claim, f)]
    if missing:
        raise ConfigError(f"the request names no claim {' or '.join(missing)}")


def _ref(record: ClaimRecord) -> ClaimRef:
    return ClaimRef(namespace=record.namespace, name=record.name, uid=record.uid)


def _backend_devices(record: ClaimRecord) -> list[PreparedDevice]:
    """What to hand ``dra_unprepare_claim``: one entry per distinct device of the record."""
    seen: dict[tuple[str, str], PreparedDevice] = {}
    for d in record.devices:
        seen.setdefault((d.pool, d.device), d.prepared or PreparedDevice(pool=d.pool,
                                                                         device=d.device))
    return list(seen.values())


class ClaimPreparer:
    """Prepares and unprepares claims for one backend, with durable state under ``state_dir``."""

    def __init__(
        self,
        *,
        backend: Backend,
        claims: ClaimSource,
        state_dir: str | Path,
        cdi_root: str | Path,
        boot_id: str,
        fetch_workers: int = 8,
        observer: ClaimObserver | None = None,
    ) -> None:
        self.backend = backend
        self.driver = backend.info.driver_name
        self._claims = claims
        self.checkpoint = Checkpoint(directory=state_dir)
        self.lock = SerializeLock(directory=state_dir)
        self.cdi = CdiSpecStore(root=cdi_root, kind=backend.info.cdi_kind)
        self._boot_id = boot_id
        self._observer = observer
        self._pool = ThreadPoolExecutor(max_workers=fetch_workers,
                                        thread_name_prefix=f"fetch-{self.driver}")

    # -- start-up ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Load the checkpoint; roll back interrupted prepares; remove orphaned CDI specs."""
        with self.lock.hold():
            try:
                opened = self.checkpoint.open(boot_id=self._boot_id)
            except OSError as exc:
                raise SetupError(f"cannot use the state directory "
                                 f"{self.checkpoint.directory}: {exc}") from exc
            keep = {r.uid for r in opened.prepared}
            for record in opened.interrupted:
                log.warning("rolling back a prepare interrupted by a crash",
                            extra=claim_extra(_ref(record)))
                if not self._undo(record):
                    keep.add(record.uid)
            for uid in self.cdi.claim_uids() - keep:
                log.info("removing orphaned CDI spec", extra={"claim_uid": uid})
                self.cdi.remove_claim_spec(claim_uid=uid)
            self.cdi.remove_stale_temp_files()
        STATE_CORRUPTIONS.labels(self.driver).inc(len(opened.corrupt))
        PREPARED_CLAIMS.labels(self.driver).set(len(opened.prepared))
        log.info("checkpoint loaded", extra={
            "driver": self.driver, "prepared_claims": len(opened.prepared),
            "rolled_back": len(opened.interrupted), "set_aside": len(opened.corrupt),
            "rebooted": opened.rebooted,
        })

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.lock.close()

    # -- prepare ----------------------------------------------------------------------------

    def prepare(self, claims: Sequence[ClaimRef]) -> dict[str, ClaimResult]:
        """Prepare every claim; the answer has exactly one entry per requested UID."""
        started = time.perf_counter()
        results: dict[str, ClaimResult] = {}
        to_fetch: list[ClaimRef] = []
        for claim in claims:
            try:
                _check_ref(claim)
                record = self.checkpoint.get(claim.uid)
            except ClaimError as exc:
                results[claim.uid] = self._failed("prepare", claim, exc, started)
                continue
            if record is not None and record.phase == "prepared":
                results[claim.uid] = _answer(record)
                self._done("prepare", claim, started, outcome="already-prepared")
            else:
                to_fetch.append(claim)
        # API reads run in parallel, and each claim is prepared as soon as its read is back:
        # disk work overlaps the reads still in flight, and the lock is never held while
        # waiting for the API.  One read alone is cheaper done right here.
        if len(to_fetch) > 1:
            reads = [self._pool.submit(self._read, c).result for c in to_fetch]
        else:
            reads = [functools.partial(self._read, c) for c in to_fetch]
        committed = False
        for claim, read in zip(to_fetch, reads, strict=True):
            outcome = read()
            if isinstance(outcome, ClaimError):
                results[claim.uid] = self._failed("prepare", claim, outcome, started)
                continue
            try:
                with self.lock.hold():
                    results[claim.uid] = self._prepare_locked(claim, outcome)
                committed = True
            except OSError as exc:
                err = StateError(f"cannot write the plugin state: {exc}")
                results[claim.uid] = self._failed("prepare", claim, err, started)
            except ClaimError as exc:
                results[claim.uid] = self._failed("prepare", claim, exc, started)
            else:
                self._done("prepare", claim, started, outcome="prepared")
        if committed:
            self.checkpoint.sync()  # the batch's records are durable before the reply
        return {c.uid: results[c.uid] for c in claims}

    def _read(self, claim: ClaimRef) -> list[AllocatedDevice] | ClaimError:
        """API read and allocation decoding of one claim (runs in the fetch pool)."""
        try:
            obj = self._claims.get(claim)
            decode = self.backend.decode_config if self.backend.accepts_config else None
            return allocated_devices(obj, claim=claim, driver=self.driver, decode=decode)
        except ClaimError as exc:
            return exc

    def _prepare_locked(self, claim: ClaimRef, devices: list[AllocatedDevice]) -> ClaimResult:
        existing = self.checkpoint.get(claim.uid)
        if existing is not None and existing.phase == "prepared":
            return _answer(existing)
        if existing is not None and not self._undo(existing):
            raise DeviceInUseError("an earlier, interrupted prepare of this claim could not be "
                                   "rolled back; see the plugin log")
        record = ClaimRecord(
            uid=claim.uid, namespace=claim.namespace, name=claim.name, phase="preparing",
            devices=tuple(RecordedDevice(request=d.request, pool=d.pool, device=d.device,
                                         admin_access=d.admin_access, share_id=d.share_id)
                          for d in devices),
            cdi_spec=str(self.cdi.spec_path(claim.uid)),
        )
        for rd in record.devices:  # the same rule that decides which devices get a marker
            owner = self.checkpoint.device_owner(rd.pool, rd.device) if rd.exclusive else None
            if owner and owner != claim.uid:
                raise DeviceInUseError(
                    f"device {rd.pool}/{rd.device} is already prepared for claim {owner}"
                )
        self.checkpoint.put(record)
        self.checkpoint.mark_devices(record)
        faults.point("prepare:recorded")
        log.debug("preparing claim", extra=claim_extra(claim, devices=len(devices)))
        try:
            prepared = {(p.pool, p.device): p
                        for p in self.backend.prepare(claim=claim, devices=devices)}
        except ClaimError:
            self._undo(record)
            raise
        faults.point("prepare:backend-done")
        try:
            ids = self._write_cdi(claim, prepared)
        except ClaimError:
            self._undo(attrs.evolve(record, devices=tuple(
                attrs.evolve(d, prepared=prepared[(d.pool, d.device)]) for d in record.devices
            )))
            raise
        faults.point("prepare:cdi-written")
        final = attrs.evolve(record, phase="prepared", devices=tuple(
            attrs.evolve(d, cdi_ids=ids.get((d.pool, d.device), ()),
                         prepared=prepared[(d.pool, d.device)])
            for d in record.devices
        ))
        self.checkpoint.put(final, sync_dir=False)
        faults.point("prepare:committed")
        PREPARED_CLAIMS.labels(self.driver).inc()
        if self._observer is not None:
            self._observer.claim_prepared(final)  # never blocks or fails the prepare
        return _answer(final)

    def _write_cdi(
        self, claim: ClaimRef, prepared: Mapping[tuple[str, str], PreparedDevice]
    ) -> dict[tuple[str, str], tuple[str, ...]]:
        """Write the claim's CDI spec; devices without edits get no CDI ID (and no spec)."""
        keys = [k for k, p in prepared.items() if not p.edits.is_empty()]
        if not keys:
            return {}
        ids = self.cdi.write_claim_spec(
            claim_uid=claim.uid, devices=[(device, prepared[(pool, device)].edits)
                                          for pool, device in keys],
        )
        return {k: (cdi_id,) for k, cdi_id in zip(keys, ids, strict=True)}

    def _undo(self, record: ClaimRecord) -> bool:
        """Roll back (part of) a prepare: backend unprepare, CDI spec, markers, record."""
        claim = _ref(record)
        try:
            self.backend.unprepare(claim=claim, devices=_backend_devices(record))
        except ClaimError:
            log.exception("roll-back failed; the claim stays recorded",
                          extra=claim_extra(claim))
            return False
        self.cdi.remove_claim_spec(claim_uid=record.uid)
        self.checkpoint.release_devices(record)
        self.checkpoint.delete(record.uid)
        return True

    # -- unprepare --------------------------------------------------------------------------

    def unprepare(self, claims: Sequence[ClaimRef]) -> dict[str, str]:
        """Unprepare every claim; UID → error string ("" = done, also for unknown claims)."""
        started = time.perf_counter()
        results: dict[str, str] = {}
        with self.lock.hold():
            for claim in claims:
                try:
                    outcome = self._unprepare_locked(claim)
                except OSError as exc:
                    err = StateError(f"cannot write the plugin state: {exc}")
                    results[claim.uid] = self._failed("unprepare", claim, err, started).error
                except ClaimError as exc:
                    results[claim.uid] = self._failed("unprepare", claim, exc, started).error
                else:
                    results[claim.uid] = ""
                    self._done("unprepare", claim, started, outcome=outcome)
        return results

    def _unprepare_locked(self, claim: ClaimRef) -> str:
        _check_ref(claim)
        record = self.checkpoint.get(claim.uid)
        if record is None:
            return "not-prepared"
        self.backend.unprepare(claim=claim, devices=_backend_devices(record))
        faults.point("unprepare:backend-done")
        self.cdi.remove_claim_spec(claim_uid=claim.uid)
        faults.point("unprepare:cdi-removed")
        self.checkpoint.release_devices(record)
        self.checkpoint.delete(claim.uid)
        if self._observer is not None:
            self._observer.claim_unprepared(record)
        forget = getattr(self._claims, "forget", None)
        if forget is not None:  # a cache must not answer from an allocation now undone
            forget(claim)
        if record.phase == "prepared":
            PREPARED_CLAIMS.labels(self.driver).dec()
        return "unprepared"

    # -- bookkeeping ------------------------------------------------------------------------

    def _done(self, operation: str, claim: ClaimRef, started: float, *, outcome: str) -> None:
        LATENCY.labels(self.driver, operation).observe(time.perf_counter() - started)
        OPERATIONS.labels(self.driver, operation, outcome).inc()
        log.info(f"claim {outcome}", extra=claim_extra(claim, driver=self.driver))

    def _failed(self, operation: str, claim: ClaimRef, exc: ClaimError,
                started: float) -> ClaimResult:
        LATENCY.labels(self.driver, operation).observe(time.perf_counter() - started)
        OPERATIONS.labels(self.driver, operation, "error").inc()
        OPERATION_ERRORS.labels(self.driver, operation, type(exc).__name__).inc()
        log.error(f"{operation} failed: {exc}", extra=claim_extra(claim, driver=self.driver))
        return ClaimResult(error=str(exc))
