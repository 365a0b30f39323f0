"""Finding, loading and calling backends.

Backends are installed Python distributions that name a class (or a module of hook functions) in
the entry-point group ``dra_framework.backends``; the built-in ``example`` backend is registered
the same way by the core distribution.  ``load_backend`` instantiates one, registers it with a
``pluggy.PluginManager`` of its own (so several backends in one process never see each other's
hooks) and wraps the hook calls in ``Backend``, which turns unexpected exceptions into
``BackendError`` and checks what the backend returned.
"""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .errors import BackendError, ClaimError, ConfigError, SetupError
from .models import (
    AllocatedDevice,
    BackendSettings,
    ClaimRef,
    CounterSet,
    Device,
    DeviceHealth,
    DriverInfo,
    Pool,
    PreparedDevice,
)

ENTRY_POINT_GROUP = "dra_framework.backends"


@attrs.frozen
class InstalledBackend:
    """One entry point of the group, with the distribution that provides it."""

    name: str
    value: str
    distribution: str
    version: str


def installed_backends() -> list[InstalledBackend]:
    """Every backend installed in this environment, sorted by name."""
    found: dict[str, InstalledBackend] = {}
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        found.setdefault(ep.name, InstalledBackend(
            name=ep.name,
            value=ep.value,
            distribution=dist.metadata["Name"] if dist else "",
            version=dist.version if dist else "",
        ))
    return sorted(found.values(), key=lambda b: b.name)


def _entry_point(name: str) -> md.EntryPoint:
    matches = [ep for ep in md.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not matches:
        names = ", ".join(b.name for b in installed_backends()) or "none"
        raise SetupError(f"unknown backend {name!r}; installed backends: {names}")
    return matches[0]


class Backend:
    """One loaded backend: its plugin manager and checked wrappers of every hook."""

    def __init__(self, *, name: str, plugin: object) -> None:
        self.name = name
        self.plugin = plugin
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        try:
            self.pm.register(plugin, name=f"backend:{name}")
            self.pm.check_pending()  # a misspelt hook name is an error, not silently ignored
        except (ValueError, pluggy.PluginValidationError) as exc:
            raise SetupError(f"backend {name!r} is invalid: {exc}") from exc
        self._info: DriverInfo | None = None

    @classmethod
    def load(cls, name: str) -> Backend:
        """Load the installed backend ``name`` (an unknown name lists the installed ones)."""
        ep = _entry_point(name)
        try:
            obj = ep.load()
        except Exception as exc:
            raise SetupError(f"cannot load backend {name!r} ({ep.value}): {exc}") from exc
        return cls(name=name, plugin=obj() if isinstance(obj, type) else obj)

    def _has(self, hook: str) -> bool:
        return bool(getattr(self.pm.hook, hook).get_hookimpls())

    def setup(self, settings: BackendSettings) -> None:
        try:
            self.pm.hook.dra_setup(settings=settings)
        except (ConfigError, SetupError) as exc:
            raise SetupError(f"backend {self.name}: {exc}") from exc
        self._info = None

    @property
    def info(self) -> DriverInfo:
        if self._info is None:
            info = self.pm.hook.dra_driver_info()
            if not isinstance(info, DriverInfo):
                raise SetupError(f"backend {self.name} returned no DriverInfo")
            if not info.cdi_vendor:
                info = attrs.evolve(info, cdi_vendor=f"k8s.{info.driver_name}")
            self._info = info
        return self._info

    @property
    def accepts_config(self) -> bool:
        return self._has("dra_decode_config")

    @property
    def serves_health(self) -> bool:
        return self._has("dra_device_health")

    def inventory(self) -> Sequence[Device]:
        return list(self.pm.hook.dra_inventory() or ())

    def counter_sets(self) -> list[CounterSet]:
        return list(self.pm.hook.dra_counter_sets() or ())

    def cluster_pools(self) -> list[Pool]:
        return list(self.pm.hook.dra_cluster_pools() or ())

    def decode_config(self, parameters: Mapping[str, Any]) -> Any:
        try:
            return self.pm.hook.dra_decode_config(parameters=parameters)
        except ClaimError:
            raise
        except Exception as exc:
            raise ConfigError(f"invalid config: {exc}") from exc

    def prepare(self, *, claim: ClaimRef, devices: Sequence[AllocatedDevice]) -> list[
        PreparedDevice
    ]:
        try:
            result = self.pm.hook.dra_prepare_claim(claim=claim, devices=list(devices))
        except ClaimError:
            raise
        except Exception as exc:
            raise BackendError(f"backend {self.name} failed to prepare: {exc}") from exc
        if result is None:
            raise BackendError(f"backend {self.name} does not implement dra_prepare_claim")
        prepared = list(result)
        wanted = {(d.pool, d.device) for d in devices}
        got = [(p.pool, p.device) for p in prepared if isinstance(p, PreparedDevice)]
        if len(got) != len(prepared) or set(got) != wanted or len(set(got)) != len(got):
            raise BackendError(
                f"backend {self.name} returned devices {sorted(got)}, expected one "
                f"PreparedDevice for each of {sorted(wanted)}"
            )
        return prepared

    def unprepare(self, *, claim: ClaimRef, devices: Sequence[PreparedDevice]) -> None:
        try:
            self.pm.hook.dra_unprepare_claim(claim=claim, devices=list(devices))
        except ClaimError:
            raise
        except Exception as exc:
            raise BackendError(f"backend {self.name} failed to unprepare: {exc}") from exc

    def health(self) -> Sequence[DeviceHealth] | None:
        result = self.pm.hook.dra_device_health()
        return None if result is None else list(result)

    def shutdown(self) -> None:
        self.pm.hook.dra_shutdown()
