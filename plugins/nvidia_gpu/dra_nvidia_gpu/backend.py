"""``NvidiaGpuBackend``: the dra-framework hooks of the NVIDIA GPU backend.

It wires the pieces together: NVML snapshots (``nvml``) become ResourceSlice devices
(``inventory``), opaque ``GpuConfig`` / ``MigDeviceConfig`` are decoded (``config``), prepare
returns the CDI edits a CUDA container needs (``cdiedits``) plus those of the claim's sharing
strategy (``sharing``), and NVML critical events mark devices unhealthy — in the health stream
and as a ``NoSchedule`` taint in the node's ResourceSlice (``health``).

Options (``--backend-option nvidia-gpu.KEY=VALUE``):

* ``driver_name`` — default ``gpu.nvidia.dra-framework.io`` (never NVIDIA's own
  ``gpu.nvidia.com``, so both drivers can coexist);
* ``driver_root`` (``/``), ``dev_root`` (``/dev``), ``proc_root`` (``/proc``),
  ``sysfs_root`` (``/sys``) — where the host's driver files and nodes are seen;
* ``partitionable`` (false) — also publish every possible MIG placement with shared counters;
* ``create_mig`` (false) — reserved: creating MIG devices at prepare is not implemented, so a
  placement that does not exist yet is refused with a clear error;
* ``health`` (true) — watch NVML events;
* ``nvml`` (``real``) — ``fake`` runs on the captured H100 (``fake-8``: eight of them,
  ``fake-8-mig``: with MIG devices) and a fake host tree under the state dir, for demos/tests.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from dra_framework import (
    AllocatedDevice,
    BackendError,
    BackendSettings,
    ClaimRef,
    ConfigError,
    CounterSet,
    Device,
    DeviceHealth,
    DriverInfo,
    PreparedDevice,
    hookimpl,
)
from dra_framework.convert import structure_options

from . import config as gpuconfig
from .cdiedits import HostLayout, common_edits, gpu_edits, merge_edits, mig_edits
from .health import HealthMonitor
from .inventory import Inventory, PublishedDevice, build_inventory
from .nvml import NvmlError, PynvmlReader
from .sharing import ClaimSharing, NvidiaSmiSharing, SharingControl, SharingManager
from .types import NvmlReader

log = logging.getLogger(__name__)

DEFAULT_DRIVER = "gpu.nvidia.dra-framework.io"


@attrs.frozen
class NvidiaOptions:
    driver_name: str = DEFAULT_DRIVER
    driver_root: str = "/"
    dev_root: str = "/dev"
    proc_root: str = "/proc"
    sysfs_root: str = "/sys"
    partitionable: bool = False
    create_mig: bool = False
    health: bool = True
    nvml: Literal["real", "fake", "fake-8", "fake-8-mig"] = "real"


class RecordingSharing:
    """A ``SharingControl`` that only records, for ``nvml=fake``: no GPU is touched."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def set_timeslice(self, gpu_uuid: str, interval: Any) -> None:
        self.calls.append(("set_timeslice", (gpu_uuid, interval)))

    def reset_timeslice(self, gpu_uuid: str) -> None:
        self.calls.append(("reset_timeslice", (gpu_uuid,)))

    def start_mps(self, gpu_uuids: Sequence[str], *, pipe_dir: str, log_dir: str,
                  active_thread_pct: int | None, pinned_limits: Mapping[str, int]) -> Any:
        from .sharing import MpsDaemon

        self.calls.append(("start_mps", (tuple(gpu_uuids), active_thread_pct)))
        return MpsDaemon(gpu_uuids=tuple(gpu_uuids), pipe_dir=pipe_dir, log_dir=log_dir)

    def stop_mps(self, daemon: Any) -> None:
        self.calls.append(("stop_mps", (tuple(daemon.gpu_uuids),)))


class NvidiaGpuBackend:
    """The NVIDIA GPU backend (entry point ``nvidia-gpu``)."""

    def __init__(self) -> None:
        self.options = NvidiaOptions()
        self.node_name = ""
        self.reader: NvmlReader | None = None
        self.layout = HostLayout()
        self.sharing: SharingManager | None = None
        self.monitor: HealthMonitor | None = None
        self.fake_sharing: RecordingSharing | None = None
        self.fake_nvml: Any = None  # the FakePynvml with ``nvml=fake*``: tests inject events
        self._inventory = Inventory()

    # -- set-up ---------------------------------------------------------------------------

    @hookimpl
    def dra_setup(self, settings: BackendSettings) -> None:
        opts = structure_options(settings.options, NvidiaOptions, backend="nvidia-gpu")
        if opts.create_mig:
            raise ConfigError("creating MIG devices at prepare is not supported yet",
                              path="create_mig")
        self.options, self.node_name = opts, settings.node_name
        state = Path(settings.state_dir or tempfile.mkdtemp(prefix="dra-nvidia-"))
        state.mkdir(parents=True, exist_ok=True)
        control: SharingControl
        if opts.nvml == "real":
            self.reader = PynvmlReader()
            self.layout = HostLayout(dev_root=opts.dev_root, driver_root=opts.driver_root,
                                     proc_root=opts.proc_root)
            control = NvidiaSmiSharing()
        else:
            from .fakehost import build_fake_host
            from .testing import FakePynvml

            fake = (FakePynvml.from_capture() if opts.nvml == "fake"
                    else FakePynvml.synthetic(gpus=8, mig=opts.nvml == "fake-8-mig"))
            self.fake_nvml = fake
            self.reader = PynvmlReader(fake)
            self.layout = build_fake_host(state / "fake-host")
            self.fake_sharing = RecordingSharing()
            control = self.fake_sharing
        self.sharing = SharingManager(control=control, run_dir=str(state / "mps"))
        self._inventory = self._read_inventory()
        if opts.health:
            self.monitor = HealthMonitor(
                self.reader, gpus=self.reader.gpus(), on_change=settings.inventory_changed,
                pool=self.node_name, taint_key=f"{opts.driver_name}/unhealthy")

    def _read_inventory(self) -> Inventory:
        assert self.reader is not None
        sysfs = None if self.options.nvml != "real" else self.options.sysfs_root
        try:
            return build_inventory(self.reader, partitionable=self.options.partitionable,
                                   sysfs_root=sysfs)
        except NvmlError as exc:
            raise BackendError(f"reading the GPUs through NVML failed: {exc}") from exc

    @hookimpl
    def dra_driver_info(self) -> DriverInfo:
        return DriverInfo(driver_name=self.options.driver_name, cdi_class="gpu")

    # -- publishing -----------------------------------------------------------------------

    def _uuids(self) -> dict[str, str]:
        """Published device name → the UUID of the GPU it belongs to."""
        return {name: entry.gpu.uuid for name, entry in self._inventory.published.items()}

    @hookimpl
    def dra_inventory(self) -> Sequence[Device]:
        self._inventory = self._read_inventory()
        taints = self.monitor.taints(self._uuids()) if self.monitor else {}
        return [attrs.evolve(d, taints=(*d.taints, taints[d.name])) if d.name in taints else d
                for d in self._inventory.devices]

    @hookimpl
    def dra_counter_sets(self) -> Sequence[CounterSet]:
        return list(self._inventory.counter_sets)

    @hookimpl
    def dra_device_health(self) -> Sequence[DeviceHealth] | None:
        return self.monitor.statuses(self._uuids()) if self.monitor else None

    # -- config and prepare ---------------------------------------------------------------

    @hookimpl
    def dra_decode_config(self, parameters: Mapping[str, Any]) -> Any:
        return gpuconfig.decode(parameters, driver=self.options.driver_name)

    def _device(self, device: AllocatedDevice) -> PublishedDevice:
        entry = self._inventory.published.get(device.device)
        if device.pool != self.node_name or entry is None:
            raise BackendError(f"device {device.pool}/{device.device} is not a device of "
                               f"this node")
        if entry.profile is not None and entry.mig is None:
            raise BackendError(
                f"device {device.device} is a MIG placement that does not exist yet; "
                "creating MIG devices at prepare is not supported (create them with "
                "nvidia-smi, or publish without partitionable)")
        return entry

    @hookimpl
    def dra_prepare_claim(
        self, claim: ClaimRef, devices: Sequence[AllocatedDevice]
    ) -> Sequence[PreparedDevice]:
        assert self.reader is not None and self.sharing is not None
        entries = {(d.pool, d.device): self._device(d) for d in devices}
        try:
            common = common_edits(layout=self.layout, driver=self.reader.driver())
        except NvmlError as exc:
            raise BackendError(f"NVML failed: {exc}") from exc
        sharing_config = None
        for d in devices:
            entry = entries[(d.pool, d.device)]
            configs, driver = list(d.config), self.options.driver_name
            cfg: gpuconfig.GpuConfig | gpuconfig.MigDeviceConfig = (
                gpuconfig.effective(configs, driver=driver, mig=True) if entry.mig is not None
                else gpuconfig.effective(configs, driver=driver))
            if cfg.sharing is not None:
                sharing_config = cfg.sharing
        gpus = sorted({e.gpu.uuid for e in entries.values()})
        applied = self.sharing.prepare(claim_uid=claim.uid, gpu_uuids=gpus,
                                       sharing=sharing_config)
        shared = applied.edits() if applied is not None else None
        state = {"sharing": applied.to_state()} if applied is not None else {}
        out = []
        for (pool, name), entry in entries.items():
            own = (mig_edits(entry.mig, parent_minor=entry.gpu.minor, layout=self.layout)
                   if entry.mig is not None else gpu_edits(entry.gpu, layout=self.layout))
            parts = [common, own] + ([shared] if shared is not None else [])
            out.append(PreparedDevice(pool=pool, device=name, edits=merge_edits(*parts),
                                      state=state))
        return out

    @hookimpl
    def dra_unprepare_claim(self, claim: ClaimRef, devices: Sequence[PreparedDevice]) -> None:
        assert self.sharing is not None
        for d in devices:
            if "sharing" in d.state and claim.uid not in self.sharing.claims():
                self.sharing.restore(d.state["sharing"])  # after a restart of the plugin
                break
        self.sharing.unprepare(claim_uid=claim.uid)

    @hookimpl
    def dra_shutdown(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        if self.reader is not None:
            self.reader.close()


__all__ = ["DEFAULT_DRIVER", "ClaimSharing", "NvidiaGpuBackend", "NvidiaOptions"]
