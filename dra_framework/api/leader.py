"""Lease-based leader election, interoperable with client-go's ``leaderelection`` package.

A controller running in several replicas lets one of them act at a time.  ``LeaderElector``
holds a ``coordination.k8s.io/v1`` Lease with the same fields, formats and rules as client-go's
``LeaseLock``, so a Go controller and a Python one contending for the same Lease respect each
other:

* ``spec.holderIdentity``, ``leaseDurationSeconds`` (whole seconds), ``acquireTime`` and
  ``renewTime`` (MicroTime, ``2006-01-02T15:04:05.000000Z``) and ``leaseTransitions`` (bumped
  on every change of holder).
* Remote clocks are never trusted.  An elector notes on its *own* monotonic clock when it last
  saw the lease record change; the holder's lease has expired once ``leaseDurationSeconds``
  have passed since then without a change.  ``renewTime`` only serves to see that change.
* Every write carries the resourceVersion of the last read, so of two electors racing for an
  expired lease one gets 409 Conflict and simply tries again later.
* The leader renews every ``retry_period``; when renewals have failed for ``renew_deadline`` it
  stops leading (``renew_deadline < lease_duration``, so it stops before anyone else can take
  over).  On ``stop()`` with ``release_on_cancel`` it clears ``holderIdentity`` and sets
  ``leaseDurationSeconds`` to 1, which lets a standby take over at once.

Differences from client-go, all on the caller's side of the API: the work callback gets a
``threading.Event`` (set when leadership ends) instead of a context; ``on_stopped_leading`` is
only called after a term of leadership; a leader that sees another holder in the Lease stops at
once instead of at the renew deadline; after losing the lease the elector waits for the work
callback to return and then contends again until ``stop()`` (client-go's ``Run`` returns).
API errors (unreachable, 5xx, 409...) are logged and retried, never raised.
"""

from __future__ import annotations

import datetime
import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from prometheus_client import Gauge

from .rest import ApiError, KubeApi, path

__all__ = ["JITTER_FACTOR", "LEADER", "Clock", "LeaderElector", "default_identity",
           "microtime"]

log = logging.getLogger(__name__)

LEADER = Gauge(
    "dra_framework_leader",
    "1 while this process holds the leader election lease, else 0.",
    ["lease", "identity"],
)

JITTER_FACTOR = 1.2
"""Contending electors wait ``retry_period * (1 + random() * JITTER_FACTOR)``, as client-go."""

_GROUP_VERSION = "coordination.k8s.io/v1"
_MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def microtime(when: datetime.datetime) -> str:
    """``when`` (timezone-aware) as a Kubernetes MicroTime: ``2006-01-02T15:04:05.000000Z``."""
    return when.astimezone(datetime.timezone.utc).strftime(_MICROTIME)


def default_identity() -> str:
    """``<hostname>_<uuid4>``: unique per elector, as Kubernetes' own controllers name theirs."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


class Clock:
    """Where an elector reads time: ``monotonic`` to age what it observed, ``now`` (aware,
    wall clock) for the timestamps it writes.  Tests subclass it to skew either."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.timezone.utc)


def _record(lease: Mapping[str, Any]) -> dict[str, Any]:
    """The leader election record of a Lease, with client-go's defaults for missing fields."""
    spec = lease.get("spec") or {}
    return {
        "holderIdentity": str(spec.get("holderIdentity") or ""),
        "leaseDurationSeconds": int(spec.get("leaseDurationSeconds") or 0),
        "acquireTime": spec.get("acquireTime"),
        "renewTime": spec.get("renewTime"),
        "leaseTransitions": int(spec.get("leaseTransitions") or 0),
    }


def _noop_stopped() -> None:
    pass


class LeaderElector:
    """Elects one leader among the holders of Lease ``<namespace>/<name>``.

    ``on_started_leading(stop)`` runs in its own thread whenever this elector becomes leader;
    ``stop`` is set when leadership ends, and the callback should then wind its work down and
    return.  ``on_stopped_leading()`` runs in the elector's thread after a term ends.  Either
    ``run()`` (blocking until ``stop()``) or ``start()``/``stop()`` (a daemon thread).
    """

    def __init__(
        self,
        *,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[threading.Event], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        release_on_cancel: bool = True,
        clock: Clock | None = None,
    ) -> None:
        lease_seconds = int(lease_duration)
        if lease_seconds < 1:
            raise ValueError("lease_duration must be at least 1 second (it is written in whole "
                             "seconds)")
        if lease_seconds <= renew_deadline:
            raise ValueError(f"lease_duration ({lease_seconds} s in whole seconds) must be "
                             f"greater than renew_deadline ({renew_deadline} s)")
        if retry_period <= 0 or renew_deadline <= JITTER_FACTOR * retry_period:
            raise ValueError(f"renew_deadline ({renew_deadline} s) must be greater than "
                             f"{JITTER_FACTOR} * retry_period ({retry_period} s), which must be "
                             "positive")
        if identity is not None and not identity:
            raise ValueError("identity must not be empty")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration = float(lease_seconds)
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_cancel = release_on_cancel
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading or _noop_stopped
        self._clock = clock or Clock()
        self._rng = random.Random()
        self._path = path(group_version=_GROUP_VERSION, resource="leases",
                          namespace=namespace, name=name)
        self._collection = path(group_version=_GROUP_VERSION, resource="leases",
                                namespace=namespace)
        self._lease: dict[str, Any] | None = None  # the object of the last read or write
        self._observed: dict[str, Any] | None = None
        self._observed_at = 0.0
        self._leading = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self._gauge = LEADER.labels(lease=f"{namespace}/{name}", identity=self.identity)
        self._gauge.set(0)

    # -- public face ---------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """True while this elector leads (from acquiring the lease until the term ends)."""
        return self._leading

    @property
    def holder(self) -> str:
        """The holder identity last seen in the Lease ("" when none or released)."""
        return str(self._observed["holderIdentity"]) if self._observed else ""

    def run(self) -> None:
        """Contend, lead, and contend again after a lost term, until ``stop()``."""
        try:
            while not self._stopping.is_set():
                if self._acquire():
                    self._lead()
                worker = self._worker
                while worker is not None and worker.is_alive() and not self._stopping.is_set():
                    worker.join(self.retry_period)  # the last term's work ends first
        finally:
            self._set_leading(False)

    def start(self) -> LeaderElector:
        """Run the elector in a daemon thread; returns ``self``."""
        if self._thread is not None:
            raise RuntimeError("this LeaderElector was already started")
        self._thread = threading.Thread(target=self.run, name=f"leader-elector-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, *, timeout: float | None = None) -> None:
        """End the election: a leader stops its work, releases the lease if
        ``release_on_cancel`` and calls ``on_stopped_leading``.  Waits for the elector thread
        started by ``start()`` (up to ``timeout``), unless called from the work callback."""
        self._stopping.set()
        current = threading.current_thread()
        if self._thread is not None and current not in (self._thread, self._worker):
            self._thread.join(timeout)

    def __enter__(self) -> LeaderElector:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- the election --------------------------------------------------------------------
    def _extra(self, **more: Any) -> dict[str, Any]:
        return {"lease": f"{self.namespace}/{self.name}", "identity": self.identity, **more}

    def _set_leading(self, leading: bool) -> None:
        self._leading = leading
        self._gauge.set(1 if leading else 0)

    def _acquire(self) -> bool:
        log.info("attempting to acquire leader lease", extra=self._extra())
        while not self._stopping.is_set():
            if self._attempt(deadline=None):
                return True
            jitter = self._rng.random() * JITTER_FACTOR * self.retry_period
            self._stopping.wait(self.retry_period + jitter)
        return False

    def _lead(self) -> None:
        self._set_leading(True)
        log.info("acquired leader lease, leading", extra=self._extra(
            transitions=self._observed["leaseTransitions"] if self._observed else 0))
        stop = threading.Event()
        self._worker = threading.Thread(target=self._work, args=(stop,), daemon=True,
                                        name=f"leader-{self.name}")
        self._worker.start()
        cancelled = self._renew_until_lost()
        stop.set()
        self._set_leading(False)
        if cancelled and self.release_on_cancel:
            # Release only once the work has ended, and while the lease is surely still ours.
            self._worker.join(max(0.0, self._observed_at + self.renew_deadline
                                  - self._clock.monotonic()))
            if self._worker.is_alive():
                log.warning("work still running after stop, leaving the lease to expire",
                            extra=self._extra())
            else:
                self._release()
        log.info("stopped leading", extra=self._extra(cancelled=cancelled))
        try:
            self._on_stopped()
        except Exception:
            log.exception("on_stopped_leading failed", extra=self._extra())

    def _work(self, stop: threading.Event) -> None:
        if self._on_started is None:
            return
        try:
            self._on_started(stop)
        except Exception:
            log.exception("on_started_leading failed", extra=self._extra())

    def _renew_until_lost(self) -> bool:
        """Renew every retry_period; True when stopped, False when the lease was lost."""
        while not self._stopping.wait(self.retry_period):
            deadline = self._clock.monotonic() + self.renew_deadline
            while not self._attempt(deadline=deadline):
                if not self._holds():
                    log.warning("leader lease taken over", extra=self._extra(holder=self.holder))
                    return False
                if self._clock.monotonic() >= deadline:
                    log.warning("failed to renew leader lease within renew_deadline",
                                extra=self._extra(renew_deadline=self.renew_deadline))
                    return False
                if self._stopping.wait(self.retry_period):
                    return True
        return True

    def _attempt(self, *, deadline: float | None) -> bool:
        timeout = None if deadline is None else max(0.1, deadline - self._clock.monotonic())
        try:
            return self._try_acquire_or_renew(timeout)
        except ApiError as exc:
            log.warning("leader lease request failed", extra=self._extra(
                code=exc.code, error=str(exc)))
        except Exception:
            log.exception("leader lease attempt failed", extra=self._extra())
        return False

    def _holds(self) -> bool:
        return self.holder == self.identity

    def _valid(self, now: float) -> bool:
        duration = self._observed["leaseDurationSeconds"] if self._observed else 0
        return bool(self._observed_at + duration > now)

    def _observe(self, record: dict[str, Any]) -> None:
        if record == self._observed:
            return
        if record["holderIdentity"] != self.holder and record["holderIdentity"] not in (
                "", self.identity):
            log.info("new leader observed", extra=self._extra(holder=record["holderIdentity"]))
        self._observed = record
        self._observed_at = self._clock.monotonic()

    def _try_acquire_or_renew(self, timeout: float | None) -> bool:
        """client-go's ``tryAcquireOrRenew``: True when the lease is ours after the call."""
        now_mono, now = self._clock.monotonic(), microtime(self._clock.now())
        wanted = {"holderIdentity": self.identity,
                  "leaseDurationSeconds": int(self.lease_duration),
                  "acquireTime": now, "renewTime": now, "leaseTransitions": 0}
        # 1. A leader updates optimistically, assuming the lease it last saw is current.
        if self._holds() and self._valid(now_mono) and self._lease is not None:
            assert self._observed is not None
            wanted["acquireTime"] = self._observed["acquireTime"]
            wanted["leaseTransitions"] = self._observed["leaseTransitions"]
            try:
                self._write(wanted, timeout)
                return True
            except ApiError as exc:
                log.info("optimistic lease renewal failed, reading the lease",
                         extra=self._extra(code=exc.code, error=str(exc)))
        # 2. Read the lease, or create it.
        try:
            lease = self.api.get(self._path, timeout=timeout)
        except ApiError as exc:
            if exc.code != 404:
                raise
            body = {"apiVersion": _GROUP_VERSION, "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": wanted}
            self._lease = self.api.create(self._collection, body, timeout=timeout)
            self._observe(_record(self._lease))
            return True
        # 3. Someone else's unexpired lease is left alone.
        self._lease = lease
        record = _record(lease)
        self._observe(record)
        if record["holderIdentity"] and self._valid(now_mono) and not self._holds():
            return False
        # 4. Take the lease over, or renew it.
        if self._holds():
            wanted["acquireTime"] = record["acquireTime"]
            wanted["leaseTransitions"] = record["leaseTransitions"]
        else:
            wanted["leaseTransitions"] = record["leaseTransitions"] + 1
        self._write(wanted, timeout)
        return True

    def _write(self, record: Mapping[str, Any], timeout: float | None) -> None:
        """Replace the lease's record, with the resourceVersion last read (409 if stale)."""
        assert self._lease is not None
        body = dict(self._lease)
        body["spec"] = {**(self._lease.get("spec") or {}), **record}
        self._lease = self.api.replace(self._path, body, timeout=timeout)
        self._observe(_record(self._lease))

    def _release(self) -> None:
        """Clear the holder so that a standby takes over at once (client-go's ``release``)."""
        try:
            self._lease = self.api.get(self._path, timeout=self.renew_deadline)
            self._observe(_record(self._lease))
            if not self._holds():
                return
            now = microtime(self._clock.now())
            assert self._observed is not None
            self._write({"holderIdentity": "", "leaseDurationSeconds": 1,
                         "acquireTime": now, "renewTime": now,
                         "leaseTransitions": self._observed["leaseTransitions"]},
                        self.renew_deadline)
        except ApiError as exc:
            log.warning("failed to release leader lease", extra=self._extra(
                code=exc.code, error=str(exc)))
            return
        log.info("released leader lease", extra=self._extra())
