"""HealthMonitor: critical and ignored Xids, lost GPUs, MIG devices, NVML errors, stopping."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from dra_nvidia_gpu import health
from dra_nvidia_gpu.health import HealthMonitor, xid_message
from dra_nvidia_gpu.types import DriverInfo, GpuInfo, MigDevice, MigProfile, XidEvent

from dra_framework.models import DeviceTaint, HealthStatus
from dra_framework.testing.harness import wait_for

XID_CRITICAL = 0x8  # nvmlEventTypeXidCriticalError


def _gpu(index: int) -> GpuInfo:
    return GpuInfo(index=index, minor=index, uuid=f"GPU-{index:08d}-0000-0000-0000-000000000000",
                   name="NVIDIA H100 80GB HBM3", brand="Nvidia", architecture="Hopper",
                   cuda_compute_capability=(9, 0), memory_bytes=85520809984,
                   pci_bus_id=f"0000:00:0{index}.0", mig_enabled=False)


GPUS = [_gpu(0), _gpu(1)]
NAMES = {"gpu-0": GPUS[0].uuid, "gpu-1": GPUS[1].uuid}


class StubReader:
    """An NvmlReader whose ``wait_event`` hands out scripted events (or raises them)."""

    def __init__(self) -> None:
        self.events: queue.Queue[XidEvent | BaseException] = queue.Queue()
        self.waits = 0

    def driver(self) -> DriverInfo:
        return DriverInfo(driver_version="580.159.04", cuda_driver_version="13.0")

    def gpus(self) -> Sequence[GpuInfo]:
        return GPUS

    def mig_profiles(self, gpu: GpuInfo) -> Sequence[MigProfile]:
        return ()

    def mig_devices(self, gpu: GpuInfo) -> Sequence[MigDevice]:
        return ()

    def wait_event(self, timeout_ms: int) -> XidEvent | None:
        self.waits += 1
        try:
            item = self.events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        pass


class Changes:
    def __init__(self) -> None:
        self.count = 0
        self.seen = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.seen.set()


def _xid(gpu: GpuInfo | None, xid: int) -> XidEvent:
    return XidEvent(gpu_uuid=gpu.uuid if gpu else "", xid=xid, event_type=XID_CRITICAL)


def _monitor(reader: StubReader | None = None, **kwargs: Any) -> tuple[HealthMonitor, Changes]:
    changes = Changes()
    monitor = HealthMonitor(reader or StubReader(), gpus=GPUS, on_change=changes, pool="node-a",
                            taint_key="gpu.example.com/unhealthy", clock=lambda: 1_700_000_000.0,
                            wait_ms=50, autostart=False, **kwargs)
    return monitor, changes


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    wait_for("the condition", condition, timeout=timeout, interval=0.01)


Running = tuple[StubReader, HealthMonitor, Changes]


@pytest.fixture
def running() -> Iterator[Running]:
    reader = StubReader()
    monitor, changes = _monitor(reader)
    monitor.start()
    yield reader, monitor, changes
    monitor.stop()


def test_critical_xid_marks_gpu_unhealthy_taints_it_and_signals_once(running: Running) -> None:
    reader, monitor, changes = running
    reader.events.put(_xid(GPUS[1], 79))
    assert changes.seen.wait(5)
    assert monitor.statuses(NAMES)[1].health is HealthStatus.UNHEALTHY
    assert monitor.statuses(NAMES)[1].message == "Xid 79: GPU has fallen off the bus"
    assert monitor.taints(NAMES) == {"gpu-1": DeviceTaint(
        key="gpu.example.com/unhealthy", value="79", effect="NoSchedule",
        time_added="2023-11-14T22:13:20Z")}
    # A second critical Xid on the same GPU keeps the first reason and signals nothing.
    reader.events.put(_xid(GPUS[1], 48))
    _wait_for(lambda: reader.events.empty() and reader.waits >= 3)
    assert changes.count == 1
    assert monitor.statuses(NAMES)[1].message == "Xid 79: GPU has fallen off the bus"


def test_other_devices_stay_healthy_with_empty_messages() -> None:
    monitor, _ = _monitor()
    monitor.handle(_xid(GPUS[0], 94))
    by_name = {s.device: s for s in monitor.statuses(NAMES)}
    assert by_name["gpu-0"].health is HealthStatus.UNHEALTHY
    assert by_name["gpu-0"].message == "Xid 94: contained ECC error"
    assert by_name["gpu-1"].health is HealthStatus.HEALTHY
    assert by_name["gpu-1"].message == ""
    assert {s.pool for s in by_name.values()} == {"node-a"}
    assert list(monitor.taints(NAMES)) == ["gpu-0"]


@pytest.mark.parametrize("xid", sorted(health.DEFAULT_IGNORED_XIDS), ids=lambda x: f"xid-{x}")
def test_application_xids_are_ignored(xid: int) -> None:
    monitor, changes = _monitor()
    assert monitor.handle(_xid(GPUS[0], xid)) is False
    assert changes.count == 0
    assert all(s.health is HealthStatus.HEALTHY for s in monitor.statuses(NAMES))
    assert monitor.taints(NAMES) == {}


def test_ignored_set_is_configurable() -> None:
    monitor, changes = _monitor(ignored_xids={79})
    assert monitor.handle(_xid(GPUS[0], 79)) is False
    assert monitor.handle(_xid(GPUS[0], 31)) is True
    assert changes.count == 1
    assert monitor.statuses(NAMES)[0].message == "Xid 31: GPU memory page fault"


def test_non_critical_event_is_ignored() -> None:
    monitor, changes = _monitor()
    single_bit_ecc = 0x1
    assert monitor.handle(XidEvent(gpu_uuid=GPUS[0].uuid, xid=0, event_type=single_bit_ecc)) \
        is False
    assert changes.count == 0


@pytest.mark.parametrize(("event_type", "message", "value"), [
    (0x2, "double-bit ECC error", "double-bit-ecc"),
    (0x2000, "fatal poison error", "fatal-poison"),
    (0x4000, "GPU unavailable", "unavailable"),
], ids=["double-bit-ecc", "fatal-poison", "gpu-unavailable"])
def test_other_critical_events(event_type: int, message: str, value: str) -> None:
    monitor, changes = _monitor()
    assert monitor.handle(XidEvent(gpu_uuid=GPUS[0].uuid, xid=0, event_type=event_type))
    assert changes.count == 1
    assert monitor.statuses(NAMES)[0].message == message
    assert monitor.taints(NAMES)["gpu-0"].value == value


def test_lost_gpu_is_unhealthy_with_lost_taint() -> None:
    monitor, changes = _monitor()
    assert monitor.handle(XidEvent(gpu_uuid=GPUS[0].uuid, xid=0, event_type=0, gpu_lost=True))
    assert changes.count == 1
    status = monitor.statuses(NAMES)[0]
    assert (status.health, status.message) == (HealthStatus.UNHEALTHY, "GPU is lost")
    assert monitor.taints(NAMES)["gpu-0"].value == "lost"


def test_event_without_uuid_marks_every_gpu() -> None:
    monitor, changes = _monitor()
    assert monitor.handle(_xid(None, 79))
    assert changes.count == 1
    assert [s.health for s in monitor.statuses(NAMES)] == [HealthStatus.UNHEALTHY] * 2


def test_mig_devices_follow_their_parent_gpu() -> None:
    monitor, _ = _monitor()
    names = {"gpu-0": GPUS[0].uuid, "gpu-0-mig-1g10gb-0": GPUS[0].uuid,
             "gpu-0-mig-3g40gb-1": GPUS[0].uuid, "gpu-1-mig-1g10gb-0": GPUS[1].uuid}
    monitor.handle(_xid(GPUS[0], 95))
    health_of = {s.device: s.health for s in monitor.statuses(names)}
    assert health_of == {"gpu-0": HealthStatus.UNHEALTHY,
                         "gpu-0-mig-1g10gb-0": HealthStatus.UNHEALTHY,
                         "gpu-0-mig-3g40gb-1": HealthStatus.UNHEALTHY,
                         "gpu-1-mig-1g10gb-0": HealthStatus.HEALTHY}
    assert sorted(monitor.taints(names)) == ["gpu-0", "gpu-0-mig-1g10gb-0", "gpu-0-mig-3g40gb-1"]


MIG_NAMES = {"gpu-0-mig-1g10gb-4": GPUS[0].uuid, "gpu-0-mig-1g10gb-5": GPUS[0].uuid,
             "gpu-0-mig-3g40gb-0": GPUS[0].uuid, "gpu-1-mig-7g80gb-0": GPUS[1].uuid}
MIG_INSTANCES = {"gpu-0-mig-1g10gb-4": (7, 0), "gpu-0-mig-1g10gb-5": (8, 0),
                 "gpu-0-mig-3g40gb-0": (2, 0), "gpu-1-mig-7g80gb-0": (0, 0)}


def _mig_xid(xid: int, gi: int, ci: int | None = None) -> XidEvent:
    return XidEvent(gpu_uuid=GPUS[0].uuid, xid=xid, event_type=XID_CRITICAL,
                    gpu_instance_id=gi, compute_instance_id=ci)


def test_mig_scoped_xid_marks_only_its_mig_device_when_instances_are_known() -> None:
    monitor, changes = _monitor()
    assert monitor.handle(_mig_xid(94, 7, 0))
    statuses = {s.device: s for s in monitor.statuses(MIG_NAMES, instances=MIG_INSTANCES)}
    assert [n for n, s in statuses.items() if s.health is HealthStatus.UNHEALTHY] == [
        "gpu-0-mig-1g10gb-4"]
    assert statuses["gpu-0-mig-1g10gb-4"].message == (
        "Xid 94: contained ECC error (MIG GPU instance 7, compute instance 0)")
    assert list(monitor.taints(MIG_NAMES, instances=MIG_INSTANCES)) == ["gpu-0-mig-1g10gb-4"]
    # Without instances, the event counts for every device of the GPU.
    assert sorted(monitor.taints(MIG_NAMES)) == [
        "gpu-0-mig-1g10gb-4", "gpu-0-mig-1g10gb-5", "gpu-0-mig-3g40gb-0"]
    # The same instance again changes nothing; another instance, then the GPU, do.
    assert monitor.handle(_mig_xid(95, 7, 0)) is False
    assert monitor.handle(_mig_xid(94, 2))
    assert monitor.handle(_xid(GPUS[0], 79))
    assert monitor.handle(_mig_xid(94, 8, 0)) is False
    assert changes.count == 3
    unhealthy = [s.device for s in monitor.statuses(MIG_NAMES, instances=MIG_INSTANCES)
                 if s.health is HealthStatus.UNHEALTHY]
    assert unhealthy == ["gpu-0-mig-1g10gb-4", "gpu-0-mig-1g10gb-5", "gpu-0-mig-3g40gb-0"]
    # Each device keeps the first problem that concerned it.
    by_name = {s.device: s.message for s in monitor.statuses(MIG_NAMES, instances=MIG_INSTANCES)}
    assert by_name["gpu-0-mig-1g10gb-5"] == "Xid 79: GPU has fallen off the bus"
    assert by_name["gpu-0-mig-3g40gb-0"] == "Xid 94: contained ECC error (MIG GPU instance 2)"


def test_errors_from_wait_event_are_survived(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "MIN_BACKOFF_S", 0.01)
    monkeypatch.setattr(health, "MAX_BACKOFF_S", 0.02)
    reader = StubReader()
    for _ in range(3):
        reader.events.put(RuntimeError("NVML_ERROR_UNKNOWN"))
    reader.events.put(_xid(GPUS[0], 79))
    monitor, changes = _monitor(reader)
    monitor.start()
    try:
        assert changes.seen.wait(5)
        assert monitor.running
        assert monitor.statuses(NAMES)[0].health is HealthStatus.UNHEALTHY
    finally:
        monitor.stop()


def test_on_change_failure_does_not_stop_watching(running: Running) -> None:
    reader, monitor, _ = running
    calls = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("publisher gone")

    monitor._on_change = broken
    reader.events.put(_xid(GPUS[0], 79))
    reader.events.put(_xid(GPUS[1], 79))
    _wait_for(lambda: len(calls) == 2)
    assert monitor.running


def test_stop_is_prompt_and_idempotent() -> None:
    monitor, _ = _monitor()
    monitor.start()
    assert monitor.running
    started = time.monotonic()
    monitor.stop()
    assert time.monotonic() - started < 1.0
    assert not monitor.running
    monitor.stop()
    monitor.start()  # a stopped monitor does not start again
    assert not monitor.running


def test_autostart_runs_the_thread() -> None:
    changes = Changes()
    monitor = HealthMonitor(StubReader(), gpus=GPUS, on_change=changes, pool="n", wait_ms=20)
    try:
        assert monitor.running
        assert monitor.taint_key == "gpu.nvidia.com/unhealthy"
    finally:
        monitor.stop()


@pytest.mark.parametrize(("xid", "message"), [
    (79, "Xid 79: GPU has fallen off the bus"),
    (48, "Xid 48: double-bit ECC error"),
    (119, "Xid 119: GSP RPC timeout"),
    (9999, "Xid 9999"),
], ids=["known", "ecc", "gsp", "unknown"])
def test_xid_message(xid: int, message: str) -> None:
    assert xid_message(xid) == message


def test_taints_validate_as_resource_slice_taints() -> None:
    from dra_framework.api.slices import taint_json
    from dra_framework.api.slicevalidation import device_problems

    monitor, _ = _monitor()
    monitor.handle(_xid(GPUS[0], 79))
    monitor.handle(XidEvent(gpu_uuid=GPUS[1].uuid, xid=0, event_type=0, gpu_lost=True))
    for name, taint in monitor.taints(NAMES).items():
        assert device_problems({"name": name, "taints": [taint_json(taint)]}) == []


# --- with the real reader over the fake NVML -------------------------------------------------
def test_real_reader_xid_and_lost_gpu_end_to_end() -> None:
    testing = pytest.importorskip("dra_nvidia_gpu.testing")
    nvml = pytest.importorskip("dra_nvidia_gpu.nvml")
    fake = testing.FakePynvml.synthetic(gpus=2)
    reader = nvml.PynvmlReader(module=fake)
    try:
        gpus = list(reader.gpus())
        names = {f"gpu-{g.index}": g.uuid for g in gpus}
        changes = Changes()
        monitor = HealthMonitor(reader, gpus=gpus, on_change=changes, pool="node-a",
                                wait_ms=20)
        try:
            fake.inject_xid(0, 13)  # an application error: ignored
            fake.inject_xid(0, 79)
            _wait_for(lambda: changes.count == 1)
            fake.lose_gpu(1)
            _wait_for(lambda: changes.count == 2)
        finally:
            monitor.stop()
        assert [(s.device, s.health, s.message) for s in monitor.statuses(names)] == [
            ("gpu-0", HealthStatus.UNHEALTHY, "Xid 79: GPU has fallen off the bus"),
            ("gpu-1", HealthStatus.UNHEALTHY, "GPU is lost"),
        ]
        assert {n: t.value for n, t in monitor.taints(names).items()} == {
            "gpu-0": "79", "gpu-1": "lost"}
    finally:
        reader.close()


# --- the real-GPU check script, on the fake NVML ----------------------------------------------
def test_real_gpu_check_runs_on_the_fake_nvml() -> None:
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("dra_nvidia_gpu.testing")
    pytest.importorskip("dra_nvidia_gpu.fakehost")
    script = Path(__file__).resolve().parents[1] / "scripts" / "real_gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--fake", "--node-name", "node-a"],
                          capture_output=True, text=True, timeout=60)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for header in ("== (a) NVML driver and GPUs ==", "== (b) ResourceSlice devices ==",
                   "== (c) CDI spec for a claim holding GPU 0 ==", "== (d) timings ==",
                   "== (e) health: one 2 s event wait =="):
        assert header in out
    assert "driver 580.159.04, CUDA 13.0, 1 GPU(s)" in out
    assert '"name": "gpu-0"' in out
    assert "1 device(s); validation: no problems" in out
    assert '"cdiVersion"' in out and "-gpu-0" in out
    assert "host paths missing: none" in out
    assert "nvml_init" in out and "inventory" in out and "cdi_common_edits" in out
    assert "no event (timeout)" in out and "gpu-0: HEALTHY" in out
    assert "\n(a) ok\n(b) ok\n(c) ok\n(d) ok\n(e) ok\n" in out
