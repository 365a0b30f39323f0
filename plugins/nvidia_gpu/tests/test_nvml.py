"""``PynvmlReader`` against the fake NVML built from the real H100 capture."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
from dra_nvidia_gpu import testing
from dra_nvidia_gpu.nvml import (
    EVENT_XID_CRITICAL,
    NvmlError,
    PynvmlReader,
    derive_placements,
    normalize_bus_id,
    profile_name,
)
from dra_nvidia_gpu.testing import FakePynvml
from dra_nvidia_gpu.types import DriverInfo, GpuInfo, MigPlacement, MigProfile, XidEvent

Reader = Callable[..., PynvmlReader]
Fake = Callable[..., FakePynvml]
H100_UUID = "GPU-48579475-7923-b1a9-35e7-c49638cc9ac5"

# nvidia-smi mig -lgip of the capture: name, id, index, slices, instances, SMs, MiB, CE, DEC,
# ENC, JPEG, OFA; and the placements ``nvidia-smi mig -lgipp`` lists on that H100.
H100_PROFILES = [
    ("1g.10gb", 19, 0, 1, 7, 16, 9984, 1, 1, 0, 1, 0, [(s, 1) for s in range(7)]),
    ("2g.20gb", 14, 1, 2, 3, 32, 20096, 2, 2, 0, 2, 0, [(0, 2), (2, 2), (4, 2)]),
    ("3g.40gb", 9, 2, 3, 2, 60, 40448, 3, 3, 0, 3, 0, [(0, 4), (4, 4)]),
    ("4g.40gb", 5, 3, 4, 1, 64, 40448, 4, 4, 0, 4, 0, [(0, 4)]),
    ("7g.80gb", 0, 4, 7, 1, 132, 81152, 8, 7, 0, 7, 1, [(0, 8)]),
    ("1g.10gb+me", 20, 7, 1, 1, 16, 9984, 1, 1, 0, 1, 1, [(s, 1) for s in range(7)]),
    ("1g.20gb", 15, 9, 1, 4, 26, 20096, 1, 1, 0, 1, 0, [(0, 2), (2, 2), (4, 2), (6, 2)]),
]


def _table(profiles: list[MigProfile]) -> list[tuple[object, ...]]:
    return [(p.name, p.id, p.profile_index, p.slice_count, p.instance_count,
             p.multiprocessor_count, p.memory_mb, p.copy_engines, p.decoders, p.encoders,
             p.jpegs, p.ofas, [(x.start, x.size) for x in p.placements]) for p in profiles]


# --- the captured H100 -----------------------------------------------------------------
def test_capture_gpu(nvml_reader: Reader) -> None:
    assert list(nvml_reader().gpus()) == [GpuInfo(
        index=0, minor=0, uuid=H100_UUID, name="NVIDIA H100 80GB HBM3", brand="NVIDIA",
        architecture="Hopper", cuda_compute_capability=(9, 0), memory_bytes=85520809984,
        pci_bus_id="0000:00:06.0", mig_enabled=False, multiprocessor_count=None)]


def test_capture_driver(nvml_reader: Reader) -> None:
    assert nvml_reader().driver() == DriverInfo(driver_version="580.159.04",
                                                cuda_driver_version="13.0")


def test_capture_mig_profiles_with_derived_placements(nvml_reader: Reader) -> None:
    fake = FakePynvml.from_capture()
    reader = nvml_reader(fake)
    profiles = list(reader.mig_profiles(reader.gpus()[0]))
    assert _table(profiles) == [tuple(row) for row in H100_PROFILES]
    assert fake.calls["nvmlDeviceGetGpuInstancePossiblePlacements"] == 7  # refused each time


def test_placements_asked_from_nvml(nvml_reader: Reader, fake_nvml: Fake) -> None:
    fake = fake_nvml(gpus=1)
    reader = nvml_reader(fake)
    gpu = reader.gpus()[0]
    assert _table(list(reader.mig_profiles(gpu))) == [tuple(row) for row in H100_PROFILES]
    assert fake.calls["nvmlDeviceGetGpuInstancePossiblePlacements"] == 2 * 7  # count, fill
    reader.mig_profiles(gpu)
    profile_count = testing.NVML_GPU_INSTANCE_PROFILE_COUNT
    assert fake.calls["nvmlDeviceGetGpuInstanceProfileInfo"] == profile_count  # cached


def test_derive_placements_a30_layout() -> None:
    profiles = [MigProfile(id=i, profile_index=i, name=n, slice_count=s, instance_count=c,
                           multiprocessor_count=14 * s, memory_mb=m)
                for i, (n, s, c, m) in enumerate([("1g.6gb", 1, 4, 5836),
                                                   ("2g.12gb", 2, 2, 11672),
                                                   ("4g.24gb", 4, 1, 23344)])]
    assert {i: [(p.start, p.size) for p in v] for i, v in derive_placements(profiles).items()} \
        == {0: [(0, 1), (1, 1), (2, 1), (3, 1)], 1: [(0, 2), (2, 2)], 2: [(0, 4)]}
    assert derive_placements([]) == {}


@pytest.mark.parametrize("raw, expected", [
    ("00000000:00:06.0", "0000:00:06.0"),
    ("0000:00:06.0", "0000:00:06.0"),
    ("00000000:DB:00.0", "0000:db:00.0"),
    ("00010000:1A:1F.7", "10000:1a:1f.7"),
], ids=["nvml", "legacy", "upper", "wide-domain"])
def test_normalize_bus_id(raw: str, expected: str) -> None:
    assert normalize_bus_id(raw) == expected


def test_normalize_bus_id_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a PCI bus id"):
        normalize_bus_id("gpu0")


@pytest.mark.parametrize("raw, expected", [
    (b"MIG 1g.10gb", "1g.10gb"), ("MIG 1g.10gb+me", "1g.10gb+me"), (b"", "3g.40gb"),
], ids=["bytes", "str", "missing"])
def test_profile_name(raw: str | bytes, expected: str) -> None:
    assert profile_name(raw, slice_count=3, memory_mb=40448) == expected


# --- synthetic nodes -------------------------------------------------------------------
def test_synthetic_eight_gpus(nvml_reader: Reader, fake_nvml: Fake) -> None:
    gpus = nvml_reader(fake_nvml(gpus=8)).gpus()
    assert [g.index for g in gpus] == [g.minor for g in gpus] == list(range(8))
    assert len({g.uuid for g in gpus}) == 8
    assert [g.pci_bus_id for g in gpus] == ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0",
                                            "0000:5d:00.0", "0000:9a:00.0", "0000:ab:00.0",
                                            "0000:ba:00.0", "0000:db:00.0"]
    assert {(g.name, g.memory_bytes, g.mig_enabled) for g in gpus} == {
        ("NVIDIA H100 80GB HBM3", 85520809984, False)}


def test_multiprocessors_when_nvml_answers(nvml_reader: Reader) -> None:
    fake = FakePynvml.from_capture()
    fake.gpus[0].multiprocessor_count = 132
    assert nvml_reader(fake).gpus()[0].multiprocessor_count == 132


def test_mig_devices(nvml_reader: Reader, fake_nvml: Fake) -> None:
    reader = nvml_reader(fake_nvml(gpus=2, mig=True))
    gpu0, gpu1 = reader.gpus()
    assert gpu0.mig_enabled and gpu1.mig_enabled
    migs = reader.mig_devices(gpu0)
    assert [(m.profile, m.placement, m.gpu_instance_id, m.compute_instance_id,
             m.memory_bytes, m.multiprocessor_count) for m in migs] == [
        ("3g.40gb", MigPlacement(0, 4), 1, 0, 40448 << 20, 60),
        ("1g.10gb", MigPlacement(4, 1), 2, 0, 9984 << 20, 16),
        ("1g.10gb", MigPlacement(5, 1), 3, 0, 9984 << 20, 16)]
    assert {m.parent_uuid for m in migs} == {gpu0.uuid}
    assert all(m.uuid.startswith("MIG-") for m in migs) and len({m.uuid for m in migs}) == 3
    assert reader.mig_devices(gpu1) == []


def test_mig_off_reads_no_mig_devices(nvml_reader: Reader) -> None:
    fake = FakePynvml.from_capture()
    reader = nvml_reader(fake)
    assert reader.mig_devices(reader.gpus()[0]) == []
    assert fake.calls["nvmlDeviceGetMaxMigDeviceCount"] == 0


def test_split_compute_instance_is_named_after_it(nvml_reader: Reader, fake_nvml: Fake,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_nvml(gpus=1, mig=True)
    real = fake.nvmlDeviceGetAttributes

    def attributes(handle: object) -> object:
        out = real(handle)
        if isinstance(handle, testing.FakeMig) and handle.profile["sliceCount"] == 3:
            out.computeInstanceSliceCount = 1
        return out

    monkeypatch.setattr(fake, "nvmlDeviceGetAttributes", attributes)
    reader = nvml_reader(fake)
    assert [m.profile for m in reader.mig_devices(reader.gpus()[0])] == [
        "1c.3g.40gb", "1g.10gb", "1g.10gb"]


# --- events ----------------------------------------------------------------------------
def test_wait_times_out(nvml_reader: Reader) -> None:
    assert nvml_reader().wait_event(200) is None


def test_xid_event(nvml_reader: Reader, fake_nvml: Fake) -> None:
    fake = fake_nvml(gpus=4)
    reader = nvml_reader(fake)
    uuids = [g.uuid for g in reader.gpus()]
    assert reader.wait_event(10) is None
    fake.inject_xid(2, 79)
    fake.inject_xid(0, 48, gpu_instance_id=1, compute_instance_id=0)
    assert reader.wait_event(10) == XidEvent(gpu_uuid=uuids[2], xid=79,
                                             event_type=EVENT_XID_CRITICAL)
    assert reader.wait_event(10) == XidEvent(gpu_uuid=uuids[0], xid=48,
                                             event_type=EVENT_XID_CRITICAL,
                                             gpu_instance_id=1, compute_instance_id=0)
    assert reader.wait_event(10) is None
    assert fake.calls["nvmlEventSetCreate"] == 1
    assert fake.calls["nvmlDeviceRegisterEvents"] == 4


def test_registers_only_supported_critical_types(nvml_reader: Reader) -> None:
    fake = FakePynvml.from_capture()
    fake.gpus[0].data["supported_event_types"] = EVENT_XID_CRITICAL | 0x1
    reader = nvml_reader(fake)
    reader.wait_event(0)
    fake.inject_event(0, 0x2)  # double-bit ECC: not supported, so not registered
    assert reader.wait_event(0) is None
    assert fake.event_sets[0].registered == {id(fake.gpus[0]): EVENT_XID_CRITICAL}


def test_lost_gpu(nvml_reader: Reader, fake_nvml: Fake) -> None:
    fake = fake_nvml(gpus=3)
    reader = nvml_reader(fake)
    uuids = [g.uuid for g in reader.gpus()]
    assert reader.wait_event(10) is None
    fake.lose_gpu(1)
    assert reader.wait_event(10) == XidEvent(gpu_uuid=uuids[1], xid=0, event_type=0,
                                             gpu_lost=True)
    assert reader.lost_gpus == {1}
    fake.inject_xid(2, 31)
    assert reader.wait_event(10) == XidEvent(gpu_uuid=uuids[2], xid=31,
                                             event_type=EVENT_XID_CRITICAL)
    assert reader.wait_event(10) is None
    assert fake.calls["nvmlEventSetCreate"] == 2  # rebuilt once, without the lost GPU
    assert fake.event_sets[0].freed and id(fake.gpus[1]) not in fake.event_sets[1].registered
    assert [g.uuid for g in reader.gpus()] == [uuids[0], uuids[2]]


def test_gpu_lost_before_registration(nvml_reader: Reader, fake_nvml: Fake) -> None:
    fake = fake_nvml(gpus=2)
    reader = nvml_reader(fake)
    uuids = [g.uuid for g in reader.gpus()]
    fake.lose_gpu(0)
    assert reader.wait_event(10) == XidEvent(gpu_uuid=uuids[0], xid=0, event_type=0,
                                             gpu_lost=True)
    assert reader.wait_event(10) is None


def test_unidentified_loss(nvml_reader: Reader) -> None:
    fake = FakePynvml.from_capture()
    reader = nvml_reader(fake)
    reader.wait_event(0)
    fake.lost_pending.append(fake.gpus[0])  # NVML says lost, yet the GPU still answers
    assert reader.wait_event(0) == XidEvent(gpu_uuid="", xid=0, event_type=0, gpu_lost=True)


# --- errors and lifecycle --------------------------------------------------------------
def test_errors_name_the_call(nvml_reader: Reader) -> None:
    fake = FakePynvml.from_capture()
    fake.fail("nvmlDeviceGetName", testing.NVML_ERROR_UNKNOWN)
    with pytest.raises(NvmlError, match=r"nvmlDeviceGetName: Unknown Error \(NVML error 999\)"
                       ) as info:
        nvml_reader(fake).gpus()
    assert info.value.code == 999 and not info.value.gpu_lost


def test_unsupported_fields_degrade(nvml_reader: Reader) -> None:
    fake = FakePynvml.from_capture()
    for name in ("nvmlDeviceGetBrand", "nvmlDeviceGetArchitecture", "nvmlDeviceGetMigMode"):
        fake.fail(name, testing.NVML_ERROR_NOT_SUPPORTED)
    fake.fail("nvmlSystemGetCudaDriverVersion_v2", testing.NVML_ERROR_FUNCTION_NOT_FOUND)
    fake.capture["cuda_driver_version"] = 12040
    reader = nvml_reader(fake)
    gpu = reader.gpus()[0]
    assert (gpu.brand, gpu.architecture, gpu.mig_enabled) == ("Unknown", "Unknown", False)
    assert reader.driver().cuda_driver_version == "12.4"


def test_init_and_shutdown() -> None:
    fake = FakePynvml.from_capture()
    with PynvmlReader(module=fake) as reader:
        assert fake.initialized == 1
        reader.wait_event(0)
    assert fake.initialized == 0 and fake.event_sets[0].freed
    reader.close()  # twice is fine
    assert fake.initialized == 0


def test_init_failure() -> None:
    fake = FakePynvml.from_capture()
    fake.fail("nvmlInit", 9)
    with pytest.raises(NvmlError, match="nvmlInit") as info:
        PynvmlReader(module=fake)
    assert info.value.code == 9


def test_missing_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(NvmlError, match="nvidia-ml-py"):
        PynvmlReader()


def test_real_pynvml_without_gpu() -> None:
    pytest.importorskip("pynvml")
    try:
        reader = PynvmlReader()
    except NvmlError as exc:
        assert exc.code is not None
        return
    reader.close()
    pytest.skip("NVML works here: this test is for machines without a GPU")
