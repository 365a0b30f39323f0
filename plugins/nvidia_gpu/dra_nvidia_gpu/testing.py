"""A fake ``pynvml`` for tests and backend authors: ``FakePynvml``.

It has the functions, constants, structs and ``NVMLError`` of ``pynvml`` that
``nvml.PynvmlReader`` uses, with the same signatures and return shapes, so the real reader
runs against it::

    reader = PynvmlReader(module=FakePynvml.from_capture())   # the captured H100, MIG off
    reader = PynvmlReader(module=FakePynvml.synthetic(gpus=8, mig=True))

The data comes from ``testdata/h100/nvml_probe.json``, what NVML returned on a real H100 node.
Calls that the capture shows refused raise ``NVMLError`` Not Supported here too; that includes
the possible MIG placements in ``from_capture`` (so the reader's fallback runs), while
``synthetic`` GPUs answer them with what driver 580 returns on that H100 (MIG mode off or on).
``nvmlDeviceGetAttributes`` of a full GPU is Not Supported, as on the real H100; set
``FakeGpu.multiprocessor_count`` to make it answer.

MIG devices: ``create_mig_device`` sets one up directly (as an administrator would);
``nvmlDeviceCreateGpuInstanceWithPlacement`` and ``nvmlGpuInstanceCreateComputeInstance``
create through NVML as a backend does, refusing (``NVML_ERROR_NOT_SUPPORTED``) while MIG mode
is off and (``NVML_ERROR_INSUFFICIENT_RESOURCES``) a placement whose memory slices overlap an
existing GPU instance; ``nvmlComputeInstanceDestroy`` and ``nvmlGpuInstanceDestroy`` remove
them (a GPU instance that still has its compute instance is ``NVML_ERROR_IN_USE``).

Faults: ``inject_xid`` queues a critical Xid event, ``lose_gpu`` makes every later call on
that GPU's handles raise ``GPU_IS_LOST`` and the next event wait report it, ``fail`` makes one
function raise a given error.  Nothing sleeps: an event wait with nothing queued times out at
once.
"""

from __future__ import annotations

import collections
import copy
import ctypes
import importlib.resources
import json
import uuid as uuidlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from .sharing import MpsDaemon

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_IN_USE = 19
NVML_ERROR_INSUFFICIENT_RESOURCES = 23
NVML_ERROR_INVALID_STATE = 29
NVML_ERROR_UNKNOWN = 999
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1
NVML_GPU_INSTANCE_PROFILE_COUNT = 0x12
NVML_COMPUTE_INSTANCE_PROFILE_COUNT = 0x0A
NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED = 0
nvmlEventTypeSingleBitEccError = 0x1
nvmlEventTypeDoubleBitEccError = 0x2
nvmlEventTypeXidCriticalError = 0x8
nvmlEventTypeFatalPoisonError = 0x2000
nvmlEventTypeGpuUnavailableError = 0x4000

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized", NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported", NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions", NVML_ERROR_TIMEOUT: "Timeout",
    NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found", NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_IN_USE: "In use by another client",
    NVML_ERROR_INSUFFICIENT_RESOURCES: "Insufficient resources",
    NVML_ERROR_INVALID_STATE: "Invalid state",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}
# NVML_COMPUTE_INSTANCE_PROFILE_* index -> compute slices (1, 2, 3, 4, 7, 8, 6 slices; the
# REV1/REV2 variants of 1 and 2 slices are not modelled).
_CI_SLICES = (1, 2, 3, 4, 7, 8, 6)
# Bus ids of the eight GPUs of a DGX H100, used by ``synthetic``.
_DGX_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
_NO_INSTANCE = 0xFFFFFFFF
# What ``nvidia-smi mig -lgipp`` lists for an H100 80GB: profile id -> (start, size).
_H100_PLACEMENTS: dict[int, tuple[tuple[int, int], ...]] = {
    19: tuple((s, 1) for s in range(7)),  # 1g.10gb
    20: tuple((s, 1) for s in range(7)),  # 1g.10gb+me
    15: ((0, 2), (2, 2), (4, 2), (6, 2)),  # 1g.20gb
    14: ((0, 2), (2, 2), (4, 2)),  # 2g.20gb
    9: ((0, 4), (4, 4)),  # 3g.40gb
    5: ((0, 4),),  # 4g.40gb
    0: ((0, 8),),  # 7g.80gb
}


def _placement_size(profile_id: int) -> int:
    return _H100_PLACEMENTS[profile_id][0][1]


class NVMLError(Exception):
    """pynvml's error: ``value`` is the NVML error code."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")


class c_nvmlGpuInstancePlacement_t(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint), ("size", ctypes.c_uint)]


@attrs.define(eq=False)
class FakeMig:
    """One MIG device (GPU instance with one compute instance) of a ``FakeGpu``."""

    uuid: str
    gpu_instance_id: int
    compute_instance_id: int
    profile: dict[str, Any]  # a profile entry of the capture
    start: int
    size: int
    parent: FakeGpu
    # A GPU instance created through NVML has no compute instance until one is created; only
    # instances with one are MIG devices (``nvmlDeviceGetMigDeviceHandleByIndex``).
    compute: bool = True


@attrs.define(eq=False)
class FakeGpu:
    """One GPU as the fake reports it; the fields hold the capture's JSON values."""

    data: dict[str, Any]
    multiprocessor_count: int | None = None
    placements_supported: bool = False
    mig: list[FakeMig] = attrs.field(factory=list)
    lost: bool = False


@attrs.define(eq=False)
class _GpuInstance:
    gpu: FakeGpu
    mig: FakeMig


@attrs.define(eq=False)
class _ComputeInstance:
    gi: _GpuInstance


@attrs.define(eq=False)
class _EventSet:
    registered: dict[int, int] = attrs.field(factory=dict)  # id(gpu) -> mask
    freed: bool = False


def load_capture() -> dict[str, Any]:
    """The H100 capture (``testdata/h100/nvml_probe.json``) as a dict."""
    path = importlib.resources.files("dra_nvidia_gpu") / "testdata" / "h100" / "nvml_probe.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _failed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("ERR")


class FakePynvml:
    """A stand-in for the ``pynvml`` module, built from the H100 capture."""

    NVMLError = NVMLError
    c_nvmlGpuInstancePlacement_t = c_nvmlGpuInstancePlacement_t

    def __init__(self, capture: dict[str, Any], gpus: list[FakeGpu]) -> None:
        self.capture = capture
        self.gpus = gpus
        self.initialized = 0
        self.calls: collections.Counter[str] = collections.Counter()
        self.events: collections.deque[tuple[FakeGpu, int, int, int, int]] = collections.deque()
        self.lost_pending: list[FakeGpu] = []
        self.errors: dict[str, int] = {}
        self.event_sets: list[_EventSet] = []
        self.created = 0  # GPU instances created through NVML so far

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if name.startswith("nvml") and callable(value):
            object.__getattribute__(self, "calls")[name] += 1
            errors = object.__getattribute__(self, "errors")
            if name in errors:
                code = errors[name]

                def fail(*args: Any, **kwargs: Any) -> Any:
                    raise NVMLError(code)
                return fail
        return value

    # --- construction ------------------------------------------------------------------
    @classmethod
    def from_capture(cls) -> FakePynvml:
        """The one captured H100 (MIG off), as NVML reported it."""
        capture = load_capture()
        return cls(capture, [FakeGpu(copy.deepcopy(d)) for d in capture["devices"]])

    @classmethod
    def synthetic(cls, *, gpus: int = 8, mig: bool = False) -> FakePynvml:
        """``gpus`` H100s like the captured one, with distinct uuids, minors 0.. and the bus
        ids of a DGX H100 (domains 1, 2, ... past eight).  With ``mig``, MIG mode is on for
        every GPU and GPU 0 holds 3g.40gb at 0 and two 1g.10gb at 4 and 5.  Possible
        placements are answered (the capture could not ask for them)."""
        capture = load_capture()
        base = capture["devices"][0]
        out = []
        for i in range(gpus):
            data = copy.deepcopy(base)
            domain, bus = i // len(_DGX_BUSES), _DGX_BUSES[i % len(_DGX_BUSES)]
            data.update(index=i, minor_number=i, serial=f"{1793026019549 + i}",
                        uuid="GPU-" + str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"fake-gpu-{i}")),
                        mig_mode=[int(mig), int(mig)], max_mig_device_count=7 if mig else 0)
            data["pci"].update(busId=f"{domain:08X}:{bus:02X}:00.0",
                               busIdLegacy=f"{domain:04X}:{bus:02X}:00.0",
                               domain=domain, bus=bus, device=0)
            out.append(FakeGpu(data, placements_supported=True))
        fake = cls(capture, out)
        if mig and gpus:
            fake.create_mig_device(0, "3g.40gb", 0)
            fake.create_mig_device(0, "1g.10gb", 4)
            fake.create_mig_device(0, "1g.10gb", 5)
        return fake

    def _profile(self, gpu: FakeGpu, name: str) -> dict[str, Any]:
        for p in gpu.data["gpu_instance_profiles"]:
            if p.get("name") in (name, f"MIG {name}"):
                return dict(p)
        raise KeyError(f"no MIG profile {name!r}")

    def set_mig_mode(self, gpu_index: int, enabled: bool) -> None:
        gpu = self.gpus[gpu_index]
        gpu.data["mig_mode"] = [int(enabled), int(enabled)]
        gpu.data["max_mig_device_count"] = 7 if enabled else 0
        if not enabled:
            gpu.mig.clear()

    def create_mig_device(self, gpu_index: int, profile: str, start: int) -> FakeMig:
        """Create a GPU instance of ``profile`` at memory slice ``start`` with one full compute
        instance (MIG mode must be on).  The placement is not checked for overlaps."""
        gpu = self.gpus[gpu_index]
        if gpu.data["mig_mode"][0] != NVML_DEVICE_MIG_ENABLE:
            raise ValueError(f"GPU {gpu_index}: MIG mode is off")
        info = self._profile(gpu, profile)
        size = _placement_size(info["id"])
        if (start, size) not in _H100_PLACEMENTS[info["id"]]:
            raise ValueError(f"{profile} cannot start at memory slice {start}")
        gi = max((m.gpu_instance_id for m in gpu.mig), default=0) + 1
        mig = FakeMig(uuid="MIG-" + str(uuidlib.uuid5(uuidlib.NAMESPACE_URL,
                                                      f"{gpu.data['uuid']}/{gi}")),
                      gpu_instance_id=gi, compute_instance_id=0, profile=info, start=start,
                      size=size, parent=gpu)
        gpu.mig.append(mig)
        return mig

    # --- fault injection ---------------------------------------------------------------
    def inject_xid(self, gpu_index: int, xid: int, *, gpu_instance_id: int | None = None,
                   compute_instance_id: int | None = None) -> None:
        """Queue a critical Xid event on a GPU (on one of its MIG devices when given)."""
        self.inject_event(gpu_index, nvmlEventTypeXidCriticalError, xid,
                          gpu_instance_id=gpu_instance_id,
                          compute_instance_id=compute_instance_id)

    def inject_event(self, gpu_index: int, event_type: int, data: int = 0, *,
                     gpu_instance_id: int | None = None,
                     compute_instance_id: int | None = None) -> None:
        gi = _NO_INSTANCE if gpu_instance_id is None else gpu_instance_id
        ci = _NO_INSTANCE if compute_instance_id is None else compute_instance_id
        self.events.append((self.gpus[gpu_index], event_type, data, gi, ci))

    def lose_gpu(self, gpu_index: int) -> None:
        """The GPU falls off the bus: calls on it raise GPU_IS_LOST from now on, and the next
        event wait (of a set it is registered in) raises GPU_IS_LOST once."""
        gpu = self.gpus[gpu_index]
        gpu.lost = True
        self.lost_pending.append(gpu)

    def fail(self, function: str, code: int = NVML_ERROR_UNKNOWN) -> None:
        """Make every later call of ``function`` raise ``NVMLError(code)``."""
        self.errors[function] = code

    # --- helpers -----------------------------------------------------------------------
    def _check(self) -> None:
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: Any) -> FakeGpu:
        self._check()
        if not isinstance(handle, FakeGpu):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if handle.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return handle

    def _mig(self, handle: Any) -> FakeMig:
        self._check()
        if not isinstance(handle, FakeMig):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if handle.parent.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return handle

    def _value(self, gpu: FakeGpu, key: str) -> Any:
        value = gpu.data.get(key)
        if value is None or _failed(value):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return value

    # --- system ------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self._check()
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        return str(self.capture["driver_version"])

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check()
        return int(self.capture["cuda_driver_version"])

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return self.nvmlSystemGetCudaDriverVersion()

    # --- devices -----------------------------------------------------------------------
    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._check()
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if self.gpus[index].lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        if isinstance(handle, FakeMig):
            return self._mig(handle).uuid
        return str(self._value(self._gpu(handle), "uuid"))

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return str(self._value(self._gpu(handle), "name"))

    def nvmlDeviceGetBrand(self, handle: Any) -> int:
        return int(self._value(self._gpu(handle), "brand"))

    def nvmlDeviceGetArchitecture(self, handle: Any) -> int:
        return int(self._value(self._gpu(handle), "architecture"))

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        major, minor = self._value(self._gpu(handle), "cuda_compute_capability")
        return int(major), int(minor)

    def nvmlDeviceGetMinorNumber(self, handle: Any) -> int:
        return int(self._value(self._gpu(handle), "minor_number"))

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any:
        if isinstance(handle, FakeMig):
            mb = int(self._mig(handle).profile["memorySizeMB"])
            return _Struct(total=mb << 20, free=mb << 20, used=0)
        return _Struct(**self._value(self._gpu(handle), "memory"))

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        pci = self._value(self._gpu(handle), "pci")
        return _Struct(busId=pci["busId"].encode(), busIdLegacy=pci["busIdLegacy"].encode(),
                       domain=pci["domain"], bus=pci["bus"], device=pci["device"],
                       pciDeviceId=pci["pciDeviceId"], pciSubSystemId=pci["pciSubSystemId"])

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        return list(self._value(self._gpu(handle), "mig_mode"))

    def nvmlDeviceGetAttributes(self, handle: Any) -> Any:
        if isinstance(handle, FakeMig):
            p = self._mig(handle).profile
            return _Struct(multiprocessorCount=p["multiprocessorCount"],
                           sharedCopyEngineCount=p["copyEngineCount"],
                           sharedDecoderCount=p["decoderCount"],
                           sharedEncoderCount=p["encoderCount"],
                           sharedJpegCount=p["jpegCount"], sharedOfaCount=p["ofaCount"],
                           gpuInstanceSliceCount=p["sliceCount"],
                           computeInstanceSliceCount=p["sliceCount"],
                           memorySizeMB=p["memorySizeMB"])
        gpu = self._gpu(handle)
        if gpu.multiprocessor_count is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return _Struct(multiprocessorCount=gpu.multiprocessor_count, gpuInstanceSliceCount=0,
                       computeInstanceSliceCount=0, memorySizeMB=gpu.data["memory"]["total"] >> 20)

    # --- MIG ---------------------------------------------------------------------------
    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, profile: int,
                                            version: int = 2) -> Any:
        gpu = self._gpu(handle)
        entry = next((p for p in gpu.data["gpu_instance_profiles"] if p["profile"] == profile),
                     None)
        if entry is None or "err" in entry:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED if entry is not None
                            else NVML_ERROR_INVALID_ARGUMENT)
        fields = {k: v for k, v in entry.items() if k not in ("profile", "placements")}
        if version == 2:
            fields["name"] = str(entry["name"]).encode()
        else:
            fields.pop("name", None)
        return _Struct(**fields)

    def nvmlDeviceGetGpuInstancePossiblePlacements(
            self, handle: Any, profileId: int, placementsRef: Any,
            countRef: Any) -> int:
        gpu = self._gpu(handle)
        if not gpu.placements_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        entry = next((p for p in gpu.data["gpu_instance_profiles"] if p.get("id") == profileId),
                     None)
        if entry is None:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        placements = _H100_PLACEMENTS.get(profileId, ())
        count = countRef._obj
        if placementsRef is None:
            count.value = len(placements)
            return NVML_SUCCESS
        if len(placementsRef) < len(placements):
            raise NVMLError(NVML_ERROR_INSUFFICIENT_SIZE)
        for i, (start, size) in enumerate(placements):
            placementsRef[i].start, placementsRef[i].size = start, size
        count.value = len(placements)
        return NVML_SUCCESS

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        return int(self._value(self._gpu(handle), "max_mig_device_count"))

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> FakeMig:
        gpu = self._gpu(handle)
        if gpu.data["mig_mode"][0] != NVML_DEVICE_MIG_ENABLE:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        devices = [m for m in gpu.mig if m.compute]
        if not 0 <= index < len(devices):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return devices[index]

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        return self._mig(handle).gpu_instance_id

    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int:
        return self._mig(handle).compute_instance_id

    def nvmlDeviceGetGpuInstanceById(self, handle: Any, gpuInstanceId: int
                                     ) -> _GpuInstance:
        gpu = self._gpu(handle)
        for mig in gpu.mig:
            if mig.gpu_instance_id == gpuInstanceId:
                return _GpuInstance(gpu, mig)
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def nvmlGpuInstanceGetInfo(self, gpuInstance: _GpuInstance) -> Any:
        mig = self._gi(gpuInstance)
        return _Struct(device=gpuInstance.gpu, id=mig.gpu_instance_id,
                       profileId=mig.profile["id"],
                       placement=_Struct(start=mig.start, size=mig.size))

    def _gi(self, gpuInstance: Any) -> FakeMig:
        """The live GPU instance behind a handle (NOT_FOUND once destroyed)."""
        if not isinstance(gpuInstance, _GpuInstance):
            self._check()
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        mig = self._mig(gpuInstance.mig)
        if mig not in mig.parent.mig:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return mig

    def _ci(self, computeInstance: Any) -> FakeMig:
        if not isinstance(computeInstance, _ComputeInstance):
            self._check()
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        mig = self._gi(computeInstance.gi)
        if not mig.compute:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return mig

    def nvmlDeviceCreateGpuInstanceWithPlacement(self, handle: Any, profileId: int,
                                                 placement: Any) -> _GpuInstance:
        """Like pynvml: ``placement`` is ``byref(c_nvmlGpuInstancePlacement_t(...))``."""
        gpu = self._gpu(handle)
        if gpu.data["mig_mode"][0] != NVML_DEVICE_MIG_ENABLE:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        spot = getattr(placement, "_obj", placement)
        start, size = int(spot.start), int(spot.size)
        info = next((p for p in gpu.data["gpu_instance_profiles"]
                     if p.get("id") == profileId and "err" not in p), None)
        if info is None or (start, size) not in _H100_PLACEMENTS.get(profileId, ()):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if any(start < m.start + m.size and m.start < start + size for m in gpu.mig):
            raise NVMLError(NVML_ERROR_INSUFFICIENT_RESOURCES)
        used = {m.gpu_instance_id for m in gpu.mig}
        gi = next(i for i in range(1, len(used) + 2) if i not in used)
        self.created += 1
        mig = FakeMig(uuid="MIG-" + str(uuidlib.uuid5(
                          uuidlib.NAMESPACE_URL, f"{gpu.data['uuid']}/{gi}/{self.created}")),
                      gpu_instance_id=gi, compute_instance_id=0, profile=dict(info),
                      start=start, size=size, parent=gpu, compute=False)
        gpu.mig.append(mig)
        return _GpuInstance(gpu, mig)

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(self, gpuInstance: Any, profile: int,
                                                     engProfile: int, version: int = 2
                                                     ) -> Any:
        mig = self._gi(gpuInstance)
        if not 0 <= profile < len(_CI_SLICES) or engProfile != 0:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        slices, gi_slices = _CI_SLICES[profile], int(mig.profile["sliceCount"])
        if slices > gi_slices:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        sms = int(mig.profile["multiprocessorCount"]) * slices // gi_slices
        return _Struct(id=profile, sliceCount=slices, instanceCount=gi_slices // slices,
                       multiprocessorCount=sms, sharedCopyEngineCount=mig.profile[
                           "copyEngineCount"], sharedDecoderCount=mig.profile["decoderCount"],
                       sharedEncoderCount=mig.profile["encoderCount"],
                       sharedJpegCount=mig.profile["jpegCount"],
                       sharedOfaCount=mig.profile["ofaCount"],
                       name=f"MIG {slices}c.{mig.profile['name'][4:]}".encode())

    def nvmlGpuInstanceCreateComputeInstance(self, gpuInstance: Any, profileId: int
                                             ) -> _ComputeInstance:
        """One compute instance spanning the GPU instance (the only kind modelled)."""
        mig = self._gi(gpuInstance)
        if not 0 <= profileId < len(_CI_SLICES):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if _CI_SLICES[profileId] != int(mig.profile["sliceCount"]):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if mig.compute:
            raise NVMLError(NVML_ERROR_INSUFFICIENT_RESOURCES)
        mig.compute, mig.compute_instance_id = True, 0
        return _ComputeInstance(gpuInstance)

    def nvmlComputeInstanceGetInfo(self, computeInstance: Any) -> Any:
        mig = self._ci(computeInstance)
        return _Struct(device=mig.parent, gpuInstance=computeInstance.gi,
                       id=mig.compute_instance_id, profileId=0,
                       placement=_Struct(start=0, size=int(mig.profile["sliceCount"])))

    def nvmlGpuInstanceGetComputeInstanceById(self, gpuInstance: Any, computeInstanceId: int
                                              ) -> _ComputeInstance:
        mig = self._gi(gpuInstance)
        if not mig.compute or mig.compute_instance_id != computeInstanceId:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return _ComputeInstance(gpuInstance)

    def nvmlComputeInstanceDestroy(self, computeInstance: Any) -> None:
        self._ci(computeInstance).compute = False

    def nvmlGpuInstanceDestroy(self, gpuInstance: Any) -> None:
        mig = self._gi(gpuInstance)
        if mig.compute:
            raise NVMLError(NVML_ERROR_IN_USE)
        mig.parent.mig.remove(mig)

    # --- events ------------------------------------------------------------------------
    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        return int(self._value(self._gpu(handle), "supported_event_types"))

    def nvmlEventSetCreate(self) -> _EventSet:
        self._check()
        event_set = _EventSet()
        self.event_sets.append(event_set)
        return event_set

    def nvmlDeviceRegisterEvents(self, handle: Any, eventTypes: int,
                                 eventSet: _EventSet) -> None:
        gpu = self._gpu(handle)
        if eventTypes & ~int(gpu.data["supported_event_types"]):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        eventSet.registered[id(gpu)] = eventSet.registered.get(id(gpu), 0) | eventTypes

    def nvmlEventSetWait_v2(self, eventSet: _EventSet, timeoutms: int) -> Any:
        self._check()
        if eventSet.freed:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        for gpu in list(self.lost_pending):
            if id(gpu) in eventSet.registered:
                self.lost_pending.remove(gpu)
                raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        for event in list(self.events):
            gpu, event_type, data, gi, ci = event
            if eventSet.registered.get(id(gpu), 0) & event_type:
                self.events.remove(event)
                return _Struct(device=gpu, eventType=event_type, eventData=data,
                               gpuInstanceId=gi, computeInstanceId=ci)
        raise NVMLError(NVML_ERROR_TIMEOUT)

    def nvmlEventSetWait(self, eventSet: _EventSet, timeoutms: int) -> Any:
        return self.nvmlEventSetWait_v2(eventSet, timeoutms)

    def nvmlEventSetFree(self, eventSet: _EventSet) -> None:
        self._check()
        eventSet.freed = True


class _Struct:
    """Attribute access like the ctypes structs pynvml returns."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.__dict__.items())

    def __repr__(self) -> str:
        return f"_Struct({self.__dict__!r})"


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
        self.calls.append(("start_mps", (tuple(gpu_uuids), active_thread_pct)))
        return MpsDaemon(gpu_uuids=tuple(gpu_uuids), pipe_dir=pipe_dir, log_dir=log_dir)

    def stop_mps(self, daemon: Any) -> None:
        self.calls.append(("stop_mps", (tuple(daemon.gpu_uuids),)))
