"""The ResourceSlice devices of a node's GPUs, from an ``NvmlReader`` snapshot.

``build_inventory`` reads the reader once and returns an ``Inventory``: the ``Device`` list
(``dra_inventory``), the shared ``CounterSet`` list (``dra_counter_sets``) and, for every
device name, what it stands for (``PublishedDevice``), which prepare needs.  Everything but
the reader call and the optional sysfs lookup is pure.

Devices, in GPU index order:

* a GPU with MIG mode off: ``gpu-<index>``, ``type: gpu``;
* a GPU with MIG mode on: its MIG devices ``gpu-<index>-mig-<profile>-<start>``
  (``1g.10gb`` at 4 → ``gpu-0-mig-1g10gb-4``; ``1g.10gb+me`` → ``1g10gb-me``; a compute
  instance smaller than its GPU instance gets ``-<compute instance id>`` appended), in
  placement order; the full GPU is not usable as such and is not published;
* ``partitionable=True``: per GPU with MIG profiles a counter set ``gpu-<index>-counters``
  (``memory``, ``multiprocessors``, ``memory-slice-0`` .. ``-7`` and the engine counters
  ``copy-engines``, ``decoders``, ``encoders``, ``jpeg-engines``, ``ofa-engines`` that are not
  zero), one device per possible placement of every profile, consuming its memory slices,
  memory, SMs and engines, and the full GPU consuming all of them.  The scheduler then picks
  MIG shapes; creating the instance at prepare is the backend's business (option
  ``create_mig``; MIG mode itself stays the administrator's).
  A placement that holds an existing MIG device carries that device's ``uuid``.

Attribute keys without a domain belong to the driver's domain; ``pcieRoot`` is the standard
``resource.kubernetes.io/pcieRoot``.  Versions are semver: NVIDIA's ``580.159.04`` has a
leading zero, which semver forbids, so it is published as ``580.159.4`` (``semver``); CUDA
``13.0`` as ``13.0.0``, compute capability ``9.0`` as ``9.0.0``.  Counter names are DNS
labels (``memory-slice-0``, not ``memorySlice0``), as the API requires.  Memory is published
in the largest binary unit that is exact (85520809984 bytes → ``81559Mi``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import attrs

from dra_framework.models import AttributeValue, CounterConsumption, CounterSet, Device, Version

from .types import DriverInfo, GpuInfo, MigDevice, MigPlacement, MigProfile, NvmlReader

PCIE_ROOT = "resource.kubernetes.io/pcieRoot"
MAX_STRING = 64
MEMORY_SLICES = 8
_ROOT = re.compile(r"pci[0-9a-f]{4,}:[0-9a-f]{2}")
_ENGINES = (("copy-engines", "copy_engines"), ("decoders", "decoders"),
            ("encoders", "encoders"), ("jpeg-engines", "jpegs"), ("ofa-engines", "ofas"))


@attrs.frozen
class PublishedDevice:
    """What one published device stands for: a full GPU, an existing MIG device, or (with
    ``partitionable``) a MIG placement that prepare would create (``mig`` is then None
    unless that instance already exists)."""

    name: str
    gpu: GpuInfo
    profile: MigProfile | None = None
    placement: MigPlacement | None = None
    mig: MigDevice | None = None


@attrs.frozen
class Inventory:
    devices: tuple[Device, ...] = ()
    counter_sets: tuple[CounterSet, ...] = ()
    published: Mapping[str, PublishedDevice] = attrs.field(factory=dict)


# --- values ----------------------------------------------------------------------------
def semver(version: str) -> Version | None:
    """``580.159.04`` → ``580.159.4``, ``13.0`` → ``13.0.0``; numbers past the third become
    build metadata (``1.2.3.4`` → ``1.2.3+4``).  None if ``version`` is not dotted numbers."""
    parts = version.strip().split(".")
    if not parts or not all(p.isdigit() for p in parts):
        return None
    numbers = [str(int(p)) for p in parts] + ["0"] * (3 - len(parts))
    text = ".".join(numbers[:3])
    return Version(text + ("+" + ".".join(numbers[3:]) if len(numbers) > 3 else ""))


def quantity(count: int) -> str:
    """Bytes as an exact quantity in the largest binary unit that divides them."""
    for exponent, suffix in ((50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")):
        if count and count % (1 << exponent) == 0:
            return f"{count >> exponent}{suffix}"
    return str(count)


def label(text: str) -> str:
    """A MIG profile as a DNS-label part: ``1g.10gb`` → ``1g10gb``, ``1g.10gb+me`` →
    ``1g10gb-me``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace(".", "")).strip("-")


def gpu_name(gpu: GpuInfo) -> str:
    return f"gpu-{gpu.index}"


def mig_name(gpu: GpuInfo, profile: str, start: int, compute_instance: int | None = None
             ) -> str:
    name = f"gpu-{gpu.index}-mig-{label(profile)}-{start}"
    return name if compute_instance is None else f"{name}-{compute_instance}"


def _string(text: str) -> str:
    """Cut to the API's 64-byte limit for string attributes."""
    data = text.encode()
    return text if len(data) <= MAX_STRING else data[:MAX_STRING].decode(errors="ignore")


def pcie_root(bus_id: str, *, sysfs_root: str | None = None) -> str:
    """The PCIe root complex of a device, as upstream names it: ``pci<domain>:<bus>``.

    With ``sysfs_root`` (``/sys``), ``<sysfs>/bus/pci/devices/<bus id>`` is resolved; it links
    to ``<sysfs>/devices/pci<domain>:<bus>/...``, whose first component is the root.  Without
    it, or when the link is missing, the device's own domain and bus are used, which is the
    root only for a device directly on a root bus (as in the captured VM).
    """
    if sysfs_root is not None:
        path = os.path.realpath(os.path.join(sysfs_root, "bus", "pci", "devices", bus_id))
        for part in path.split(os.sep):
            if _ROOT.fullmatch(part):
                return part
    domain, bus = bus_id.split(":")[:2]
    return f"pci{domain}:{bus}"


# --- attributes --------------------------------------------------------------------------
def _common(gpu: GpuInfo, driver: DriverInfo, root: str) -> dict[str, AttributeValue]:
    attrs_: dict[str, AttributeValue] = {
        "productName": _string(gpu.name), "brand": _string(gpu.brand),
        "architecture": _string(gpu.architecture),
        "cudaComputeCapability": Version("{}.{}.0".format(*gpu.cuda_compute_capability)),
        PCIE_ROOT: root,
    }
    for key, raw in (("driverVersion", driver.driver_version),
                     ("cudaDriverVersion", driver.cuda_driver_version)):
        if (version := semver(raw)) is not None:
            attrs_[key] = version
    return attrs_


def gpu_device(gpu: GpuInfo, driver: DriverInfo, *, root: str,
               consumes: tuple[CounterConsumption, ...] = ()) -> Device:
    attributes = {"type": "gpu", "uuid": gpu.uuid, "index": gpu.index, "minor": gpu.minor,
                  "pciBusID": gpu.pci_bus_id, **_common(gpu, driver, root)}
    capacity = {"memory": quantity(gpu.memory_bytes)}
    if gpu.multiprocessor_count:
        capacity["multiprocessors"] = str(gpu.multiprocessor_count)
    return Device(name=gpu_name(gpu), attributes=_sorted(attributes), capacity=capacity,
                  consumes_counters=consumes)


def mig_device(gpu: GpuInfo, driver: DriverInfo, *, root: str, profile: str,
               placement: MigPlacement, memory_bytes: int, multiprocessors: int,
               mig: MigDevice | None = None,
               consumes: tuple[CounterConsumption, ...] = ()) -> Device:
    """A MIG device: an existing one (``mig``) or a placement to create (``consumes``)."""
    attributes: dict[str, AttributeValue] = {
        "type": "mig", "profile": _string(profile), "parentUUID": gpu.uuid,
        "parentIndex": gpu.index, "parentMinor": gpu.minor,
        "placementStart": placement.start, "placementSize": placement.size,
        **_common(gpu, driver, root)}
    if mig is not None:
        attributes["uuid"] = mig.uuid
    split = mig is not None and mig.profile.count(".") > 1  # "1c.3g.40gb"
    name = mig_name(gpu, profile, placement.start,
                    mig.compute_instance_id if mig is not None and split else None)
    return Device(name=name, attributes=_sorted(attributes),
                  capacity={"memory": quantity(memory_bytes),
                            "multiprocessors": str(multiprocessors)},
                  consumes_counters=consumes)


def _sorted(attributes: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
    return {k: attributes[k] for k in sorted(attributes)}


# --- counters ----------------------------------------------------------------------------
def counter_set_name(gpu: GpuInfo) -> str:
    return f"gpu-{gpu.index}-counters"


def gpu_counters(gpu: GpuInfo, profiles: Sequence[MigProfile]) -> dict[str, str]:
    """The counters of one GPU: its memory, SMs, memory slices and MIG engines.

    SMs are the GPU's own count, or the largest profile's where NVML did not say; engine
    totals are the largest profile's (the whole GPU as one instance).
    """
    full = max(profiles, key=lambda p: (p.slice_count, p.memory_mb))
    counters = {"memory": quantity(gpu.memory_bytes),
                "multiprocessors": str(gpu.multiprocessor_count or full.multiprocessor_count)}
    counters.update({f"memory-slice-{i}": "1" for i in range(MEMORY_SLICES)})
    counters.update({name: str(getattr(full, field)) for name, field in _ENGINES
                     if getattr(full, field)})
    return counters


def placement_counters(profile: MigProfile, placement: MigPlacement,
                       available: Mapping[str, str]) -> dict[str, str]:
    """What one MIG placement takes from its GPU's counter set."""
    taken = {"memory": quantity(profile.memory_mb << 20),
             "multiprocessors": str(profile.multiprocessor_count)}
    taken.update({f"memory-slice-{i}": "1"
                  for i in range(placement.start, placement.start + placement.size)})
    taken.update({name: str(getattr(profile, field)) for name, field in _ENGINES
                  if getattr(profile, field)})
    return {k: v for k, v in taken.items() if k in available}


# --- the inventory -----------------------------------------------------------------------
def build_inventory(reader: NvmlReader, *, partitionable: bool = False,
                    sysfs_root: str | None = None) -> Inventory:
    """Read ``reader`` once and describe every GPU as ResourceSlice devices."""
    driver = reader.driver()
    devices: list[Device] = []
    sets: list[CounterSet] = []
    published: dict[str, PublishedDevice] = {}

    def add(device: Device, entry: PublishedDevice) -> None:
        devices.append(device)
        published[device.name] = entry

    for gpu in sorted(reader.gpus(), key=lambda g: g.index):
        root = pcie_root(gpu.pci_bus_id, sysfs_root=sysfs_root)
        migs = sorted(reader.mig_devices(gpu) if gpu.mig_enabled else (),
                      key=lambda m: (m.placement.start, m.gpu_instance_id,
                                     m.compute_instance_id))
        profiles = list(reader.mig_profiles(gpu)) if partitionable else []
        if profiles:
            counters = gpu_counters(gpu, profiles)
            name = counter_set_name(gpu)
            sets.append(CounterSet(name=name, counters=counters))
            add(gpu_device(gpu, driver, root=root,
                           consumes=(CounterConsumption(counter_set=name, counters=counters),)),
                PublishedDevice(name=gpu_name(gpu), gpu=gpu))
            existing = {(m.profile, m.placement.start): m for m in migs}
            for profile in profiles:
                for placement in profile.placements:
                    mig = existing.get((profile.name, placement.start))
                    taken = placement_counters(profile, placement, counters)
                    device = mig_device(
                        gpu, driver, root=root, profile=profile.name, placement=placement,
                        memory_bytes=profile.memory_mb << 20,
                        multiprocessors=profile.multiprocessor_count, mig=mig,
                        consumes=(CounterConsumption(counter_set=name, counters=taken),))
                    add(device, PublishedDevice(name=device.name, gpu=gpu, profile=profile,
                                                placement=placement, mig=mig))
        elif gpu.mig_enabled:
            by_name = {p.name: p for p in reader.mig_profiles(gpu)} if migs else {}
            for mig in migs:
                device = mig_device(gpu, driver, root=root, profile=mig.profile,
                                    placement=mig.placement, memory_bytes=mig.memory_bytes,
                                    multiprocessors=mig.multiprocessor_count, mig=mig)
                add(device, PublishedDevice(name=device.name, gpu=gpu,
                                            profile=by_name.get(mig.profile),
                                            placement=mig.placement, mig=mig))
        else:
            add(gpu_device(gpu, driver, root=root), PublishedDevice(name=gpu_name(gpu), gpu=gpu))
    return Inventory(devices=tuple(devices), counter_sets=tuple(sets), published=published)
