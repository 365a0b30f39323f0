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
import sqlite3
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from ..errors import (
    ClaimError,
    ConfigError,
    DeviceInUseError,
    SetupError,
)
from ..loader import Backend
from ..logs import claim_extra
from ..metrics import (
    LATENCY,
    OPERATION_ERRORS,
    OPERATIONS,
    PREPARE_STAGES,
    PREPARED_CLAIMS,
    STAGES,
    STATE_CORRUPTIONS,
)
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
        self._backend_pool: ThreadPoolExecutor | None = None
        self._counted: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.stages = {name: PREPARE_STAGES.labels(self.driver, name) for name in STAGES}

    # -- start-up and shutdown --------------------------------------------------------------

    def recover(self) -> None:
        """Load the checkpoint; roll back interrupted prepares; remove orphaned CDI specs."""
        with self.lock.hold():
            try:
                opened = self.checkpoint.open(boot_id=self._boot_id)
            except (OSError, sqlite3.Error) as exc:
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
        if self._backend_pool is not None:
            self._backend_pool.shutdown(wait=True)
        self.checkpoint.close()
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
        # Claims the source holds in memory are decoded right here; the others are read
        # concurrently, never under the lock (one read alone runs right here).
        held = {c.uid: self._held(c) for c in to_fetch}
        missing = [c for c in to_fetch if held[c.uid] is None]
        reserve = min(REPLY_RESERVE, (deadline - time.monotonic()) / 5)
        reads = dict(zip((c.uid for c in missing), start_reads(
            missing, self._read, until=deadline - reserve, workers=self._fetch_workers,
            name=f"read-{self.driver}"), strict=True))
        ready: list[tuple[ClaimRef, list[AllocatedDevice]]] = []
        for claim in to_fetch:
            known = held[claim.uid]
            outcome = known if known is not None else reads[claim.uid]()
            if isinstance(outcome, ClaimError):
                results[claim.uid] = self._failed("prepare", claim, outcome, started)
            else:
                ready.append((claim, outcome))
        if ready:
            try:
                waited = time.perf_counter()
                with self.lock.hold(timeout=max(deadline - time.monotonic() - 1.0, 0.1)):
                    self.stages["lock"].observe(time.perf_counter() - waited)
                    outcomes = self._prepare_locked(ready)
            except Exception as exc:
                outcomes = {claim.uid: claim_error(exc) for claim, _ in ready}
            for claim, _ in ready:
                answer = outcomes[claim.uid]
                if isinstance(answer, ClaimResult):
                    results[claim.uid] = answer
                    self._done("prepare", claim, started, outcome="prepared")
                else:
                    results[claim.uid] = self._failed("prepare", claim, answer, started)
        return {c.uid: results[c.uid] for c in claims}

    def _held(self, claim: ClaimRef) -> list[AllocatedDevice] | ClaimError | None:
        """The decoded allocation of a claim the source holds in memory, else None."""
        try:
            with self.stages["read"].time():
                obj = self._claims.lookup(claim)
        except Exception as exc:
            return claim_error(exc)
        return None if obj is None else self._decode(claim, obj)

    def _read(self, claim: ClaimRef, timeout: float) -> list[AllocatedDevice] | ClaimError:
        """Read and decode the allocation of one claim; any failure is that claim's error."""
        try:
            with self.stages["read"].time():
                obj = self._claims.get(claim, timeout=timeout)
        except Exception as exc:
            return claim_error(exc)
        return self._decode(claim, obj)

    def _decode(self, claim: ClaimRef,
                obj: Mapping[str, Any]) -> list[AllocatedDevice] | ClaimError:
        decode = self.backend.decode_config if self.backend.accepts_config else None
        try:
            with self.stages["decode"].time():
                return allocated_devices(obj, claim=claim, driver=self.driver, decode=decode)
        except Exception as exc:
            return claim_error(exc)

    def _prepare_locked(self, ready: list[tuple[ClaimRef, list[AllocatedDevice]]],
                        ) -> dict[str, ClaimResult | Exception]:
        """Prepare a batch of claims whose allocations are read, under the lock.

        ``recorded`` (one transaction of intent records and held devices for the batch) →
        backend prepared and CDI spec written, claim by claim (at once when the backend allows
        it) → ``committed`` (one transaction).  A claim that fails is rolled back on its own."""
        outcomes: dict[str, ClaimResult | Exception] = {}
        todo: list[tuple[ClaimRef, list[AllocatedDevice], ClaimRecord]] = []
        taken: dict[tuple[str, str], str] = {}  # exclusive devices claimed within this batch
        admitting = time.perf_counter()
        for claim, devices in ready:
            try:
                known = self._admit(claim, devices, taken)
            except Exception as exc:
                outcomes[claim.uid] = exc
                continue
            if isinstance(known, ClaimResult):
                outcomes[claim.uid] = known
            else:
                todo.append((claim, devices, known))
        self.stages["admit"].observe(time.perf_counter() - admitting)
        if not todo:
            return outcomes
        with self.stages["record"].time(), self.checkpoint.batch():
            for _, _, record in todo:
                self.checkpoint.put(record)
                self.checkpoint.mark_devices(record)
        faults.point("prepare:recorded")
        done = self._run_backend(todo)
        finals: list[ClaimRecord] = []
        for (claim, _, _record), outcome in zip(todo, done, strict=True):
            if isinstance(outcome, ClaimRecord):
                finals.append(outcome)
            else:
                outcomes[claim.uid] = outcome
        try:
            with self.stages["commit"].time(), self.checkpoint.batch():
                for final in finals:
                    self.checkpoint.put(final)
        except Exception as exc:
            for final in finals:
                outcomes[final.uid] = self._rolled_back(final, exc)
            return outcomes
        faults.point("prepare:committed")
        for final in finals:
            PREPARED_CLAIMS.labels(self.driver).inc()
            if self._observer is not None:
                self._observer.claim_prepared(final)  # never blocks or fails the prepare
            outcomes[final.uid] = _answer(final)
        return outcomes

    def _admit(self, claim: ClaimRef, devices: list[AllocatedDevice],
               taken: dict[tuple[str, str], str]) -> ClaimResult | ClaimRecord:
        """The answer of a claim prepared meanwhile, or the intent record of a new prepare
        (after rolling back an interrupted one); refuses devices held by another claim."""
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
        wanted = {(rd.pool, rd.device) for rd in record.devices if rd.exclusive}
        for key in sorted(wanted):  # the same rule that decides which devices are held
            owner = taken.get(key) or self.checkpoint.device_owner(*key)
            if owner and owner != claim.uid:
                raise DeviceInUseError(
                    f"device {key[0]}/{key[1]} is already prepared for claim {owner}")
        taken.update(dict.fromkeys(wanted, claim.uid))
        return record

    def _run_backend(self, todo: list[tuple[ClaimRef, list[AllocatedDevice], ClaimRecord]],
                     ) -> list[ClaimRecord | Exception]:
        """Backend prepare and CDI spec of each claim: the ``prepared`` record, or the error
        (the claim then rolled back).  Claims run at once when the backend allows it."""
        def one(item: tuple[ClaimRef, list[AllocatedDevice], ClaimRecord],
                ) -> ClaimRecord | Exception:
            claim, devices, record = item
            prepared: dict[tuple[str, str], PreparedDevice] = {}
            try:
                log.debug("preparing claim", extra=claim_extra(claim, devices=len(devices)))
                with self.stages["backend"].time():
                    prepared = {(p.pool, p.device): p
                                for p in self.backend.prepare(claim=claim, devices=devices)}
                faults.point("prepare:backend-done")
                with self.stages["cdi"].time():
                    ids = self._write_cdi(claim, prepared)
                faults.point("prepare:cdi-written")
                return attrs.evolve(record, phase="prepared", devices=tuple(
                    attrs.evolve(d, cdi_ids=ids.get((d.pool, d.device), ()),
                                 prepared=prepared[(d.pool, d.device)])
                    for d in record.devices))
            except Exception as exc:
                return self._rolled_back(attrs.evolve(record, devices=tuple(
                    attrs.evolve(d, prepared=prepared.get((d.pool, d.device)))
                    for d in record.devices)), exc)

        if len(todo) > 1 and self.backend.info.concurrent_prepare:
            # one call at a time gets here (the lock is held), so one pool serves them all
            if self._backend_pool is None:
                self._backend_pool = ThreadPoolExecutor(
                    max_workers=self._fetch_workers, thread_name_prefix=f"prepare-{self.driver}")
            return list(self._backend_pool.map(one, todo))
        return [one(item) for item in todo]

    def _rolled_back(self, record: ClaimRecord, exc: Exception) -> ClaimError:
        """Roll ``record`` back after ``exc``; the claim's error, with what the roll-back left."""
        err = claim_error(exc)
        undo = self._undo(record)
        if undo.problem:
            err.args = (f"{err}; the roll-back left something behind: {undo.problem}",)
        return err

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
        with self.checkpoint.batch():
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
        with self.checkpoint.batch():
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
        key = (operation, outcome)
        counted = self._counted.get(key)
        if counted is None:  # a metric's children are looked up once, not on every claim
            counted = self._counted[key] = (LATENCY.labels(self.driver, operation),
                                            OPERATIONS.labels(self.driver, operation, outcome))
        counted[0].observe(time.perf_counter() - started)
        counted[1].inc()
        if log.isEnabledFor(logging.INFO):
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
