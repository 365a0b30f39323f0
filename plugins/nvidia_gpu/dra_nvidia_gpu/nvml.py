"""``PynvmlReader``: the ``NvmlReader`` of ``types`` on top of the ``pynvml`` module.

This is the only module that talks to NVML.  It turns handles, ctypes structs and NVML enums
into the plain snapshot values of ``types`` and every ``NVMLError`` into ``NvmlError``, so
nothing else in the backend knows how NVML spells things.  ``pynvml`` is imported when a
reader is created, not when this module is imported; tests pass ``testing.FakePynvml``
as ``module`` and run this very code.

Shape and choices:

* Snapshots are read fresh on every call (handles are cached; NVML keeps them valid).  A GPU
  that answers ``GPU_IS_LOST`` while being enumerated is left out of ``gpus()`` (and logged):
  one GPU that fell off the bus must not keep the others from being published.  The loss
  itself is reported by ``wait_event``.
* MIG placements come from ``nvmlDeviceGetGpuInstancePossiblePlacements`` (asked twice:
  first for the count, with a NULL array, then for the placements; driver 580 answers on an
  H100 with MIG mode off too).  Where NVML refuses (older drivers, or GPUs without the call)
  they are derived from the profiles, see ``derive_placements``.
* The SM count of a full GPU comes from ``nvmlDeviceGetAttributes``, which an H100 on
  driver 580 refuses (Not Supported; it answers for MIG devices): it is then None.
* Events: the first ``wait_event`` creates one event set and registers, on every GPU, the
  critical event types the GPU supports (Xid critical errors, double-bit ECC errors, fatal
  poison errors, GPU unavailable).  ``GPU_IS_LOST`` from the wait becomes one
  ``XidEvent(gpu_lost=True)`` per GPU found lost; the event set is then rebuilt without
  them, so a lost GPU is reported once instead of on every wait.
* MIG devices are created (``create_mig``) and destroyed (``destroy_mig``) only on request
  of the backend (option ``create_mig``), never MIG mode: a GPU instance at the exact
  placement asked for (``nvmlDeviceCreateGpuInstanceWithPlacement``) with one compute
  instance spanning all of it.  A compute instance that cannot be created takes its GPU
  instance back with it.  Destroying something that is not there (any more) is no error.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from .types import DriverInfo, GpuInfo, MigDevice, MigPlacement, MigProfile, XidEvent

log = logging.getLogger(__name__)

# NVML error codes this module reacts to (nvml.h; the same values in every pynvml).
ERROR_INVALID_ARGUMENT = 2
ERROR_NOT_SUPPORTED = 3
ERROR_NOT_FOUND = 6
ERROR_TIMEOUT = 10
ERROR_FUNCTION_NOT_FOUND = 13
ERROR_GPU_IS_LOST = 15
ERROR_IN_USE = 19
ERROR_INSUFFICIENT_RESOURCES = 23
ERROR_INVALID_STATE = 29

# nvmlEventType* bits registered by ``wait_event`` (where the GPU supports them).
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_XID_CRITICAL = 0x8
EVENT_FATAL_POISON = 0x2000
EVENT_GPU_UNAVAILABLE = 0x4000
CRITICAL_EVENTS = (EVENT_XID_CRITICAL | EVENT_DOUBLE_BIT_ECC | EVENT_FATAL_POISON
                   | EVENT_GPU_UNAVAILABLE)
_NO_INSTANCE = 0xFFFFFFFF  # gpuInstanceId / computeInstanceId of an event not on a MIG device
_PROFILE_COUNT = 0x12  # NVML_GPU_INSTANCE_PROFILE_COUNT of nvidia-ml-py 13.x
_CI_PROFILE_COUNT = 0x0A  # NVML_COMPUTE_INSTANCE_PROFILE_COUNT of nvidia-ml-py 13.x
_CI_ENGINE_PROFILE_SHARED = 0  # NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED

# nvmlBrandType, spelt as nvidia-smi prints it (``<product_brand>``).
BRANDS = {
    0: "Unknown", 1: "Quadro", 2: "Tesla", 3: "NVS", 4: "GRID", 5: "GeForce", 6: "Titan",
    7: "NVIDIA Virtual Applications", 8: "NVIDIA Virtual PC",
    9: "NVIDIA Virtual Compute Server", 10: "NVIDIA RTX Virtual Workstation",
    11: "NVIDIA Cloud Gaming", 12: "Quadro RTX", 13: "NVIDIA RTX", 14: "NVIDIA",
    15: "GeForce RTX", 16: "Titan RTX", 17: "NVIDIA DLA", 18: "NVIDIA RTX Virtual Game Dev",
    19: "NVIDIA NPU",
}
# nvmlDeviceArchitecture_t, spelt as nvidia-smi prints it (``<product_architecture>``).
ARCHITECTURES = {
    2: "Kepler", 3: "Maxwell", 4: "Pascal", 5: "Volta", 6: "Turing", 7: "Ampere",
    8: "Ada Lovelace", 9: "Hopper", 10: "Blackwell", 13: "Rubin",
}

_BUS_ID = re.compile(r"([0-9a-fA-F]{1,8}):([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])")


class NvmlError(Exception):
    """An NVML call failed.  ``code`` is the NVML error code (None when NVML never ran)."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def gpu_lost(self) -> bool:
        return self.code == ERROR_GPU_IS_LOST

    @property
    def not_supported(self) -> bool:
        return self.code == ERROR_NOT_SUPPORTED


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def normalize_bus_id(bus_id: str) -> str:
    """``00000000:00:06.0`` → ``0000:00:06.0``: 4-digit (or wider) domain, lower case."""
    match = _BUS_ID.fullmatch(bus_id.strip())
    if not match:
        raise ValueError(f"not a PCI bus id: {bus_id!r}")
    domain, bus, device, function = match.groups()
    return f"{int(domain, 16):04x}:{int(bus, 16):02x}:{int(device, 16):02x}.{function}"


def profile_name(raw: str | bytes, *, slice_count: int = 0, memory_mb: int = 0) -> str:
    """``"MIG 1g.10gb"`` → ``"1g.10gb"``; built from slices and memory when NVML gave none."""
    name = _text(raw).strip()
    name = name[4:] if name.startswith("MIG ") else name
    return name or f"{slice_count}g.{round(memory_mb / 1024)}gb"


def _power_of_two(value: float) -> int:
    size = 1
    while size * 2 <= value + 0.5 and size < 64:
        size *= 2
    return size


def derive_placements(profiles: Sequence[MigProfile]) -> dict[int, tuple[MigPlacement, ...]]:
    """Possible placements of each profile (by profile id), for when NVML cannot tell.

    The rule of the A100/H100/B200 layout (and A30): a GPU has ``C`` compute slices (the
    largest ``slice_count``; 7) and ``M`` memory slices (8 when ``C`` is 7, else ``C``).  A
    profile spans ``size`` memory slices, its memory share rounded to a power of two
    (1g.10gb: 1, 1g.20gb and 2g.20gb: 2, 3g/4g.40gb: 4, 7g.80gb: 8); it starts at a multiple
    of ``size`` with ``start + size <= M`` and ``start + slice_count <= C``.  On the H100 this
    gives what ``nvidia-smi mig -lgipp`` lists: 1g.10gb (and +me) 0..6, 1g.20gb 0,2,4,6,
    2g.20gb 0,2,4, 3g.40gb 0,4, 4g.40gb 0, 7g.80gb 0 (size 8).
    """
    if not profiles:
        return {}
    compute = max(p.slice_count for p in profiles)
    memory = 8 if compute == 7 else compute
    full_mb = max(p.memory_mb for p in profiles) or 1
    out: dict[int, tuple[MigPlacement, ...]] = {}
    for p in profiles:
        size = min(_power_of_two(p.memory_mb * memory / full_mb), memory)
        out[p.id] = tuple(MigPlacement(start=s, size=size) for s in range(0, memory, size)
                          if s + size <= memory and s + p.slice_count <= compute)
    return out


def _create_reason(exc: NvmlError) -> str:
    """Why NVML refused to create a MIG instance, in words."""
    if exc.code == ERROR_INSUFFICIENT_RESOURCES:
        return f"the placement is taken (it overlaps an existing MIG instance): {exc}"
    if exc.code in (ERROR_NOT_SUPPORTED, ERROR_INVALID_STATE):
        return f"MIG mode is not enabled (or not supported) on this GPU: {exc}"
    return str(exc)


class PynvmlReader:
    """``NvmlReader`` over ``pynvml`` (or anything with its names, such as ``FakePynvml``).

    Calls ``nvmlInit`` on construction and ``nvmlShutdown`` in ``close``; usable as a
    context manager.  Not meant for concurrent ``wait_event`` calls from several threads;
    the snapshot methods may run beside one waiting thread (NVML is thread-safe).
    """

    def __init__(self, module: Any = None) -> None:
        if module is None:
            try:
                import pynvml
            except ImportError as exc:
                raise NvmlError("the pynvml module is missing (pip install nvidia-ml-py)"
                                ) from exc
            module = pynvml
        self._nv = module
        self._handles: dict[int, Any] = {}
        self._uuids: dict[int, str] = {}
        self._profiles: dict[str, tuple[MigProfile, ...]] = {}
        self._lost: set[int] = set()
        self._event_set: Any = None
        self._pending: collections.deque[XidEvent] = collections.deque()
        self._open = False
        self._call("nvmlInit")
        self._open = True

    # --- plumbing ----------------------------------------------------------------------
    def _call(self, name: str, *args: Any) -> Any:
        fn: Callable[..., Any] | None = getattr(self._nv, name, None)
        if fn is None:
            raise NvmlError(f"{name}: not in this pynvml", code=ERROR_FUNCTION_NOT_FOUND)
        try:
            return fn(*args)
        except self._nv.NVMLError as exc:
            code = getattr(exc, "value", None)
            raise NvmlError(f"{name}: {exc} (NVML error {code})", code=code) from exc

    def _try(self, name: str, *args: Any) -> Any:
        """``_call``, but None where the GPU or driver does not support the call."""
        try:
            return self._call(name, *args)
        except NvmlError as exc:
            if exc.code in (ERROR_NOT_SUPPORTED, ERROR_FUNCTION_NOT_FOUND,
                            ERROR_INVALID_ARGUMENT):
                return None
            raise

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = self._call("nvmlDeviceGetHandleByIndex", index)
        return self._handles[index]

    def __enter__(self) -> PynvmlReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- NvmlReader --------------------------------------------------------------------
    def driver(self) -> DriverInfo:
        version = _text(self._call("nvmlSystemGetDriverVersion"))
        cuda = self._try("nvmlSystemGetCudaDriverVersion_v2")
        if cuda is None:
            cuda = self._call("nvmlSystemGetCudaDriverVersion")
        cuda = int(cuda)
        return DriverInfo(driver_version=version,
                          cuda_driver_version=f"{cuda // 1000}.{cuda % 1000 // 10}")

    def gpus(self) -> Sequence[GpuInfo]:
        out = []
        for index in range(int(self._call("nvmlDeviceGetCount"))):
            try:
                out.append(self._gpu(index))
            except NvmlError as exc:
                if not exc.gpu_lost:
                    raise
                log.warning("GPU %d is lost, left out of the inventory: %s", index, exc)
        return out

    def _gpu(self, index: int) -> GpuInfo:
        h = self._handle(index)
        uuid = _text(self._call("nvmlDeviceGetUUID", h))
        self._uuids[index] = uuid
        brand = self._try("nvmlDeviceGetBrand", h)
        arch = self._try("nvmlDeviceGetArchitecture", h)
        major, minor = self._call("nvmlDeviceGetCudaComputeCapability", h)
        pci = self._call("nvmlDeviceGetPciInfo", h)
        try:
            bus_id = normalize_bus_id(_text(pci.busId))
        except ValueError:
            bus_id = f"{pci.domain:04x}:{pci.bus:02x}:{pci.device:02x}.0"
        mig = self._try("nvmlDeviceGetMigMode", h)
        attributes = self._try("nvmlDeviceGetAttributes", h)
        sms = int(attributes.multiprocessorCount) if attributes is not None else 0
        return GpuInfo(
            index=index, minor=int(self._call("nvmlDeviceGetMinorNumber", h)), uuid=uuid,
            name=_text(self._call("nvmlDeviceGetName", h)),
            brand=BRANDS.get(brand, "Unknown") if brand is not None else "Unknown",
            architecture=ARCHITECTURES.get(arch, "Unknown") if arch is not None else "Unknown",
            cuda_compute_capability=(int(major), int(minor)),
            memory_bytes=int(self._call("nvmlDeviceGetMemoryInfo", h).total),
            pci_bus_id=bus_id, mig_enabled=bool(mig is not None and mig[0] == 1),
            multiprocessor_count=sms or None)

    def mig_profiles(self, gpu: GpuInfo) -> Sequence[MigProfile]:
        if gpu.uuid not in self._profiles:
            self._profiles[gpu.uuid] = self._read_profiles(self._handle(gpu.index))
        return self._profiles[gpu.uuid]

    def _read_profiles(self, h: Any) -> tuple[MigProfile, ...]:
        count = int(getattr(self._nv, "NVML_GPU_INSTANCE_PROFILE_COUNT", _PROFILE_COUNT))
        profiles: list[MigProfile] = []
        asked: dict[int, tuple[MigPlacement, ...] | None] = {}
        for index in range(count):
            info = self._try("nvmlDeviceGetGpuInstanceProfileInfo", h, index)
            if info is None:
                continue
            profiles.append(MigProfile(
                id=int(info.id), profile_index=index,
                name=profile_name(getattr(info, "name", b""), slice_count=info.sliceCount,
                                  memory_mb=info.memorySizeMB),
                slice_count=int(info.sliceCount), instance_count=int(info.instanceCount),
                multiprocessor_count=int(info.multiprocessorCount),
                memory_mb=int(info.memorySizeMB), copy_engines=int(info.copyEngineCount),
                decoders=int(info.decoderCount), encoders=int(info.encoderCount),
                jpegs=int(info.jpegCount), ofas=int(info.ofaCount)))
            asked[int(info.id)] = self._placements(h, int(info.id))
        derived = derive_placements(profiles)
        return tuple(attrs.evolve(p, placements=asked[p.id] or derived[p.id])
                     for p in profiles)

    def _placements(self, h: Any, profile_id: int) -> tuple[MigPlacement, ...] | None:
        """The placements NVML lists for a profile id; None where it refuses."""
        count = ctypes.c_uint(0)
        name = "nvmlDeviceGetGpuInstancePossiblePlacements"
        try:
            if self._try(name, h, profile_id, None, ctypes.byref(count)) is None:
                return None
            if count.value == 0:
                return None
            array = (self._nv.c_nvmlGpuInstancePlacement_t * count.value)()
            if self._try(name, h, profile_id, array, ctypes.byref(count)) is None:
                return None
        except NvmlError as exc:
            if exc.gpu_lost:
                raise
            log.debug("placements of MIG profile %d not available: %s", profile_id, exc)
            return None
        return tuple(MigPlacement(start=int(p.start), size=int(p.size))
                     for p in array[:count.value])

    def mig_devices(self, gpu: GpuInfo) -> Sequence[MigDevice]:
        if not gpu.mig_enabled:
            return []
        h = self._handle(gpu.index)
        by_id = {p.id: p for p in self.mig_profiles(gpu)}
        out = []
        for i in range(int(self._call("nvmlDeviceGetMaxMigDeviceCount", h))):
            try:
                mig = self._call("nvmlDeviceGetMigDeviceHandleByIndex", h, i)
            except NvmlError as exc:
                if exc.code in (ERROR_NOT_FOUND, ERROR_INVALID_ARGUMENT):
                    continue
                raise
            gi_id = int(self._call("nvmlDeviceGetGpuInstanceId", mig))
            ci_id = int(self._call("nvmlDeviceGetComputeInstanceId", mig))
            attributes = self._call("nvmlDeviceGetAttributes", mig)
            gi = self._call("nvmlDeviceGetGpuInstanceById", h, gi_id)
            info = self._call("nvmlGpuInstanceGetInfo", gi)
            profile = by_id.get(int(info.profileId))
            name = profile.name if profile is not None else profile_name(
                "", slice_count=attributes.gpuInstanceSliceCount,
                memory_mb=attributes.memorySizeMB)
            if attributes.computeInstanceSliceCount < attributes.gpuInstanceSliceCount:
                name = f"{attributes.computeInstanceSliceCount}c.{name}"
            out.append(MigDevice(
                parent_index=gpu.index, parent_uuid=gpu.uuid,
                uuid=_text(self._call("nvmlDeviceGetUUID", mig)), profile=name,
                gpu_instance_id=gi_id, compute_instance_id=ci_id,
                placement=MigPlacement(start=int(info.placement.start),
                                       size=int(info.placement.size)),
                memory_bytes=int(self._call("nvmlDeviceGetMemoryInfo", mig).total),
                multiprocessor_count=int(attributes.multiprocessorCount)))
        return out

    # --- creating and destroying MIG devices --------------------------------------------
    def _mig_mode_on(self, h: Any) -> bool:
        mode = self._try("nvmlDeviceGetMigMode", h)
        return mode is not None and int(mode[0]) == 1

    def create_mig(self, gpu: GpuInfo, profile: MigProfile, placement: MigPlacement
                   ) -> MigDevice:
        """Create a GPU instance of ``profile`` at ``placement`` with one full compute
        instance; the new MIG device.  MIG mode must already be on.

        ``NvmlError`` says why not: ``ERROR_NOT_SUPPORTED`` when MIG mode is off,
        ``ERROR_INSUFFICIENT_RESOURCES`` when the placement is (partly) taken by another
        GPU instance.
        """
        where = f"GPU {gpu.index}: MIG {profile.name} at memory slice {placement.start}"
        h = self._handle(gpu.index)
        if not self._mig_mode_on(h):
            raise NvmlError(f"{where}: MIG mode is off on this GPU", code=ERROR_NOT_SUPPORTED)
        try:
            info = self._call("nvmlDeviceGetGpuInstanceProfileInfo", h, profile.profile_index)
            spot = self._nv.c_nvmlGpuInstancePlacement_t(placement.start, placement.size)
            gi = self._call("nvmlDeviceCreateGpuInstanceWithPlacement", h, int(info.id),
                            ctypes.byref(spot))
        except NvmlError as exc:
            raise NvmlError(f"{where}: creating the GPU instance failed: "
                            f"{_create_reason(exc)}", code=exc.code) from exc
        try:
            gi_id = int(self._call("nvmlGpuInstanceGetInfo", gi).id)
            ci_profile = self._full_compute_profile(gi, int(info.sliceCount))
            ci = self._call("nvmlGpuInstanceCreateComputeInstance", gi, int(ci_profile.id))
            ci_id = int(self._call("nvmlComputeInstanceGetInfo", ci).id)
        except NvmlError as exc:
            try:
                self._call("nvmlGpuInstanceDestroy", gi)
            except NvmlError as undo:
                log.error("%s: destroying the GPU instance after a failed compute instance "
                          "failed too: %s", where, undo)
            raise NvmlError(f"{where}: creating the compute instance failed: "
                            f"{_create_reason(exc)}", code=exc.code) from exc
        for mig in self.mig_devices(attrs.evolve(gpu, mig_enabled=True)):
            if (mig.gpu_instance_id, mig.compute_instance_id) == (gi_id, ci_id):
                return mig
        raise NvmlError(f"{where}: created GPU instance {gi_id} / compute instance {ci_id}, "
                        "but NVML does not list it as a MIG device", code=ERROR_NOT_FOUND)

    def _full_compute_profile(self, gi: Any, slices: int) -> Any:
        """The compute-instance profile that spans a whole GPU instance of ``slices``."""
        count = int(getattr(self._nv, "NVML_COMPUTE_INSTANCE_PROFILE_COUNT",
                            _CI_PROFILE_COUNT))
        for index in range(count):
            info = self._try("nvmlGpuInstanceGetComputeInstanceProfileInfo", gi, index,
                             _CI_ENGINE_PROFILE_SHARED)
            if info is not None and int(info.sliceCount) == slices:
                return info
        raise NvmlError(f"no compute-instance profile of {slices} slices",
                        code=ERROR_NOT_SUPPORTED)

    def destroy_mig(self, gpu: GpuInfo, gpu_instance_id: int, compute_instance_id: int
                    ) -> None:
        """Destroy a compute instance and its GPU instance.  Whatever is not there (any
        more), MIG mode off included, counts as destroyed; ``ERROR_IN_USE`` while a process
        still runs on it."""
        where = (f"GPU {gpu.index}: MIG GPU instance {gpu_instance_id} / compute instance "
                 f"{compute_instance_id}")
        h = self._handle(gpu.index)
        if not self._mig_mode_on(h):
            return
        try:
            gi = self._call("nvmlDeviceGetGpuInstanceById", h, gpu_instance_id)
        except NvmlError as exc:
            if exc.code in (ERROR_NOT_FOUND, ERROR_INVALID_ARGUMENT):
                return
            raise NvmlError(f"{where}: {exc}", code=exc.code) from exc
        try:
            ci = self._call("nvmlGpuInstanceGetComputeInstanceById", gi, compute_instance_id)
        except NvmlError as exc:
            if exc.code not in (ERROR_NOT_FOUND, ERROR_INVALID_ARGUMENT):
                raise NvmlError(f"{where}: {exc}", code=exc.code) from exc
        else:
            self._destroy(where, "compute instance", "nvmlComputeInstanceDestroy", ci)
        self._destroy(where, "GPU instance", "nvmlGpuInstanceDestroy", gi)

    def _destroy(self, where: str, what: str, function: str, handle: Any) -> None:
        try:
            self._call(function, handle)
        except NvmlError as exc:
            if exc.code == ERROR_NOT_FOUND:
                return
            reason = ("it is in use (a process still runs on it)" if exc.code == ERROR_IN_USE
                      else str(exc))
            raise NvmlError(f"{where}: destroying the {what} failed: {reason}",
                            code=exc.code) from exc

    # --- events ------------------------------------------------------------------------
    def wait_event(self, timeout_ms: int) -> XidEvent | None:
        if self._pending:
            return self._pending.popleft()
        if self._event_set is None:
            self._register()
            if self._pending:
                return self._pending.popleft()
        try:
            data = self._call("nvmlEventSetWait_v2", self._event_set, timeout_ms)
        except NvmlError as exc:
            if exc.code == ERROR_TIMEOUT:
                return None
            if not exc.gpu_lost:
                raise
            return self._on_lost()
        event_type = int(data.eventType)
        try:
            uuid = _text(self._call("nvmlDeviceGetUUID", data.device))
        except NvmlError:
            uuid = ""
        gi, ci = int(data.gpuInstanceId), int(data.computeInstanceId)
        return XidEvent(gpu_uuid=uuid, event_type=event_type,
                        xid=int(data.eventData) if event_type == EVENT_XID_CRITICAL else 0,
                        gpu_instance_id=None if gi == _NO_INSTANCE else gi,
                        compute_instance_id=None if ci == _NO_INSTANCE else ci)

    def _register(self) -> None:
        event_set = self._call("nvmlEventSetCreate")
        for index in range(int(self._call("nvmlDeviceGetCount"))):
            if index in self._lost:
                continue
            try:
                h = self._handle(index)
                self._uuids.setdefault(index, _text(self._call("nvmlDeviceGetUUID", h)))
                supported = self._try("nvmlDeviceGetSupportedEventTypes", h)
                mask = CRITICAL_EVENTS if supported is None else CRITICAL_EVENTS & supported
                if mask:
                    self._call("nvmlDeviceRegisterEvents", h, mask, event_set)
                else:
                    log.warning("GPU %d: no critical event type supported", index)
            except NvmlError as exc:
                if exc.not_supported:
                    log.warning("GPU %d: critical events not supported: %s", index, exc)
                    continue
                if not exc.gpu_lost:
                    self._try("nvmlEventSetFree", event_set)
                    raise
                self._mark_lost(index)
        self._event_set = event_set

    def _mark_lost(self, index: int) -> None:
        self._lost.add(index)
        self._pending.append(XidEvent(gpu_uuid=self._uuids.get(index, ""), xid=0,
                                      event_type=0, gpu_lost=True))

    def _on_lost(self) -> XidEvent:
        """NVML said a GPU is lost: find which, and rebuild the event set without them.

        An event with an empty ``gpu_uuid`` means NVML did not let us tell which GPU.
        """
        for index in range(int(self._call("nvmlDeviceGetCount"))):
            if index in self._lost:
                continue
            try:
                self._call("nvmlDeviceGetMemoryInfo", self._handle(index))
            except NvmlError as exc:
                if exc.gpu_lost:
                    self._mark_lost(index)
        self._free_event_set()
        if self._pending:
            return self._pending.popleft()
        return XidEvent(gpu_uuid="", xid=0, event_type=0, gpu_lost=True)

    def _free_event_set(self) -> None:
        if self._event_set is not None:
            try:
                self._call("nvmlEventSetFree", self._event_set)
            except NvmlError as exc:
                log.debug("nvmlEventSetFree: %s", exc)
            self._event_set = None

    @property
    def lost_gpus(self) -> frozenset[int]:
        """Indexes of the GPUs found lost so far."""
        return frozenset(self._lost)

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._free_event_set()
        self._call("nvmlShutdown")

