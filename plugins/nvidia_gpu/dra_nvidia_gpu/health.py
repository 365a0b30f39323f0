"""GPU health from NVML events: which GPUs had a critical Xid or fell off the bus.

``HealthMonitor`` owns one daemon thread that loops on ``NvmlReader.wait_event`` and keeps, per
GPU UUID, the problems seen (``GpuProblem``: the first for the GPU, or for a MIG device of it).
The backend asks it two questions, both cheap and non-blocking:

* ``statuses(device_names)`` for ``dra_device_health`` (the kubelet's health stream), and
* ``taints(device_names)`` for ``dra_inventory``, so the scheduler stops placing claims on a
  bad device (health alone does not do that; see the kubelet gRPC notes, section 3.3).

``device_names`` maps each published device name to the UUID of the GPU it lives on; a MIG
device maps to its parent's UUID, so a problem of a GPU marks its MIG devices too.  NVML may
say that an Xid happened on one MIG device (its GPU instance and compute instance ids); the
backend can then pass ``instances`` (device name → ``(gpu instance, compute instance)``) so
that only that MIG device turns unhealthy.  Without it, or for a device not in it, such an
event counts for the whole GPU, as is safe.  When a GPU or MIG device first turns unhealthy
the monitor calls ``on_change()`` (the backend wires it to
``BackendSettings.inventory_changed``) so the tainted inventory is republished at once.

Which Xids count.  Every Xid is critical except those that NVIDIA's Kubernetes device plugin
and DRA driver treat as application errors and ignore by default (``DEFAULT_IGNORED_XIDS``):

* 13 graphics engine exception, 31 GPU memory page fault, 43 GPU stopped processing,
* 45 preemptive cleanup after previous errors, 68 video processor exception,
* 109 context switch timeout.

These come from a faulty or killed application, not from the GPU, and the GPU keeps working.
Besides Xids, the other critical NVML events count too: a double-bit ECC error, a fatal
poison error and "GPU unavailable"; a lost GPU (``GPU_IS_LOST``) is ``GPU is lost``.  An event
whose GPU UUID is empty (NVML could not say which GPU) marks every GPU, as the device plugin
does.  Other event types are logged and ignored.

No recovery.  A GPU marked unhealthy stays so until the plugin restarts: NVML does not report
that a GPU recovered, and most critical Xids need a GPU reset or reboot anyway, after which the
plugin starts afresh.  Later events for an already unhealthy GPU (or MIG device) are logged
but keep the first reason, so the taint (and the published slice) does not change.

Errors.  An exception from ``wait_event`` is logged and the loop backs off (1 s doubling to
30 s) before waiting again; the thread never dies of it.  Call ``stop()`` before closing the
reader: ``wait_event`` blocks in NVML for up to ``wait_ms``.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence

import attrs

from dra_framework.models import DeviceHealth, DeviceTaint, HealthStatus

from .types import GpuInfo, NvmlReader, XidEvent

log = logging.getLogger(__name__)

DEFAULT_IGNORED_XIDS: frozenset[int] = frozenset({13, 31, 43, 45, 68, 109})
"""Xids that are application errors, not GPU faults (as NVIDIA's device plugin ignores)."""

DEFAULT_TAINT_KEY = "gpu.nvidia.com/unhealthy"
"""Taint key when the backend passes none; the backend passes ``<driver name>/unhealthy``."""

TAINT_EFFECT = "NoSchedule"
LOST_VALUE = "lost"
LOST_MESSAGE = "GPU is lost"

XID_MEANINGS: Mapping[int, str] = {
    13: "graphics engine exception",
    31: "GPU memory page fault",
    32: "invalid or corrupted push buffer stream",
    38: "driver firmware error",
    43: "GPU stopped processing",
    45: "preemptive cleanup, due to previous errors",
    48: "double-bit ECC error",
    61: "internal micro-controller breakpoint/warning",
    62: "internal micro-controller halt",
    63: "ECC page retirement or row remapping recording event",
    64: "ECC page retirement or row remapping recording failure",
    68: "video processor exception",
    69: "graphics engine class error",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    109: "context switch timeout error",
    119: "GSP RPC timeout",
    120: "GSP error",
}
"""Well-known Xid meanings (NVIDIA's Xid catalog), used in health messages."""

# NVML event type bits (nvmlEventType*) that are critical without being an Xid.
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_FATAL_POISON = 0x2000
EVENT_GPU_UNAVAILABLE = 0x4000
OTHER_CRITICAL_EVENTS: Mapping[int, tuple[str, str]] = {
    EVENT_DOUBLE_BIT_ECC: ("double-bit ECC error", "double-bit-ecc"),
    EVENT_FATAL_POISON: ("fatal poison error", "fatal-poison"),
    EVENT_GPU_UNAVAILABLE: ("GPU unavailable", "unavailable"),
}
"""Event type → (health message, taint value) of the critical events that are not Xids."""

MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


def xid_message(xid: int) -> str:
    """``Xid 79: GPU has fallen off the bus``, or ``Xid 150`` for an Xid not in the table."""
    meaning = XID_MEANINGS.get(xid)
    return f"Xid {xid}: {meaning}" if meaning else f"Xid {xid}"


def _rfc3339(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(seconds), tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


Instance = tuple[int, int]
"""A MIG device as NVML names it on a GPU: (GPU instance id, compute instance id)."""


@attrs.frozen
class GpuProblem:
    """Why a GPU (or one MIG device of it) is unhealthy: the first critical event seen.

    ``gpu_instance`` is None when the problem is the whole GPU's; ``compute_instance`` is None
    when it is the whole GPU instance's.
    """

    gpu_uuid: str
    message: str  # "Xid 79: GPU has fallen off the bus" or "GPU is lost"
    taint_value: str  # "79" or "lost"
    since: str  # RFC 3339, when the monitor saw it
    gpu_instance: int | None = None
    compute_instance: int | None = None

    def includes(self, gpu_instance: int | None, compute_instance: int | None) -> bool:
        """Whether this problem already takes in one of ``(gpu_instance, compute_instance)``."""
        if self.gpu_instance is None:
            return True
        if gpu_instance != self.gpu_instance:
            return False
        return self.compute_instance is None or self.compute_instance == compute_instance

    def covers(self, instance: Instance | None) -> bool:
        """Whether this problem concerns a device of its GPU (``instance`` None: a full GPU,
        or a device whose MIG instance is not known, which counts as the whole GPU)."""
        return instance is None or self.includes(*instance)


def _describe(event: XidEvent) -> tuple[str, str] | None:
    """(message, taint value) of a critical event; None for an event that does not count."""
    if event.gpu_lost:
        return LOST_MESSAGE, LOST_VALUE
    if event.xid:
        return xid_message(event.xid), str(event.xid)
    return OTHER_CRITICAL_EVENTS.get(event.event_type)


class HealthMonitor:
    """Watches NVML events on a daemon thread and remembers which GPUs went bad.

    ``pool`` is the node's pool name (the node name).  ``taint_key`` is the key of the taint put
    on unhealthy devices (``<driver name>/unhealthy``).  ``wait_ms`` bounds one NVML wait, and
    so how long ``stop()`` may take.  ``autostart=False`` leaves the thread unstarted (call
    ``start()``, or feed events to ``handle()`` directly).
    """

    def __init__(
        self,
        reader: NvmlReader,
        *,
        gpus: Sequence[GpuInfo],
        on_change: Callable[[], None],
        pool: str,
        taint_key: str = DEFAULT_TAINT_KEY,
        ignored_xids: Collection[int] = DEFAULT_IGNORED_XIDS,
        clock: Callable[[], float] = time.time,
        wait_ms: int = 1000,
        autostart: bool = True,
    ) -> None:
        self._reader = reader
        self._gpus = {gpu.uuid: gpu for gpu in gpus}
        self._on_change = on_change
        self.pool = pool
        self.taint_key = taint_key
        self.ignored_xids = frozenset(ignored_xids)
        self._clock = clock
        self._wait_ms = wait_ms
        self._lock = threading.Lock()
        self._problems: dict[str, list[GpuProblem]] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        if autostart:
            self.start()

    # --- the thread ----------------------------------------------------------------------
    def start(self) -> HealthMonitor:
        """Start the watching thread (once; later calls do nothing)."""
        with self._lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="nvidia-gpu-health", daemon=True
                )
                self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread and wait for it (by default up to ``wait_ms`` plus a second)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._wait_ms / 1000 + 1 if timeout is None else timeout)
            if thread.is_alive():
                log.warning("health monitor did not stop in time; NVML wait still blocked")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        backoff = MIN_BACKOFF_S
        while not self._stopping.is_set():
            try:
                event = self._reader.wait_event(self._wait_ms)
            except Exception as exc:  # NVML errors must never end health watching
                log.warning(
                    "NVML event wait failed; retrying",
                    extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": backoff},
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = MIN_BACKOFF_S
            if event is not None and not self._stopping.is_set():
                self.handle(event)

    # --- events ----------------------------------------------------------------------------
    def handle(self, event: XidEvent) -> bool:
        """Record one event; True (and ``on_change()`` called) when something turned unhealthy."""
        where = {"gpu_uuid": event.gpu_uuid, "xid": event.xid, "event_type": event.event_type,
                 "gpu_instance": event.gpu_instance_id,
                 "compute_instance": event.compute_instance_id}
        if not event.gpu_lost and event.xid in self.ignored_xids:
            log.info("application Xid ignored", extra={**where, "detail": xid_message(event.xid)})
            return False
        described = _describe(event)
        if described is None:
            log.info("NVML event ignored: not a critical event", extra=where)
            return False
        message, value = described
        gi = None if event.gpu_lost else event.gpu_instance_id
        ci = None if gi is None else event.compute_instance_id
        if gi is not None:
            message += f" (MIG GPU instance {gi}" + (f", compute instance {ci})" if ci is not None
                                                     else ")")
        uuids = [event.gpu_uuid] if event.gpu_uuid else list(self._gpus)
        since = _rfc3339(self._clock())
        changed = []
        with self._lock:
            for uuid in uuids:
                known = self._problems.setdefault(uuid, [])
                if any(p.includes(gi, ci) for p in known):
                    continue
                known.append(GpuProblem(gpu_uuid=uuid, message=message, taint_value=value,
                                        since=since, gpu_instance=gi, compute_instance=ci))
                changed.append(uuid)
        for uuid in uuids:
            gpu = self._gpus.get(uuid)
            extra = {**where, "gpu_uuid": uuid, "gpu_index": gpu.index if gpu else None,
                     "detail": message}
            if uuid in changed:
                log.error("GPU marked unhealthy", extra=extra)
            else:
                log.warning("critical event on a GPU already unhealthy", extra=extra)
        if not changed:
            return False
        try:
            self._on_change()
        except Exception:
            log.exception("health change callback failed")
        return True

    # --- answers -----------------------------------------------------------------------------
    def problems(self) -> dict[str, tuple[GpuProblem, ...]]:
        """GPU UUID → its problems, in the order seen (only GPUs that have some)."""
        with self._lock:
            return {uuid: tuple(found) for uuid, found in self._problems.items() if found}

    def _problem_of(self, problems: Mapping[str, Sequence[GpuProblem]], uuid: str,
                    instance: Instance | None) -> GpuProblem | None:
        return next((p for p in problems.get(uuid, ()) if p.covers(instance)), None)

    def statuses(self, device_names: Mapping[str, str], *,
                 instances: Mapping[str, Instance] | None = None) -> list[DeviceHealth]:
        """The health of each device (name → GPU UUID), in the mapping's order.

        ``instances`` (device name → MIG instance) narrows MIG-scoped events to their device.
        """
        problems = self.problems()
        out = []
        for name, uuid in device_names.items():
            problem = self._problem_of(problems, uuid, (instances or {}).get(name))
            out.append(DeviceHealth(
                pool=self.pool, device=name,
                health=HealthStatus.UNHEALTHY if problem else HealthStatus.HEALTHY,
                message=problem.message if problem else ""))
        return out

    def taints(self, device_names: Mapping[str, str], *,
               instances: Mapping[str, Instance] | None = None) -> dict[str, DeviceTaint]:
        """Device name → the ``NoSchedule`` taint of each unhealthy device (others absent)."""
        problems = self.problems()
        out = {}
        for name, uuid in device_names.items():
            problem = self._problem_of(problems, uuid, (instances or {}).get(name))
            if problem is not None:
                out[name] = DeviceTaint(key=self.taint_key, value=problem.taint_value,
                                        effect=TAINT_EFFECT, time_added=problem.since)
        return out
