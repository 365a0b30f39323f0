"""What the backend knows about the GPUs of a node: snapshots read from NVML.

These plain attrs values are the seam between NVML (``nvml.NvmlReader``, real or fed by the fake
NVML of ``testing``) and everything that turns them into ResourceSlice devices, CDI edits and
health.  Nothing here imports ``pynvml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs


@attrs.frozen
class GpuInfo:
    """One full GPU."""

    index: int
    minor: int  # /dev/nvidia<minor>
    uuid: str
    name: str  # "NVIDIA H100 80GB HBM3"
    brand: str  # "Nvidia", "Tesla", ... (NVML brand enum name, title case)
    architecture: str  # "Hopper", "Ampere", ...
    cuda_compute_capability: tuple[int, int]
    memory_bytes: int
    pci_bus_id: str  # "0000:00:06.0" (domain:bus:device.function, lower case)
    mig_enabled: bool
    multiprocessor_count: int | None = None


@attrs.frozen
class MigPlacement:
    start: int
    size: int


@attrs.frozen
class MigProfile:
    """A GPU-instance profile the GPU supports (``nvidia-smi mig -lgip``)."""

    id: int  # NVML profile id (e.g. 19 for 1g.10gb on H100)
    profile_index: int  # NVML_GPU_INSTANCE_PROFILE_* index (0 = 1 slice, ...)
    name: str  # "1g.10gb"
    slice_count: int
    instance_count: int
    multiprocessor_count: int
    memory_mb: int
    copy_engines: int = 0
    decoders: int = 0
    encoders: int = 0
    jpegs: int = 0
    ofas: int = 0
    placements: tuple[MigPlacement, ...] = ()


@attrs.frozen
class MigDevice:
    """An existing MIG device (GPU instance + compute instance)."""

    parent_index: int
    parent_uuid: str
    uuid: str
    profile: str  # "1g.10gb"
    gpu_instance_id: int
    compute_instance_id: int
    placement: MigPlacement
    memory_bytes: int
    multiprocessor_count: int


@attrs.frozen
class DriverInfo:
    driver_version: str  # "580.159.04"
    cuda_driver_version: str  # "13.0"


@attrs.frozen
class XidEvent:
    """An NVML critical event: an Xid error, or a GPU that fell off the bus."""

    gpu_uuid: str
    xid: int  # 0 when the event is not an Xid
    event_type: int  # NVML event type bit
    gpu_lost: bool = False
    # The MIG device the event is about, when NVML says (None: the whole GPU or unknown).
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


class NvmlReader(Protocol):
    """The view of NVML that the backend needs; implemented by ``nvml.PynvmlReader``.

    Read-only except ``create_mig`` / ``destroy_mig``, which the backend calls only with its
    ``create_mig`` option on; nothing here changes MIG mode.
    """

    def driver(self) -> DriverInfo: ...

    def gpus(self) -> Sequence[GpuInfo]: ...

    def mig_profiles(self, gpu: GpuInfo) -> Sequence[MigProfile]: ...

    def mig_devices(self, gpu: GpuInfo) -> Sequence[MigDevice]: ...

    def create_mig(self, gpu: GpuInfo, profile: MigProfile, placement: MigPlacement
                   ) -> MigDevice:
        """Create a GPU instance of ``profile`` at ``placement`` with one compute instance
        spanning it (MIG mode must be on); raises ``nvml.NvmlError``."""
        ...

    def destroy_mig(self, gpu: GpuInfo, gpu_instance_id: int, compute_instance_id: int
                    ) -> None:
        """Destroy a compute instance and its GPU instance; what is not there counts as
        destroyed."""
        ...

    def wait_event(self, timeout_ms: int) -> XidEvent | None:
        """Block up to ``timeout_ms`` for a critical event on any GPU; None on timeout."""
        ...

    def close(self) -> None: ...
