"""The prepare/unprepare state machine of one driver.

``ClaimPreparer`` does what the kubelet asks of a DRA plugin for a batch of claims, following the
points of "What a plugin must do on each call" in the kubelet reference:

* claims already prepared are answered from the checkpoint, without the API or the backend;
* the others are read from the claim source (concurrently, on threads of this call alone, before
  the lock), checked (UID, allocation, this driver's results) and their opaque config decoded by
  the backend;
* under the cross-process lock, each claim goes through
  ``recorded → backend prepared → CDI spec written → committed``: a ``preparing`` record is
  written before the backend touches anything, so a failure at any step is rolled back at once
  and a crash at the next start (backend unprepare + CDI removal), and a device already held by
  another claim is refused unless the result has admin access or a share ID (a device allowing
  multiple allocations);
* every claim gets its own answer; one claim's failure never fails the others, whatever it is
  (a ``ClaimError``, a failed read of the state, a bug): each is turned into that claim's error,
  bounded to ``MAX_ERROR_CHARS``.

Time: a call answers before its ``deadline`` (the kubelet's, 45 s): claim reads are bounded by
what is left of it minus a reserve (``REPLY_RESERVE``), and the lock is waited for only as long
as the deadline allows.  Calls do not share read threads, so a call stuck on a hung API server
never delays another (``calls`` owns this time keeping and the admission of calls).

Shutdown: ``close`` refuses new calls, waits until every call in flight has finished, and only
then releases the lock, so no call ever runs on without it and a successor never sees a prepare
that is still going on.

Unprepare needs only the checkpoint: the claim may be gone from the API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from ..errors import (
    ClaimError,
    ConfigError,
    DeviceInUseError,
    SetupError,
    StateError,
)
from ..loader import Backend
from ..logs import claim_extra
from ..metrics import LATENCY, OPERATION_ERRORS, OPERATIONS, PREPARED_CLAIMS, STATE_CORRUPTIONS
from ..models import AllocatedDevice, ClaimRef, PreparedDevice
from . import faults
from .allocation import allocated_devices
from .calls import (
    DEFAULT_CALL_BUDGET,
    REPLY_RESERVE,
    STOPPING,
    CallGate,
    bounded,
    claim_error,
    start_reads,
)
from .cdi import CdiSpecStore
from .checkpoint import Checkpoint, ClaimRecord, RecordedDevice
from .locking import LockTimeout, SerializeLock
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


@attrs.frozen
class Undo:
    """How a roll-back went: ``kept`` when the record stays (the backend could not undo its
    work; the next call or start tries again), ``problem`` when something was left behind."""

    kept: bool = False
    problem: str = ""


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
        self._fetch_workers = fetch_workers
        self._calls = CallGate()

    # -- start-up and shutdown --------------------------------------------------------------

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
                if self._undo(record).kept:
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
        """Refuse new calls, wait for the calls in flight, then release the lock.

        There is no time limit: releasing the lock under a call that still runs would let a
        successor act on state that call is changing.  A process killed while waiting loses
        the lock with its life, and the successor rolls back what the call left unfinished."""
        def waiting(active: int) -> None:
            log.warning("stopping: waiting for calls in flight before releasing the state lock",
                        extra={"driver": self.driver, "calls": active})

        self._calls.close(waiting=waiting)
        self.lock.close()

    # -- prepare ----------------------------------------------------------------------------

    def prepare(self, claims: Sequence[ClaimRef], *,
                deadline: float | None = None) -> dict[str, ClaimResult]:
        """Prepare every claim; the answer has exactly one entry per requested UID.

        ``deadline`` is a ``time.monotonic()`` instant the answer must beat (default: 45 s)."""
        started = time.perf_counter()
        if not self._calls.enter():
            return {c.uid: self._failed("prepare", c, ClaimError(STOPPING), started)
                    for c in claims}
        try:
            end = deadline if deadline is not None else time.monotonic() + DEFAULT_CALL_BUDGET
            return self._prepare(claims, started=started, deadline=end)
        finally:
            self._calls.leave()

    def _prepare(self, claims: Sequence[ClaimRef], *, started: float,
                 deadline: float) -> dict[str, ClaimResult]:
        results: dict[str, ClaimResult] = {}
        to_fetch: list[ClaimRef] = []
        for claim in claims:
            try:
                _check_ref(claim)
                record = self.checkpoint.peek(claim.uid)
            except Exception as exc:
                results[claim.uid] = self._failed("prepare", claim, exc, started)
                continue
            if record is not None and record.phase == "prepared":
                results[claim.uid] = _answer(record)
                self._done("prepare", claim, started, outcome="already-prepared")
            else:
                to_fetch.append(claim)
        # API reads run concurrently, and each claim is prepared as soon as its read is back:
        # disk work overlaps the reads still in flight, and the lock is never held while
        # waiting for the API.  One read alone is cheaper done right here.
        reserve = min(REPLY_RESERVE, (deadline - time.monotonic()) / 5)
        reads = start_reads(to_fetch, self._read, until=deadline - reserve,
                            workers=self._fetch_workers, name=f"read-{self.driver}")
        committed = False
        for claim, read in zip(to_fetch, reads, strict=True):
            outcome = read()
            if isinstance(outcome, ClaimError):
                results[claim.uid] = self._failed("prepare", claim, outcome, started)
                continue
            try:
                with self.lock.hold(timeout=max(deadline - time.monotonic() - 1.0, 0.1)):
                    results[claim.uid] = self._prepare_locked(claim, outcome)
                committed = True
            except Exception as exc:
                results[claim.uid] = self._failed("prepare", claim, exc, started)
            else:
                self._done("prepare", claim, started, outcome="prepared")
        if committed:
            try:
                self.checkpoint.sync()  # the batch's records are durable before the reply
            except OSError as exc:
                err = StateError(f"cannot make the plugin state durable: {exc}")
                for claim in to_fetch:
                    if not results[claim.uid].error:
                        results[claim.uid] = self._failed("prepare", claim, err, started)
        return {c.uid: results[c.uid] for c in claims}

    def _read(self, claim: ClaimRef, timeout: float) -> list[AllocatedDevice] | ClaimError:
        """Read and decode the allocation of one claim; any failure is that claim's error."""
        try:
            obj = self._claims.get(claim, timeout=timeout)
            decode = self.backend.decode_config if self.backend.accepts_config else None
            return allocated_devices(obj, claim=claim, driver=self.driver, decode=decode)
        except Exception as exc:
            return claim_error(exc)

    def _prepare_locked(self, claim: ClaimRef, devices: list[AllocatedDevice]) -> ClaimResult:
        existing = self.checkpoint.get(claim.uid)
        if existing is not None and existing.phase == "prepared":
            return _answer(existing)
        if existing is not None:
            undo = self._undo(attrs.evolve(existing, namespace=claim.namespace, name=claim.name))
            if undo.kept:
                raise DeviceInUseError("an earlier, interrupted prepare of this claim could not "
                                       "be rolled back; see the plugin log")
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
        prepared: dict[tuple[str, str], PreparedDevice] = {}
        try:
            self.checkpoint.mark_devices(record)
            faults.point("prepare:recorded")
            log.debug("preparing claim", extra=claim_extra(claim, devices=len(devices)))
            prepared = {(p.pool, p.device): p
                        for p in self.backend.prepare(claim=claim, devices=devices)}
            faults.point("prepare:backend-done")
            ids = self._write_cdi(claim, prepared)
            faults.point("prepare:cdi-written")
            final = attrs.evolve(record, phase="prepared", devices=tuple(
                attrs.evolve(d, cdi_ids=ids.get((d.pool, d.device), ()),
                             prepared=prepared[(d.pool, d.device)])
                for d in record.devices
            ))
            self.checkpoint.put(final, sync_dir=False)
        except Exception as exc:
            err = claim_error(exc)
            undo = self._undo(attrs.evolve(record, devices=tuple(
                attrs.evolve(d, prepared=prepared.get((d.pool, d.device)))
                for d in record.devices)))
            if undo.problem:
                err.args = (f"{err}; the roll-back left something behind: {undo.problem}",)
            raise err from exc
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

    def _undo(self, record: ClaimRecord) -> Undo:
        """Roll back (part of) a prepare: backend unprepare, CDI spec, markers, record.

        Every step that can run does: a CDI spec that cannot be removed does not keep the
        devices blocked (the spec is an orphan that the next start removes).  Only a backend
        that cannot undo its work keeps the record, so the roll-back is tried again."""
        claim = _ref(record)
        try:
            self.backend.unprepare(claim=claim, devices=_backend_devices(record))
        except Exception as exc:
            log.exception("roll-back failed; the claim stays recorded",
                          extra=claim_extra(claim))
            return Undo(kept=True, problem=f"the backend could not undo its work: {exc}")
        problem = ""
        try:
            self.cdi.remove_claim_spec(claim_uid=record.uid)
        except ClaimError as exc:
            log.error(f"roll-back could not remove the CDI spec: {exc}",
                      extra=claim_extra(claim))
            problem = str(exc)
        self.checkpoint.release_devices(record)
        self.checkpoint.delete(record.uid)
        return Undo(problem=problem)

    # -- unprepare --------------------------------------------------------------------------

    def unprepare(self, claims: Sequence[ClaimRef], *,
                  deadline: float | None = None) -> dict[str, str]:
        """Unprepare every claim; UID → error string ("" = done, also for unknown claims)."""
        started = time.perf_counter()
        if not self._calls.enter():
            return {c.uid: self._failed("unprepare", c, ClaimError(STOPPING), started).error
                    for c in claims}
        try:
            end = deadline if deadline is not None else time.monotonic() + DEFAULT_CALL_BUDGET
            return self._unprepare(claims, started=started, deadline=end)
        finally:
            self._calls.leave()

    def _unprepare(self, claims: Sequence[ClaimRef], *, started: float,
                   deadline: float) -> dict[str, str]:
        results: dict[str, str] = {}
        try:
            with self.lock.hold(timeout=max(deadline - time.monotonic() - 1.0, 0.1)):
                for claim in claims:
                    try:
                        outcome = self._unprepare_locked(claim)
                    except Exception as exc:
                        results[claim.uid] = self._failed("unprepare", claim, exc, started).error
                    else:
                        results[claim.uid] = ""
                        self._done("unprepare", claim, started, outcome=outcome)
        except LockTimeout as exc:
            for claim in claims:
                results[claim.uid] = self._failed("unprepare", claim, exc, started).error
        return {c.uid: results[c.uid] for c in claims}

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

    def _failed(self, operation: str, claim: ClaimRef, exc: Exception,
                started: float) -> ClaimResult:
        err = claim_error(exc)
        LATENCY.labels(self.driver, operation).observe(time.perf_counter() - started)
        OPERATIONS.labels(self.driver, operation, "error").inc()
        OPERATION_ERRORS.labels(self.driver, operation, type(err).__name__).inc()
        message = bounded(str(err))
        log.error(f"{operation} failed: {message}", extra=claim_extra(claim, driver=self.driver),
                  exc_info=exc if err is not exc else None)
        return ClaimResult(error=message)
