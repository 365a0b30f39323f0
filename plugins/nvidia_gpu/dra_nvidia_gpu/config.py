"""Opaque device config of the NVIDIA GPU backend: ``GpuConfig`` and ``MigDeviceConfig``.

A claim or a DeviceClass carries these under ``config[].opaque.parameters``::

    apiVersion: <driver name>/v1
    kind: GpuConfig                # or MigDeviceConfig
    sharing:
      strategy: TimeSlicing        # or MPS
      timeSlicing: {interval: Default}          # Default | Short | Medium | Long
      mps:
        defaultActiveThreadPercentage: 50       # 1..100
        defaultPinnedDeviceMemoryLimit: 10Gi    # a Kubernetes quantity, at least 1Mi
        perDevicePinnedMemoryLimit:             # device UUID, or index in the claim → quantity
          GPU-48579475-7923-b1a9-35e7-c49638cc9ac5: 20Gi

The models are attrs classes decoded with ``dra_framework.convert.structure_config``: unknown
keys, missing keys and wrong types are refused with the JSON path of the field, and nothing is
coerced (``"50"``, ``true`` or ``50.0`` is not the integer 50, ``1024`` is not the quantity
string ``"1024"``).  ``decode`` then checks what types cannot say (ranges, quantities, which
sub-object goes with which strategy) and raises ``ConfigError`` with the path too
(``$.sharing.mps.defaultActiveThreadPercentage: must be between 1 and 100``).  Values and keys
quoted in those messages are cut short (``dra_framework.convert.quote``).  Time slicing is a
property of a whole GPU, so a ``MigDeviceConfig`` may only ask for MPS.

``effective`` picks the config that applies to one device: configs arrive class config first,
then claim config, and the last one of the device's kind wins as a whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

import attrs

from dra_framework.convert import quote, structure_config
from dra_framework.errors import ConfigError

Interval = Literal["Default", "Short", "Medium", "Long"]
Strategy = Literal["TimeSlicing", "MPS"]

_QUANTITY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_FACTORS: Mapping[str, int] = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_DEVICE_KEY_RE = re.compile(r"(GPU-|MIG-)[0-9A-Za-z-]{1,60}|[0-9]{1,4}")
_MAX_DIGITS = 40
MIB = 2**20
MAX_QUANTITY = 2**63 - 1
"""The largest quantity Kubernetes can represent (an int64 of bytes)."""


@attrs.frozen
class TimeSlicingConfig:
    interval: Interval = "Default"


@attrs.frozen
class MpsConfig:
    default_active_thread_percentage: int | None = None
    default_pinned_device_memory_limit: str | None = None
    per_device_pinned_memory_limit: dict[str, str] | None = None


@attrs.frozen
class Sharing:
    strategy: Strategy
    time_slicing: TimeSlicingConfig | None = None
    mps: MpsConfig | None = None

    @property
    def interval(self) -> Interval:
        """The time-slice interval (``Default`` when not given)."""
        return self.time_slicing.interval if self.time_slicing else "Default"


@attrs.frozen
class GpuConfig:
    """Config of a full GPU."""

    api_version: str
    kind: Literal["GpuConfig"]
    sharing: Sharing | None = None


@attrs.frozen
class MigDeviceConfig:
    """Config of a MIG device (MPS only: time slicing applies to a whole GPU)."""

    api_version: str
    kind: Literal["MigDeviceConfig"]
    sharing: Sharing | None = None


Config = GpuConfig | MigDeviceConfig
_KINDS: Mapping[str, type[GpuConfig] | type[MigDeviceConfig]] = {
    "GpuConfig": GpuConfig, "MigDeviceConfig": MigDeviceConfig}


def parse_quantity(value: str) -> int:
    """A Kubernetes quantity (``10Gi``, ``1.5G``, ``512Mi``, ``1000000``) in bytes."""
    match = _QUANTITY_RE.match(value.strip())
    if match is None:
        raise ValueError(f"{quote(value)} is not a quantity such as 10Gi or 512Mi")
    number, suffix = match.groups()
    if len(number) > _MAX_DIGITS:
        raise ValueError(f"{quote(value)} has more than {_MAX_DIGITS} digits")
    whole, _, frac = number.partition(".")
    factor = _FACTORS[suffix or ""]
    return int(whole) * factor + (int(frac) * factor // 10 ** len(frac) if frac else 0)


def decode(parameters: Any, *, driver: str) -> GpuConfig | MigDeviceConfig:
    """Decode and check one opaque config; ``ConfigError`` names the offending field."""
    if not isinstance(parameters, Mapping):
        raise ConfigError("must be an object", path="$")
    kind = parameters.get("kind")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ConfigError(f"unknown kind {quote(kind)}, expected one of {sorted(_KINDS)}",
                          path="$.kind")
    want = f"{driver}/v1"
    if parameters.get("apiVersion") != want:
        raise ConfigError(f"unsupported {quote(parameters.get('apiVersion'))}, "
                          f"expected {want!r}", path="$.apiVersion")
    config: GpuConfig | MigDeviceConfig = structure_config(dict(parameters), cls,
                                                           what=cls.__name__)
    if config.sharing is not None:
        _check_sharing(config.sharing, mig=isinstance(config, MigDeviceConfig))
    return config


def _check_quantity(value: str, path: str) -> None:
    try:
        size = parse_quantity(value)
    except ValueError as exc:
        raise ConfigError(str(exc), path=path) from None
    if size < MIB:
        raise ConfigError(f"{quote(value)} is less than 1Mi", path=path)
    if size > MAX_QUANTITY:
        raise ConfigError(f"{quote(value)} is 8Ei or more, more than a quantity can be",
                          path=path)


def _check_sharing(sharing: Sharing, *, mig: bool) -> None:
    if mig and sharing.strategy == "TimeSlicing":
        raise ConfigError("TimeSlicing is not supported on MIG devices (it applies to a whole "
                          "GPU); use MPS", path="$.sharing.strategy")
    if sharing.strategy != "TimeSlicing" and sharing.time_slicing is not None:
        raise ConfigError(f"only allowed with strategy TimeSlicing, not {sharing.strategy}",
                          path="$.sharing.timeSlicing")
    if sharing.strategy != "MPS" and sharing.mps is not None:
        raise ConfigError(f"only allowed with strategy MPS, not {sharing.strategy}",
                          path="$.sharing.mps")
    mps = sharing.mps
    if mps is None:
        return
    base = "$.sharing.mps"
    pct = mps.default_active_thread_percentage
    if pct is not None and not 1 <= pct <= 100:
        raise ConfigError("must be between 1 and 100", path=f"{base}.defaultActiveThreadPercentage")
    if mps.default_pinned_device_memory_limit is not None:
        _check_quantity(mps.default_pinned_device_memory_limit,
                        f"{base}.defaultPinnedDeviceMemoryLimit")
    for key, value in (mps.per_device_pinned_memory_limit or {}).items():
        path = f"{base}.perDevicePinnedMemoryLimit[{quote(key)}]"
        if not _DEVICE_KEY_RE.fullmatch(key):
            raise ConfigError("key must be a device UUID (GPU-..., MIG-...) or an index",
                              path=path)
        _check_quantity(value, path)


@overload
def effective(configs: Sequence[object], *, driver: str = ..., mig: Literal[False] = ...
              ) -> GpuConfig: ...


@overload
def effective(configs: Sequence[object], *, driver: str = ..., mig: Literal[True]
              ) -> MigDeviceConfig: ...


def effective(configs: Sequence[object], *, driver: str = "", mig: bool = False
              ) -> GpuConfig | MigDeviceConfig:
    """The config for one device: the last of its kind wins; the default has no sharing.

    ``configs`` is ``AllocatedDevice.config`` (class config first, then claim config).  A full
    GPU takes ``GpuConfig`` entries, a MIG device (``mig=True``) ``MigDeviceConfig`` entries;
    other entries do not apply to it.
    """
    cls: type[GpuConfig] | type[MigDeviceConfig] = MigDeviceConfig if mig else GpuConfig
    for config in reversed(configs):
        if isinstance(config, cls):
            return config
    api_version = f"{driver}/v1" if driver else ""
    if mig:
        return MigDeviceConfig(api_version=api_version, kind="MigDeviceConfig")
    return GpuConfig(api_version=api_version, kind="GpuConfig")
