"""Creating MIG devices at prepare (``create_mig``): the NVML calls on the fake, the fake
host's capability files, and the backend end to end through the kubelet socket."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dra_nvidia_gpu.backend import NvidiaGpuBackend
from dra_nvidia_gpu.cdiedits import HostLayout
from dra_nvidia_gpu.fakehost import add_mig_capabilities, remove_mig_capabilities
from dra_nvidia_gpu.nvml import (
    ERROR_IN_USE,
    ERROR_INSUFFICIENT_RESOURCES,
    ERROR_NOT_SUPPORTED,
    NvmlError,
    PynvmlReader,
)
from dra_nvidia_gpu.testing import (
    NVML_ERROR_IN_USE,
    NVML_ERROR_INSUFFICIENT_RESOURCES,
    NVML_ERROR_NOT_SUPPORTED,
    FakePynvml,
    NVMLError,
    c_nvmlGpuInstancePlacement_t,
)
from dra_nvidia_gpu.types import GpuInfo, MigProfile

from dra_framework import (
    AllocatedDevice,
    BackendError,
    BackendSettings,
    ClaimRef,
    ConfigError,
    PreparedDevice,
)
from dra_framework.testing.claims import Result, allocated_claim
from dra_framework.testing.fakeapi import FakeApiServer
from dra_framework.testing.harness import PluginHarness, wait_for

DRIVER = "gpu.nvidia.dra-framework.io"


# --- NVML on the fake --------------------------------------------------------------------
@pytest.fixture
def mig_nvml(fake_nvml: Callable[..., FakePynvml],
             nvml_reader: Callable[..., PynvmlReader]) -> tuple[FakePynvml, PynvmlReader]:
    """Two synthetic H100s with MIG mode on; GPU 0 holds 3g.40gb at 0, 1g.10gb at 4 and 5."""
    fake = fake_nvml(gpus=2, mig=True)
    return fake, nvml_reader(fake)


def _gpu(reader: PynvmlReader, index: int) -> GpuInfo:
    return next(g for g in reader.gpus() if g.index == index)


def _profile(reader: PynvmlReader, gpu: GpuInfo, name: str) -> MigProfile:
    return next(p for p in reader.mig_profiles(gpu) if p.name == name)


def _create(reader: PynvmlReader, index: int, profile: str, start: int) -> Any:
    gpu = _gpu(reader, index)
    p = _profile(reader, gpu, profile)
    placement = next(pl for pl in p.placements if pl.start == start)
    return reader.create_mig(gpu, p, placement)


def test_create_mig_makes_a_listed_mig_device(
        mig_nvml: tuple[FakePynvml, PynvmlReader]) -> None:
    _, reader = mig_nvml
    mig = _create(reader, 1, "3g.40gb", 4)
    assert mig.uuid.startswith("MIG-") and mig.profile == "3g.40gb"
    assert (mig.placement.start, mig.placement.size) == (4, 4)
    assert mig.compute_instance_id == 0 and mig.parent_index == 1
    assert reader.mig_devices(_gpu(reader, 1)) == [mig]


def test_create_mig_on_an_overlapping_placement_is_refused(
        mig_nvml: tuple[FakePynvml, PynvmlReader]) -> None:
    fake, reader = mig_nvml
    with pytest.raises(NvmlError, match="placement is taken") as info:
        _create(reader, 0, "1g.10gb", 2)  # inside the 3g.40gb at 0..3
    assert info.value.code == ERROR_INSUFFICIENT_RESOURCES
    assert len(reader.mig_devices(_gpu(reader, 0))) == 3
    # the fake itself, as pynvml would be called
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(NVMLError) as raw:
        fake.nvmlDeviceCreateGpuInstanceWithPlacement(handle, 19,
                                                      c_nvmlGpuInstancePlacement_t(5, 1))
    assert raw.value.value == NVML_ERROR_INSUFFICIENT_RESOURCES


def test_create_mig_with_mig_mode_off_is_refused(
        mig_nvml: tuple[FakePynvml, PynvmlReader]) -> None:
    fake, reader = mig_nvml
    fake.set_mig_mode(1, False)
    with pytest.raises(NvmlError, match="MIG mode is off") as info:
        _create(reader, 1, "1g.10gb", 0)
    assert info.value.code == ERROR_NOT_SUPPORTED
    with pytest.raises(NVMLError) as raw:
        fake.nvmlDeviceCreateGpuInstanceWithPlacement(
            fake.nvmlDeviceGetHandleByIndex(1), 19, c_nvmlGpuInstancePlacement_t(0, 1))
    assert raw.value.value == NVML_ERROR_NOT_SUPPORTED
    assert fake.gpus[1].mig == []


def test_destroy_mig_is_idempotent(mig_nvml: tuple[FakePynvml, PynvmlReader]) -> None:
    fake, reader = mig_nvml
    mig = _create(reader, 1, "2g.20gb", 2)
    gpu = _gpu(reader, 1)
    reader.destroy_mig(gpu, mig.gpu_instance_id, mig.compute_instance_id)
    assert reader.mig_devices(gpu) == [] and fake.gpus[1].mig == []
    reader.destroy_mig(gpu, mig.gpu_instance_id, mig.compute_instance_id)  # gone: no error
    reader.destroy_mig(gpu, 42, 0)
    fake.set_mig_mode(1, False)
    reader.destroy_mig(gpu, 1, 0)  # MIG mode off: nothing can exist
    # the placement is free again
    fake.set_mig_mode(1, True)
    assert _create(reader, 1, "4g.40gb", 0).placement.start == 0


def test_destroy_mig_in_use_is_an_error(mig_nvml: tuple[FakePynvml, PynvmlReader]) -> None:
    fake, reader = mig_nvml
    mig = _create(reader, 1, "1g.10gb", 3)
    fake.fail("nvmlComputeInstanceDestroy", NVML_ERROR_IN_USE)
    with pytest.raises(NvmlError, match="in use") as info:
        reader.destroy_mig(_gpu(reader, 1), mig.gpu_instance_id, mig.compute_instance_id)
    assert info.value.code == ERROR_IN_USE
    assert len(fake.gpus[1].mig) == 1


def test_fake_gpu_instance_with_compute_instance_cannot_be_destroyed(
        mig_nvml: tuple[FakePynvml, PynvmlReader]) -> None:
    fake, _ = mig_nvml
    gi = fake.nvmlDeviceGetGpuInstanceById(fake.nvmlDeviceGetHandleByIndex(0), 1)
    with pytest.raises(NVMLError) as raw:
        fake.nvmlGpuInstanceDestroy(gi)
    assert raw.value.value == NVML_ERROR_IN_USE


def test_failed_compute_instance_takes_its_gpu_instance_back(
        mig_nvml: tuple[FakePynvml, PynvmlReader]) -> None:
    fake, reader = mig_nvml
    fake.fail("nvmlGpuInstanceCreateComputeInstance", NVML_ERROR_INSUFFICIENT_RESOURCES)
    with pytest.raises(NvmlError, match="creating the compute instance failed"):
        _create(reader, 1, "3g.40gb", 0)
    assert fake.gpus[1].mig == []


def test_fake_host_capability_files(tmp_path: Path) -> None:
    caps = tmp_path / "driver" / "nvidia" / "capabilities"
    (caps / "mig").mkdir(parents=True)
    (caps / "mig" / "config").write_text("DeviceFileMinor: 1\nDeviceFileMode: 256\n")
    layout = HostLayout(proc_root=str(tmp_path))
    add_mig_capabilities(layout, parent_minor=1, gi=2, ci=0)
    add_mig_capabilities(layout, parent_minor=1, gi=3, ci=0)
    minors = {layout.mig_cap_minor(parent_minor=1, gi=gi, ci=ci)
              for gi in (2, 3) for ci in (None, 0)}
    assert len(minors) == 4 and min(minors) > 1
    add_mig_capabilities(layout, parent_minor=1, gi=2, ci=0)  # kept as they are
    assert layout.mig_cap_minor(parent_minor=1, gi=2) in minors
    remove_mig_capabilities(layout, parent_minor=1, gi=2)
    assert not (caps / "gpu1" / "mig" / "gi2").exists()
    assert (caps / "gpu1" / "mig" / "gi3" / "ci0" / "access").exists()


# --- the backend ---------------------------------------------------------------------------
def test_create_mig_needs_partitionable(tmp_path: Path) -> None:
    backend = NvidiaGpuBackend()
    with pytest.raises(ConfigError, match="create_mig: needs partitionable"):
        backend.dra_setup(BackendSettings(backend="nvidia-gpu", node_name="node-1",
                                          state_dir=str(tmp_path), options={
                                              "nvml": "fake-8-mig", "create_mig": "true"}))


def test_placement_without_create_mig_is_refused(tmp_path: Path) -> None:
    backend = NvidiaGpuBackend()
    backend.dra_setup(BackendSettings(backend="nvidia-gpu", node_name="node-1",
                                      state_dir=str(tmp_path), options={
                                          "nvml": "fake-8-mig", "partitionable": "true",
                                          "health": "false"}))
    try:
        with pytest.raises(BackendError, match="create_mig"):
            backend.dra_prepare_claim(
                claim=ClaimRef(namespace="default", name="c", uid="u-1"),
                devices=[AllocatedDevice(request="gpu", pool="node-1",
                                         device="gpu-1-mig-3g40gb-0")])
        assert backend.fake_nvml.gpus[1].mig == []
    finally:
        backend.dra_shutdown()


@pytest.fixture
def mig_node() -> Iterator[PluginHarness]:
    options = {"nvidia-gpu": {"nvml": "fake-8-mig", "partitionable": "true",
                              "create_mig": "true"}}
    with tempfile.TemporaryDirectory(prefix="dra-nv-", dir="/tmp") as d, FakeApiServer() as api, \
            PluginHarness(root=Path(d), api=api, backends=("nvidia-gpu",),
                          backend_options=options) as h:
        yield h


def mig_claim(name: str, *devices: str) -> dict[str, object]:
    return allocated_claim(name=name, results=[
        Result(request=f"mig{i}", device=device, driver=DRIVER)
        for i, device in enumerate(devices)])


def _backend(node: PluginHarness) -> NvidiaGpuBackend:
    assert node.node is not None
    plugin = node.node.backends[0].plugin
    assert isinstance(plugin, NvidiaGpuBackend)
    return plugin


def _fake(node: PluginHarness) -> FakePynvml:
    fake = _backend(node).fake_nvml
    assert isinstance(fake, FakePynvml)
    return fake


def _ledger(node: PluginHarness) -> list[dict[str, Any]]:
    ledger = _backend(node).ledger
    assert ledger is not None
    return ledger.entries()


def _published_uuid(node: PluginHarness, device: str) -> object:
    for s in node.api.objects("resourceslices"):
        for dev in s["spec"].get("devices", []):
            if dev["name"] == device:
                return dev["attributes"].get("uuid", {}).get("string")
    return None


def test_prepare_creates_the_mig_device_and_unprepare_destroys_it(
        mig_node: PluginHarness) -> None:
    conn = mig_node.connect(DRIVER)
    fake = _fake(mig_node)
    c = mig_node.add_claim(mig_claim("mig-a", "gpu-1-mig-3g40gb-0"))
    result = conn.prepare([c])[c.uid]
    assert result.error == ""
    (mig,) = fake.gpus[1].mig
    assert (mig.profile["name"], mig.start, mig.size) == ("MIG 3g.40gb", 0, 4)
    (entry,) = _ledger(mig_node)
    assert (entry["claim"], entry["device"], entry["gi"], entry["ci"], entry["uuid"]) == (
        c.uid, "gpu-1-mig-3g40gb-0", mig.gpu_instance_id, 0, mig.uuid)
    (spec_file,) = mig_node.cdi_specs()
    edits = json.loads(spec_file.read_text())["devices"][0]["containerEdits"]
    nodes = {n["path"]: (n["major"], n["minor"]) for n in edits["deviceNodes"]}
    assert nodes["/dev/nvidia1"] == (195, 1)
    caps = sorted(p for p in nodes if p.startswith("/dev/nvidia-caps/nvidia-cap"))
    assert len(caps) == 2 and all(nodes[p][0] == 241 for p in caps)
    # republished: the placement device carries the MIG device's uuid now
    wait_for("the MIG uuid in the slice",
             lambda: _published_uuid(mig_node, "gpu-1-mig-3g40gb-0") == mig.uuid)

    assert conn.unprepare([c]) == {c.uid: ""}
    assert fake.gpus[1].mig == []
    assert _ledger(mig_node) == []
    proc = Path(_backend(mig_node).layout.proc_root)
    assert not (proc / f"driver/nvidia/capabilities/gpu1/mig/gi{mig.gpu_instance_id}").exists()
    wait_for("the MIG uuid gone from the slice",
             lambda: _published_uuid(mig_node, "gpu-1-mig-3g40gb-0") is None)
    assert conn.unprepare([c]) == {c.uid: ""}  # idempotent


def test_overlapping_placement_gets_a_clear_claim_error(mig_node: PluginHarness) -> None:
    conn = mig_node.connect(DRIVER)
    fake = _fake(mig_node)
    a = mig_node.add_claim(mig_claim("mig-a", "gpu-1-mig-3g40gb-0"))
    b = mig_node.add_claim(mig_claim("mig-b", "gpu-1-mig-1g10gb-2"))
    assert conn.prepare([a])[a.uid].error == ""
    err = conn.prepare([b])[b.uid].error
    assert "gpu-1-mig-1g10gb-2" in err and "placement is taken" in err
    assert len(fake.gpus[1].mig) == 1
    assert [e["claim"] for e in _ledger(mig_node)] == [a.uid]
    assert conn.unprepare([b]) == {b.uid: ""}
    assert len(fake.gpus[1].mig) == 1  # b's unprepare leaves a's instance alone
    assert conn.unprepare([a]) == {a.uid: ""}
    assert fake.gpus[1].mig == []
    assert conn.prepare([b])[b.uid].error == ""  # free now
    assert [(m.start, m.size) for m in fake.gpus[1].mig] == [(2, 1)]


def test_failed_prepare_destroys_what_it_created(mig_node: PluginHarness) -> None:
    conn = mig_node.connect(DRIVER)
    fake = _fake(mig_node)
    c = mig_node.add_claim(mig_claim("two", "gpu-2-mig-3g40gb-0", "gpu-2-mig-1g10gb-1"))
    err = conn.prepare([c])[c.uid].error
    assert "placement is taken" in err
    assert fake.gpus[2].mig == []
    assert _ledger(mig_node) == []


def test_existing_mig_device_is_used_and_left_alone(mig_node: PluginHarness) -> None:
    conn = mig_node.connect(DRIVER)
    fake = _fake(mig_node)
    before = list(fake.gpus[0].mig)
    c = mig_node.add_claim(mig_claim("existing", "gpu-0-mig-3g40gb-0"))
    assert conn.prepare([c])[c.uid].error == ""
    assert fake.gpus[0].mig == before and _ledger(mig_node) == []
    (spec_file,) = mig_node.cdi_specs()
    edits = json.loads(spec_file.read_text())["devices"][0]["containerEdits"]
    assert sum(n["path"].startswith("/dev/nvidia-caps/") for n in edits["deviceNodes"]) == 2
    assert conn.unprepare([c]) == {c.uid: ""}
    assert fake.gpus[0].mig == before


def test_mig_mode_off_is_left_to_the_administrator(mig_node: PluginHarness) -> None:
    conn = mig_node.connect(DRIVER)
    fake = _fake(mig_node)
    fake.set_mig_mode(3, False)
    c = mig_node.add_claim(mig_claim("off", "gpu-3-mig-1g10gb-0"))
    err = conn.prepare([c])[c.uid].error
    assert "MIG mode is off on GPU 3" in err and "administrator" in err
    assert fake.gpus[3].data["mig_mode"] == [0, 0] and fake.gpus[3].mig == []


def test_rollback_with_empty_state_destroys_through_the_ledger(
        mig_node: PluginHarness) -> None:
    """The framework's roll-back after a crash between creating and committing: unprepare
    gets the devices without state; the ledger names what the claim created."""
    backend = _backend(mig_node)
    fake = _fake(mig_node)
    claim = ClaimRef(namespace="default", name="crashed",
                     uid="5c4f8d7e-0000-4000-8000-000000000001")
    devices = [AllocatedDevice(request="mig0", pool="node-1", device="gpu-4-mig-2g20gb-2"),
               AllocatedDevice(request="mig1", pool="node-1", device="gpu-4-mig-1g10gb-6")]
    prepared = backend.dra_prepare_claim(claim=claim, devices=devices)
    assert all("created_mig" in p.state for p in prepared)
    assert len(fake.gpus[4].mig) == 2 and len(_ledger(mig_node)) == 2
    empty = [PreparedDevice(pool=d.pool, device=d.device) for d in devices]
    backend.dra_unprepare_claim(claim=claim, devices=empty)
    assert fake.gpus[4].mig == [] and _ledger(mig_node) == []
    backend.dra_unprepare_claim(claim=claim, devices=empty)  # idempotent
    backend.dra_unprepare_claim(claim=claim, devices=prepared)  # stale state: already gone


def test_rollback_of_an_entry_without_ids_finds_the_placement(
        mig_node: PluginHarness) -> None:
    """A crash during creation leaves a ledger entry without ids: roll-back destroys the MIG
    device at that placement, and only that one."""
    backend = _backend(mig_node)
    fake = _fake(mig_node)
    ledger = backend.ledger
    assert ledger is not None
    fake.create_mig_device(5, "1g.10gb", 0)  # the administrator's: not in the ledger
    claim = ClaimRef(namespace="default", name="crashed",
                     uid="5c4f8d7e-0000-4000-8000-000000000002")
    reader = backend.reader
    assert reader is not None
    gpu = next(g for g in reader.gpus() if g.index == 5)
    profile = next(p for p in reader.mig_profiles(gpu) if p.name == "3g.40gb")
    placement = profile.placements[1]
    ledger.intend(claim=claim.uid, device="gpu-5-mig-3g40gb-4", gpu=gpu, profile=profile,
                  placement=placement)
    reader.create_mig(gpu, profile, placement)  # ... and the process died here
    assert len(fake.gpus[5].mig) == 2
    backend.dra_unprepare_claim(claim=claim, devices=[
        PreparedDevice(pool="node-1", device="gpu-5-mig-3g40gb-4")])
    assert [(m.start, m.size) for m in fake.gpus[5].mig] == [(0, 1)]
    assert ledger.entries() == []
