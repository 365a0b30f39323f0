"""The reference backend ``example``: simulated accelerators, no hardware needed.

It is what the core's tests use and what someone tries the framework with before they have
hardware, so it exercises every part of the backend contract:

* inventory — ``devices`` simulated GPUs ``gpu-0`` … with string, int, bool and version
  attributes (one of them fully qualified) and ``memory`` / ``cores`` capacity; even devices are
  model ``Example-X100`` with 80Gi, odd ones ``Example-X50`` with 40Gi;
* opaque config — ``GpuClassConfig`` (for DeviceClasses) and ``GpuConfig`` (for claims), typed
  attrs models decoded strictly (unknown keys, bad values and values of another JSON type, such
  as ``1.5``, ``true`` or ``"5"`` for ``timeSliceMillis``, are refused, naming the field);
* prepare — per device, an environment variable, a device node (``/dev/dra-example/<device>``
  backed by the host's ``/dev/null``, so a real runtime can inject it) and the effective config as
  environment; the "hardware setup" is a file per prepared device under the backend's state dir,
  so tests can see what a crash leaked and what roll-back removed;
* health — every device healthy unless a file ``unhealthy/<device>`` exists in the state dir.

* cluster pool — with ``seats`` > 0, a pool ``seats`` of that many ``seat-N`` devices usable
  from every node (``allNodes``), published by ``dra-framework controller``: the shape of a
  software-license pool.

Options (``--backend-option example.KEY=VALUE``): ``driver_name`` (default
``gpu.example.com``), ``devices`` (default 8), ``prepare_delay`` seconds (default 0), ``health``
(default true), ``seats`` (default 0), ``status`` (default false: with true, every prepared
device reports a Ready condition and its environment as device status in the claim),
``setup_dir`` (default ``prepared/`` under the backend's state directory: where the simulated
device setup lives; a tmpfs such as ``/run/...`` is where a real device's state would be, in the
kernel, surviving a plugin restart but not a reboot).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from ..convert import quote, structure_config, structure_options
from ..durable import NotRegularFileError, read_regular, write_file
from ..errors import BackendError, ConfigError
from ..hookspecs import hookimpl
from ..models import (
    AllocatedDevice,
    BackendSettings,
    ClaimRef,
    Condition,
    ContainerEdits,
    Device,
    DeviceHealth,
    DeviceNode,
    DeviceStatus,
    DriverInfo,
    HealthStatus,
    Pool,
    PreparedDevice,
    Version,
)

DEFAULT_DRIVER = "gpu.example.com"


@attrs.frozen
class ExampleOptions:
    driver_name: str = DEFAULT_DRIVER
    devices: int = attrs.field(default=8)
    prepare_delay: float = 0.0
    health: bool = True
    seats: int = 0
    status: bool = False
    setup_dir: str = ""

    @devices.validator
    def _check_devices(self, _: attrs.Attribute[int], value: int) -> None:
        if not 0 <= value <= 65536:
            raise ValueError("devices must be between 0 and 65536")


@attrs.frozen
class TimeSlicing:
    interval: Literal["Default", "Short", "Medium", "Long"] = "Default"


@attrs.frozen
class SpacePartitioning:
    partition_count: int = 1


@attrs.frozen
class Sharing:
    strategy: Literal["TimeSlicing", "SpacePartitioning"]
    time_slicing: TimeSlicing | None = None
    space_partitioning: SpacePartitioning | None = None


@attrs.frozen
class GpuConfig:
    """Claim config: ``{"apiVersion": "<driver>/v1", "kind": "GpuConfig", "sharing": …}``."""

    api_version: str
    kind: Literal["GpuConfig"]
    sharing: Sharing | None = None


@attrs.frozen
class GpuClassConfig:
    """Class config: compute mode and default time slice of every device of the class."""

    api_version: str
    kind: Literal["GpuClassConfig"]
    default_compute_mode: Literal["Shared", "Exclusive"] = "Exclusive"
    time_slice_millis: int = 0


_KINDS: dict[str, type[Any]] = {"GpuConfig": GpuConfig, "GpuClassConfig": GpuClassConfig}


def _check_ranges(config: Any) -> None:
    if isinstance(config, GpuClassConfig) and not 0 <= config.time_slice_millis <= 10_000:
        raise ConfigError("must be between 0 and 10000", path="$.timeSliceMillis")
    if isinstance(config, GpuConfig) and config.sharing is not None:
        part = config.sharing.space_partitioning
        if part is not None and not 1 <= part.partition_count <= 8:
            raise ConfigError("must be between 1 and 8",
                              path="$.sharing.spacePartitioning.partitionCount")


def _env_name(device: str) -> str:
    return device.upper().replace("-", "_").replace(".", "_")


class ExampleBackend:
    """Simulated GPUs; see the module docstring."""

    def __init__(self) -> None:
        self.options = ExampleOptions()
        self.node_name = ""
        self.state_dir = Path(".")

    @hookimpl
    def dra_setup(self, settings: BackendSettings) -> None:
        self.options = structure_options(settings.options, ExampleOptions, backend="example")
        self.node_name = settings.node_name
        self.state_dir = Path(settings.state_dir)
        self.setup_dir = Path(self.options.setup_dir or self.state_dir / "prepared")
        self.setup_dir.mkdir(parents=True, exist_ok=True)

    @hookimpl
    def dra_driver_info(self) -> DriverInfo:
        # concurrent_prepare stays off: a prepare here is a few microseconds of Python, which
        # threads would only make slower (it pays for devices that take long to set up)
        return DriverInfo(driver_name=self.options.driver_name, cdi_class="gpu")

    @hookimpl
    def dra_inventory(self) -> Sequence[Device]:
        driver = self.options.driver_name
        return [
            Device(
                name=f"gpu-{i}",
                attributes={
                    "index": i,
                    "model": "Example-X100" if i % 2 == 0 else "Example-X50",
                    "ecc": i % 2 == 0,
                    "driverVersion": Version("1.2.0"),
                    f"{driver}/uuid": f"gpu-{self.node_name}-{i:04d}",
                },
                capacity={"memory": "80Gi" if i % 2 == 0 else "40Gi", "cores": "128"},
            )
            for i in range(self.options.devices)
        ]

    @hookimpl
    def dra_cluster_pools(self) -> Sequence[Pool]:
        if not self.options.seats:
            return []
        devices = tuple(
            Device(name=f"seat-{i}", attributes={"kind": "seat", "index": i})
            for i in range(self.options.seats)
        )
        return [Pool(name="seats", devices=devices, all_nodes=True)]

    @hookimpl
    def dra_decode_config(self, parameters: Mapping[str, Any]) -> Any:
        kind = parameters.get("kind")
        cls = _KINDS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ConfigError(f"unknown kind {quote(kind)}, expected one of {sorted(_KINDS)}",
                              path="$.kind")
        want = f"{self.options.driver_name}/v1"
        if parameters.get("apiVersion") != want:
            raise ConfigError(f"unsupported {quote(parameters.get('apiVersion'))}, "
                              f"expected {want!r}", path="$.apiVersion")
        config = structure_config(dict(parameters), cls, what=cls.__name__)
        _check_ranges(config)
        return config

    def _exists(self, device: str) -> bool:
        prefix, _, index = device.partition("-")
        return prefix == "gpu" and index.isdigit() and str(int(index)) == index and (
            int(index) < self.options.devices)

    def _marker(self, device: str) -> Path:
        return self.setup_dir / f"{device}.json"

    @hookimpl
    def dra_prepare_claim(
        self, claim: ClaimRef, devices: Sequence[AllocatedDevice]
    ) -> Sequence[PreparedDevice]:
        prepared: dict[tuple[str, str], PreparedDevice] = {}
        for dev in devices:
            if dev.pool != self.node_name or not self._exists(dev.device):
                raise BackendError(f"device {dev.pool}/{dev.device} does not exist on this node")
            if self.options.prepare_delay:
                time.sleep(self.options.prepare_delay)
            env = [f"GPU_DEVICE_{_env_name(dev.device)}={dev.device}"]
            for cfg in dev.config:
                if isinstance(cfg, GpuClassConfig):
                    env += [f"GPU_DEVICE_{_env_name(dev.device)}_COMPUTE_MODE="
                            f"{cfg.default_compute_mode}"]
                    if cfg.time_slice_millis:
                        env += [f"GPU_DEVICE_{_env_name(dev.device)}_TIMESLICE_MILLIS="
                                f"{cfg.time_slice_millis}"]
                elif isinstance(cfg, GpuConfig) and cfg.sharing is not None:
                    env += [f"GPU_DEVICE_{_env_name(dev.device)}_SHARING_STRATEGY="
                            f"{cfg.sharing.strategy}"]
            # never written through a link someone planted in the state directory; a crash
            # mid-write is rolled back by the framework, which removes the half-written file
            write_file(self._marker(dev.device),
                       json.dumps({"claim": claim.uid, "env": env}).encode())
            prepared[(dev.pool, dev.device)] = PreparedDevice(
                pool=dev.pool,
                device=dev.device,
                edits=ContainerEdits(
                    env=tuple(env),
                    device_nodes=(DeviceNode(path=f"/dev/dra-example/{dev.device}",
                                             host_path="/dev/null"),),
                ),
                state={"marker": str(self._marker(dev.device))},
                status=DeviceStatus(
                    conditions=(Condition(type="Ready", status="True", reason="Prepared",
                                          message=f"prepared for claim {claim.name}"),),
                    data={"env": env},
                ) if self.options.status else None,
            )
        return list(prepared.values())

    @hookimpl
    def dra_unprepare_claim(self, claim: ClaimRef, devices: Sequence[PreparedDevice]) -> None:
        for dev in devices:
            marker = self._marker(dev.device)
            try:
                data = json.loads(read_regular(marker))
                owner = data.get("claim") if isinstance(data, dict) else claim.uid
            except FileNotFoundError:
                continue
            except (ValueError, RecursionError, NotRegularFileError):
                owner = claim.uid  # not a state file of ours: remove it (a link, not its target)
            if owner == claim.uid and not marker.is_dir():
                os.unlink(marker)

    @hookimpl
    def dra_device_health(self) -> Sequence[DeviceHealth] | None:
        if not self.options.health:
            return None
        bad = self.state_dir / "unhealthy"
        return [
            DeviceHealth(
                pool=self.node_name,
                device=f"gpu-{i}",
                health=HealthStatus.UNHEALTHY if (bad / f"gpu-{i}").exists()
                else HealthStatus.HEALTHY,
                message="simulated fault" if (bad / f"gpu-{i}").exists() else "",
            )
            for i in range(self.options.devices)
        ]
