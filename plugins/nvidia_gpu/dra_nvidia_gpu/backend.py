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
* ``create_mig`` (false) — with ``partitionable``: create the MIG device of an allocated
  placement at prepare and destroy it at unprepare (see "Creating MIG devices" below); off,
  a placement that does not exist yet is refused with a clear error;
* ``health`` (true) — watch NVML events;
* ``nvml`` (``real``) — ``fake`` runs on the captured H100 (``fake-8``: eight of them,
  ``fake-8-mig``: with MIG devices) and a fake host tree under the state dir, for demos/tests.

Creating MIG devices (``create_mig=true``).  At prepare, an allocated placement device
(``gpu-<i>-mig-<profile>-<start>``) whose MIG device does not exist yet is created: a GPU
instance at exactly that placement with one compute instance spanning it.  MIG mode must
already be on for the GPU: the backend never changes MIG mode (that needs the GPU idle, or a
reset); a GPU with MIG mode off is a per-claim error saying the administrator must enable it.
A placement whose MIG device already exists (made by the administrator) is used as it is,
and never destroyed.  A placement that overlaps an existing instance (NVML: insufficient
resources) is a per-claim error.  What a claim created is recorded twice:

* in the device's ``PreparedDevice.state`` as ``{"created_mig": {"gpu_index", "gpu_uuid",
  "gi", "ci", "uuid"}}``, for the unprepare of a prepared claim;
* in the ledger ``<state dir>/created-mig.json`` (``MigLedger``): an entry (claim uid,
  device, GPU, profile, placement) is written before the instance is created and completed
  with its ids right after, and removed once the instance is destroyed.  After a crash
  between creating and the framework's commit, the framework's roll-back calls unprepare
  with empty state; the ledger then names what the claim created.  An entry without ids (a
  crash during creation itself) is resolved by looking for the MIG device at that placement
  that no other ledger entry names.

Unprepare stops the claim's sharing first, then destroys what the claim created (by state
and ledger, by GPU instance and compute instance id, skipped when a different MIG device
holds those ids by now) and nothing else; what is already gone counts as destroyed, so it is
idempotent.  A failing prepare destroys what it created before raising.  After creating or
destroying, ``inventory_changed`` makes the framework republish (the placement device
carries the MIG device's ``uuid`` while it exists).  Limit: a crash between creating the GPU
instance and its compute instance leaves a GPU instance without compute instance, which is
not a MIG device and is not found; ``nvidia-smi mig -lgi`` shows it.
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
from .migledger import MigLedger
from .nvml import NvmlError, PynvmlReader
from .sharing import ClaimSharing, NvidiaSmiSharing, SharingControl, SharingManager
from .types import GpuInfo, MigDevice, NvmlReader

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


class NvidiaGpuBackend:
    """The NVIDIA GPU backend (entry point ``nvidia-gpu``)."""

    def __init__(self) -> None:
        self.options = NvidiaOptions()
        self.node_name = ""
        self.reader: NvmlReader | None = None
        self.layout = HostLayout()
        self.sharing: SharingManager | None = None
        self.monitor: HealthMonitor | None = None
        self.fake_sharing: Any = None  # the RecordingSharing of ``nvml=fake*``
        self.fake_nvml: Any = None  # the FakePynvml with ``nvml=fake*``: tests inject events
        self.ledger: MigLedger | None = None
        self._inventory = Inventory()
        self._inventory_changed: Any = lambda: None

    # -- set-up ---------------------------------------------------------------------------

    @hookimpl
    def dra_setup(self, settings: BackendSettings) -> None:
        opts = structure_options(settings.options, NvidiaOptions, backend="nvidia-gpu")
        if opts.create_mig and not opts.partitionable:
            raise ConfigError("needs partitionable=true: only published MIG placements can be "
                              "created at prepare", path="create_mig")
        self.options, self.node_name = opts, settings.node_name
        self._inventory_changed = settings.inventory_changed
        state = Path(settings.state_dir or tempfile.mkdtemp(prefix="dra-nvidia-"))
        state.mkdir(parents=True, exist_ok=True)
        self.ledger = MigLedger(state / "created-mig.json")
        control: SharingControl
        if opts.nvml == "real":
            self.reader = PynvmlReader()
            self.layout = HostLayout(dev_root=opts.dev_root, driver_root=opts.driver_root,
                                     proc_root=opts.proc_root)
            control = NvidiaSmiSharing()
        else:
            from .fakehost import build_fake_host
            from .testing import FakePynvml, RecordingSharing

            fake = (FakePynvml.from_capture() if opts.nvml == "fake"
                    else FakePynvml.synthetic(gpus=8, mig=opts.nvml == "fake-8-mig"))
            self.fake_nvml = fake
            self.reader = PynvmlReader(fake)
            self.layout = build_fake_host(state / "fake-host")
            self.fake_sharing = RecordingSharing()
            control = self.fake_sharing
        self.sharing = SharingManager(control=control, run_dir=str(state / "mps"))
        self._inventory = self._read_inventory()
        if opts.nvml != "real":
            for entry in self._inventory.published.values():
                if entry.mig is not None:
                    self._fake_caps(entry.gpu, entry.mig, add=True)
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
        if entry.profile is not None and entry.mig is None and not self.options.create_mig:
            raise BackendError(
                f"device {device.device} is a MIG placement that does not exist yet, and "
                "creating MIG devices at prepare is off (backend option create_mig; or "
                "create it with nvidia-smi, or publish without partitionable)")
        return entry

    @staticmethod
    def _to_create(entry: PublishedDevice) -> bool:
        return entry.profile is not None and entry.placement is not None and entry.mig is None

    def _fake_caps(self, gpu: GpuInfo, mig: MigDevice | None = None, *, add: bool,
                   gi: int | None = None) -> None:
        """With ``nvml=fake*``: what the driver does to the capability files (``fakehost``)."""
        if self.options.nvml == "real":
            return
        from .fakehost import add_mig_capabilities, remove_mig_capabilities

        if add and mig is not None:
            add_mig_capabilities(self.layout, parent_minor=gpu.minor,
                                 gi=mig.gpu_instance_id, ci=mig.compute_instance_id)
        elif not add and gi is not None:
            remove_mig_capabilities(self.layout, parent_minor=gpu.minor, gi=gi)

    def _create(self, claim: ClaimRef, name: str, entry: PublishedDevice) -> MigDevice:
        """Create the MIG device of placement device ``name`` for ``claim``."""
        assert self.reader is not None and self.ledger is not None
        assert entry.profile is not None and entry.placement is not None
        gpu = entry.gpu
        if not gpu.mig_enabled:
            raise BackendError(
                f"device {name}: MIG mode is off on GPU {gpu.index} ({gpu.uuid}); it must be "
                f"enabled by the administrator (nvidia-smi -i {gpu.index} -mig 1) — this "
                "driver creates MIG devices but never changes MIG mode")
        self.ledger.intend(claim=claim.uid, device=name, gpu=gpu, profile=entry.profile,
                           placement=entry.placement)
        try:
            mig = self.reader.create_mig(gpu, entry.profile, entry.placement)
        except NvmlError as exc:
            self.ledger.remove(claim=claim.uid, device=name)
            raise BackendError(f"device {name}: cannot create the MIG device: {exc}") from exc
        log.info("claim %s: created MIG device %s (%s, GPU instance %d, compute instance %d)",
                 claim.uid, name, mig.uuid, mig.gpu_instance_id, mig.compute_instance_id)
        self.ledger.created(claim=claim.uid, device=name, mig=mig)
        self._fake_caps(gpu, mig, add=True)
        return mig

    @hookimpl
    def dra_prepare_claim(
        self, claim: ClaimRef, devices: Sequence[AllocatedDevice]
    ) -> Sequence[PreparedDevice]:
        assert self.reader is not None and self.sharing is not None
        if self.options.create_mig and any(
                (e := self._inventory.published.get(d.device)) is not None and e.profile
                is not None for d in devices):
            self._inventory = self._read_inventory()  # which placements exist right now
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
                gpuconfig.effective(configs, driver=driver, mig=True)
                if entry.mig is not None or entry.profile is not None
                else gpuconfig.effective(configs, driver=driver))
            if cfg.sharing is not None:
                sharing_config = cfg.sharing
        created: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            for (pool, name), entry in list(entries.items()):
                if self._to_create(entry):
                    mig = self._create(claim, name, entry)
                    entries[(pool, name)] = attrs.evolve(entry, mig=mig)
                    created[(pool, name)] = {
                        "gpu_index": entry.gpu.index, "gpu_uuid": entry.gpu.uuid,
                        "gi": mig.gpu_instance_id, "ci": mig.compute_instance_id,
                        "uuid": mig.uuid}
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
                mine = ({**state, "created_mig": created[(pool, name)]}
                        if (pool, name) in created else state)
                out.append(PreparedDevice(pool=pool, device=name, edits=merge_edits(*parts),
                                          state=mine))
        except BaseException:
            if created or any(self._to_create(e) for e in entries.values()):
                try:
                    self._release(claim.uid, list(created.values()))
                except Exception:
                    log.exception("claim %s: destroying the MIG devices it created after a "
                                  "failed prepare failed; the roll-back retries", claim.uid)
            raise
        finally:
            if created:
                self._inventory_changed()
        return out

    @hookimpl
    def dra_unprepare_claim(self, claim: ClaimRef, devices: Sequence[PreparedDevice]) -> None:
        assert self.sharing is not None
        for d in devices:
            if "sharing" in d.state and claim.uid not in self.sharing.claims():
                self.sharing.restore(d.state["sharing"])  # after a restart of the plugin
                break
        self.sharing.unprepare(claim_uid=claim.uid)
        self._release(claim.uid, [d.state["created_mig"] for d in devices
                                  if isinstance(d.state.get("created_mig"), Mapping)])

    def _release(self, claim_uid: str, recorded: Sequence[Mapping[str, Any]]) -> None:
        """Destroy the MIG devices ``claim_uid`` created: those in ``recorded`` (device
        state) and those the ledger names for it.  What is gone already counts as done."""
        if self.reader is None or self.ledger is None:
            return
        everything = self.ledger.entries()
        mine = [e for e in everything if e.get("claim") == claim_uid]
        if not recorded and not mine:
            return
        try:
            gpus = {g.uuid: g for g in self.reader.gpus()}
        except NvmlError as exc:
            raise BackendError(f"NVML failed: {exc}") from exc
        # (gpu uuid, gi, ci) -> (expected MIG uuid or None, ledger device names)
        targets: dict[tuple[str, int, int], tuple[str | None, list[str]]] = {}
        for r in recorded:
            key = (str(r.get("gpu_uuid", "")), int(r["gi"]), int(r["ci"]))
            if not key[0]:
                by_index = [g for g in gpus.values() if g.index == int(r["gpu_index"])]
                key = (by_index[0].uuid if by_index else "", key[1], key[2])
            targets.setdefault(key, (r.get("uuid"), []))
        others = {(e["gpu_uuid"], e["gi"], e["ci"]) for e in everything
                  if e.get("claim") != claim_uid and e.get("gi") is not None}
        unresolved: list[str] = []
        for e in mine:
            gpu = gpus.get(str(e["gpu_uuid"]))
            if e.get("gi") is None and gpu is not None:
                # written before creating, and no ids since: look at the placement
                found = [m for m in self._mig_devices(gpu) if m.profile == e["profile"]
                         and m.placement.start == e["start"]
                         and (gpu.uuid, m.gpu_instance_id, m.compute_instance_id)
                         not in others]
                if not found:
                    unresolved.append(e["device"])  # never created: nothing to destroy
                    continue
                e = {**e, "gi": found[0].gpu_instance_id, "ci": found[0].compute_instance_id,
                     "uuid": found[0].uuid}
            if e.get("gi") is None:
                unresolved.append(e["device"])
                continue
            key = (str(e["gpu_uuid"]), int(e["gi"]), int(e["ci"]))
            targets.setdefault(key, (e.get("uuid"), []))[1].append(e["device"])
        errors: list[str] = []
        changed = False
        for (gpu_uuid, gi, ci), (mig_uuid, names) in targets.items():
            gpu = gpus.get(gpu_uuid)
            if gpu is not None:
                live = {(m.gpu_instance_id, m.compute_instance_id): m
                        for m in self._mig_devices(gpu)}
                now = live.get((gi, ci))
                if now is not None and mig_uuid and now.uuid != mig_uuid:
                    log.warning("claim %s: GPU instance %d / compute instance %d of GPU %s "
                                "is %s now, not %s: left alone", claim_uid, gi, ci, gpu_uuid,
                                now.uuid, mig_uuid)
                else:
                    try:
                        self.reader.destroy_mig(gpu, gi, ci)
                    except NvmlError as exc:
                        errors.append(str(exc))
                        continue
                    changed = True
                    self._fake_caps(gpu, add=False, gi=gi)
                    log.info("claim %s: destroyed MIG device %s (GPU instance %d, compute "
                             "instance %d of GPU %s)", claim_uid, mig_uuid, gi, ci, gpu_uuid)
            else:
                log.warning("claim %s: GPU %s is gone; its MIG devices with it", claim_uid,
                            gpu_uuid)
            for name in names:
                self.ledger.remove(claim=claim_uid, device=name)
        for name in unresolved:
            self.ledger.remove(claim=claim_uid, device=name)
        if changed:
            self._inventory_changed()
        if errors:
            raise BackendError("destroying the MIG devices of the claim failed: "
                               + "; ".join(errors))

    def _mig_devices(self, gpu: GpuInfo) -> Sequence[MigDevice]:
        assert self.reader is not None
        try:
            return self.reader.mig_devices(gpu)
        except NvmlError as exc:
            raise BackendError(f"NVML failed: {exc}") from exc

    @hookimpl
    def dra_shutdown(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        if self.reader is not None:
            self.reader.close()


__all__ = ["DEFAULT_DRIVER", "ClaimSharing", "MigLedger", "NvidiaGpuBackend", "NvidiaOptions"]
