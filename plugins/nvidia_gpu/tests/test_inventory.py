"""ResourceSlice devices of the GPUs, from the reader over the fake NVML."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest
from dra_nvidia_gpu.inventory import (
    Inventory,
    build_inventory,
    label,
    pcie_root,
    quantity,
    semver,
)
from dra_nvidia_gpu.nvml import PynvmlReader
from dra_nvidia_gpu.testing import FakePynvml

from dra_framework.api.slices import NodePool, device_json, node_pool_slices
from dra_framework.api.slicevalidation import (
    MAX_ATTRIBUTES_AND_CAPACITIES,
    device_problems,
    parse_quantity,
    pool_problems,
)
from dra_framework.models import Version

Reader = Callable[..., PynvmlReader]
Fake = Callable[..., FakePynvml]
H100_UUID = "GPU-48579475-7923-b1a9-35e7-c49638cc9ac5"
PARENT = {"productName": "NVIDIA H100 80GB HBM3", "brand": "NVIDIA",
          "architecture": "Hopper", "cudaComputeCapability": Version("9.0.0"),
          "driverVersion": Version("580.159.4"), "cudaDriverVersion": Version("13.0.0"),
          "resource.kubernetes.io/pcieRoot": "pci0000:00"}


def _names(inventory: Inventory) -> list[str]:
    return [d.name for d in inventory.devices]


def test_h100_gpu_device(nvml_reader: Reader) -> None:
    inventory = build_inventory(nvml_reader())
    assert inventory.counter_sets == ()
    (device,) = inventory.devices
    assert device.name == "gpu-0"
    assert dict(device.attributes) == {
        "type": "gpu", "uuid": H100_UUID, "index": 0, "minor": 0, "pciBusID": "0000:00:06.0",
        **PARENT}
    assert dict(device.capacity) == {"memory": "81559Mi"}
    assert inventory.published["gpu-0"].gpu.uuid == H100_UUID


def test_multiprocessors_capacity_when_known(nvml_reader: Reader) -> None:
    fake = FakePynvml.from_capture()
    fake.gpus[0].multiprocessor_count = 132
    (device,) = build_inventory(nvml_reader(fake)).devices
    assert dict(device.capacity) == {"memory": "81559Mi", "multiprocessors": "132"}


@pytest.mark.parametrize("raw, expected", [
    ("580.159.04", "580.159.4"), ("535.104.05", "535.104.5"), ("13.0", "13.0.0"),
    ("550", "550.0.0"), ("1.02.3.04", "1.2.3+4"), ("580.159.04-beta", None), ("", None),
], ids=["nvidia", "nvidia-535", "cuda", "major-only", "four-parts", "suffix", "empty"])
def test_semver(raw: str, expected: str | None) -> None:
    assert semver(raw) == (Version(expected) if expected is not None else None)


@pytest.mark.parametrize("count, expected", [
    (85520809984, "81559Mi"), (80 << 30, "80Gi"), (9984 << 20, "9984Mi"), (3072, "3Ki"),
    (1536, "1536"), (1000, "1000"), (0, "0"),
], ids=["h100", "gi", "mig", "ki", "not-whole-ki", "bytes", "zero"])
def test_quantity(count: int, expected: str) -> None:
    assert quantity(count) == expected
    assert parse_quantity(expected) == Fraction(count)


@pytest.mark.parametrize("profile, expected", [
    ("1g.10gb", "1g10gb"), ("1g.10gb+me", "1g10gb-me"), ("1c.3g.40gb", "1c3g40gb"),
    ("7g.80gb", "7g80gb")])
def test_label(profile: str, expected: str) -> None:
    assert label(profile) == expected


def test_pcie_root_from_sysfs(tmp_path: Path) -> None:
    device = tmp_path / "devices" / "pci0000:15" / "0000:15:01.0" / "0000:18:00.0"
    device.mkdir(parents=True)
    links = tmp_path / "bus" / "pci" / "devices"
    links.mkdir(parents=True)
    (links / "0000:18:00.0").symlink_to(device)
    assert pcie_root("0000:18:00.0", sysfs_root=str(tmp_path)) == "pci0000:15"
    assert pcie_root("0000:2a:00.0", sysfs_root=str(tmp_path)) == "pci0000:2a"  # no link
    assert pcie_root("0000:18:00.0") == "pci0000:18"


def test_pcie_root_in_inventory(nvml_reader: Reader, fake_nvml: Fake, tmp_path: Path) -> None:
    for bus in ("0000:18:00.0", "0000:2a:00.0"):
        target = tmp_path / "devices" / "pci0000:10" / bus
        target.mkdir(parents=True)
        (tmp_path / "bus" / "pci" / "devices").mkdir(parents=True, exist_ok=True)
        (tmp_path / "bus" / "pci" / "devices" / bus).symlink_to(target)
    inventory = build_inventory(nvml_reader(fake_nvml(gpus=2)), sysfs_root=str(tmp_path))
    assert [d.attributes["resource.kubernetes.io/pcieRoot"] for d in inventory.devices] == [
        "pci0000:10", "pci0000:10"]


def test_eight_gpus(nvml_reader: Reader, fake_nvml: Fake) -> None:
    inventory = build_inventory(nvml_reader(fake_nvml(gpus=8)))
    assert _names(inventory) == [f"gpu-{i}" for i in range(8)]
    assert [d.attributes["minor"] for d in inventory.devices] == list(range(8))
    assert len({d.attributes["uuid"] for d in inventory.devices}) == 8


def test_mig_devices(nvml_reader: Reader, fake_nvml: Fake) -> None:
    reader = nvml_reader(fake_nvml(gpus=2, mig=True))
    gpu0 = reader.gpus()[0]
    migs = {m.placement.start: m for m in reader.mig_devices(gpu0)}
    inventory = build_inventory(reader)
    # MIG mode on: the full GPUs are not published; GPU 1 has no MIG devices yet.
    assert _names(inventory) == ["gpu-0-mig-3g40gb-0", "gpu-0-mig-1g10gb-4",
                                 "gpu-0-mig-1g10gb-5"]
    device = inventory.devices[1]
    assert dict(device.attributes) == {
        "type": "mig", "profile": "1g.10gb", "uuid": migs[4].uuid, "parentUUID": gpu0.uuid,
        "parentIndex": 0, "parentMinor": 0, "placementStart": 4, "placementSize": 1,
        **PARENT, "resource.kubernetes.io/pcieRoot": "pci0000:18"}
    assert dict(device.capacity) == {"memory": "9984Mi", "multiprocessors": "16"}
    assert dict(inventory.devices[0].capacity) == {"memory": "40448Mi", "multiprocessors": "60"}
    published = inventory.published["gpu-0-mig-1g10gb-4"]
    assert published.mig == migs[4] and published.profile is not None
    assert published.profile.id == 19


def test_lost_gpu_is_left_out(nvml_reader: Reader, fake_nvml: Fake) -> None:
    fake = fake_nvml(gpus=3)
    reader = nvml_reader(fake)
    fake.lose_gpu(1)
    assert _names(build_inventory(reader)) == ["gpu-0", "gpu-2"]


def test_long_strings_are_cut(nvml_reader: Reader) -> None:
    fake = FakePynvml.from_capture()
    fake.gpus[0].data["name"] = "NVIDIA " + "é" * 40
    (device,) = build_inventory(nvml_reader(fake)).devices
    name = device.attributes["productName"]
    assert isinstance(name, str) and len(name.encode()) <= 64 and name.startswith("NVIDIA é")


# --- partitionable -----------------------------------------------------------------------
H100_PLACEMENTS = {"1g.10gb": 7, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1,
                   "1g.10gb+me": 7, "1g.20gb": 4}


def test_partitionable_h100(nvml_reader: Reader) -> None:
    inventory = build_inventory(nvml_reader(), partitionable=True)
    (counters,) = inventory.counter_sets
    assert counters.name == "gpu-0-counters"
    assert dict(counters.counters) == {
        "memory": "81559Mi", "multiprocessors": "132", "copy-engines": "8", "decoders": "7",
        "jpeg-engines": "7", "ofa-engines": "1",
        **{f"memory-slice-{i}": "1" for i in range(8)}}
    assert _names(inventory)[0] == "gpu-0"
    full = inventory.devices[0]
    assert [(c.counter_set, dict(c.counters)) for c in full.consumes_counters] == [
        ("gpu-0-counters", dict(counters.counters))]
    shapes = collections.Counter(d.attributes["profile"] for d in inventory.devices[1:])
    assert shapes == H100_PLACEMENTS and len(inventory.devices) == 1 + 25
    by_name = {d.name: d for d in inventory.devices}
    assert dict(by_name["gpu-0-mig-3g40gb-4"].consumes_counters[0].counters) == {
        "memory": "40448Mi", "multiprocessors": "60", "copy-engines": "3", "decoders": "3",
        "jpeg-engines": "3", "memory-slice-4": "1", "memory-slice-5": "1",
        "memory-slice-6": "1", "memory-slice-7": "1"}
    assert dict(by_name["gpu-0-mig-1g10gb-me-6"].consumes_counters[0].counters)[
        "ofa-engines"] == "1"
    assert "uuid" not in by_name["gpu-0-mig-1g10gb-0"].attributes
    placement = inventory.published["gpu-0-mig-1g20gb-6"]
    assert placement.mig is None and placement.placement is not None
    assert (placement.placement.start, placement.placement.size) == (6, 2)


def _fits(devices: list[dict[str, str]], available: dict[str, str]) -> bool:
    used: dict[str, Fraction] = collections.defaultdict(Fraction)
    for counters in devices:
        for key, value in counters.items():
            used[key] += parse_quantity(value)
    return all(used[k] <= parse_quantity(v) for k, v in available.items())


def test_partitionable_counters_allow_exactly_real_pairs(nvml_reader: Reader) -> None:
    """Two MIG placements fit together exactly when their memory slices are disjoint and at
    most one of them holds the GPU's only optical-flow engine."""
    inventory = build_inventory(nvml_reader(), partitionable=True)
    available = dict(inventory.counter_sets[0].counters)
    placements = [inventory.published[d.name] for d in inventory.devices[1:]]
    for a, b in itertools.combinations(placements, 2):
        assert a.placement and b.placement and a.profile and b.profile
        slices_a = set(range(a.placement.start, a.placement.start + a.placement.size))
        slices_b = set(range(b.placement.start, b.placement.start + b.placement.size))
        real = not slices_a & slices_b and not (a.profile.ofas and b.profile.ofas)
        consumed = [dict(inventory.devices[_names(inventory).index(x.name)]
                         .consumes_counters[0].counters) for x in (a, b)]
        assert _fits(consumed, available) == real, (a.name, b.name)
    assert _fits([dict(inventory.devices[i].consumes_counters[0].counters)
                  for i in range(1, 8)], available)  # 7 x 1g.10gb


def test_partitionable_with_existing_mig_devices(nvml_reader: Reader, fake_nvml: Fake) -> None:
    reader = nvml_reader(fake_nvml(gpus=8, mig=True))
    mig = {m.placement.start: m for m in reader.mig_devices(reader.gpus()[0])}
    inventory = build_inventory(reader, partitionable=True)
    assert len(inventory.devices) == 8 * 26 and len(inventory.counter_sets) == 8
    by_name = {d.name: d for d in inventory.devices}
    assert by_name["gpu-0-mig-3g40gb-0"].attributes["uuid"] == mig[0].uuid
    assert by_name["gpu-0-mig-1g10gb-5"].attributes["uuid"] == mig[5].uuid
    assert "uuid" not in by_name["gpu-0-mig-1g10gb-6"].attributes
    assert "uuid" not in by_name["gpu-1-mig-3g40gb-0"].attributes


# --- every variant is valid ----------------------------------------------------------------
VARIANTS = {
    "capture": (None, False, False), "capture-partitionable": (None, False, True),
    "eight": (8, False, False), "eight-mig": (8, True, False),
    "eight-partitionable": (8, False, True), "eight-mig-partitionable": (8, True, True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_devices_pass_slice_validation(variant: str, nvml_reader: Reader,
                                       fake_nvml: Fake) -> None:
    gpus, mig, partitionable = VARIANTS[variant]
    reader = nvml_reader(fake_nvml(gpus=gpus, mig=mig))
    inventory = build_inventory(reader, partitionable=partitionable)
    assert inventory.devices
    for device in inventory.devices:
        assert device_problems(device_json(device)) == [], device.name
        assert len(device.attributes) + len(device.capacity) <= MAX_ATTRIBUTES_AND_CAPACITIES
        assert len(device.consumes_counters) <= 2
    assert len(set(_names(inventory))) == len(inventory.devices)
    pool = node_pool_slices(driver="gpu.nvidia.com", node_name="node-a", node_uid="uid-1",
                            pool=NodePool(devices=inventory.devices,
                                          counter_sets=inventory.counter_sets))
    assert pool_problems(pool.objects(generation=1)) == []
    assert build_inventory(reader, partitionable=partitionable) == inventory  # stable
