"""Reading a ResourceClaim's allocation for one driver.

The kubelet's request names a claim; the allocation lives in the claim object.  This module turns
the claim JSON (as the API server returns it) into what a backend needs: this driver's results
and, for each result, the opaque config entries that apply to it, in order — class config before
claim config, each entry scoped by its ``requests`` list (empty = every request; a bare ``req``
also covers ``req/sub``).  It also performs the checks that make a claim unusable: a replaced
claim (UID differs), a claim without allocation, a claim with nothing for this driver.

The claim comes from outside and is checked as such: every field this module reads must have
its JSON type (``results: 7`` or ``adminAccess: "false"`` is a ``ConfigError`` naming the field,
never a crash or a value read the wrong way), and opaque parameters nested deeper than
``MAX_PARAMETER_DEPTH`` are refused before a backend's decoder recurses into them.

It works on plain dicts so that it does not depend on a generation of the Kubernetes client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ..errors import ClaimMismatchError, ConfigError
from ..models import AllocatedDevice, ClaimRef

_SOURCE_ORDER = {"FromClass": 0, "FromClaim": 1}

MAX_PARAMETER_DEPTH = 64
"""Deepest nesting of objects and lists accepted in one entry of opaque parameters."""

RESULTS = "status.allocation.devices.results"
CONFIG = "status.allocation.devices.config"


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects/lists more than ``limit`` levels (without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _list(value: Any, path: str) -> list[Any]:
    """A JSON list field (absent or null = empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"must be a list, not {type(value).__name__}", path=path)
    return value


@attrs.frozen
class ConfigEntry:
    """One opaque config entry for this driver, from ``status.allocation.devices.config``."""

    index: int
    source: str
    requests: tuple[str, ...]
    parameters: Mapping[str, Any]

    def applies_to(self, request: str) -> bool:
        return not self.requests or request in self.requests or (
            request.split("/", 1)[0] in self.requests
        )


def _field(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def check_claim(obj: Mapping[str, Any], *, claim: ClaimRef) -> Mapping[str, Any]:
    """Return the claim's ``status.allocation.devices`` after the identity/allocation checks."""
    uid = _field(obj, "metadata.uid")
    if uid != claim.uid:
        raise ClaimMismatchError(
            f"ResourceClaim {claim.namespace}/{claim.name} got replaced: the API has UID {uid}, "
            f"the kubelet asked for UID {claim.uid}"
        )
    allocation = _field(obj, "status.allocation")
    if not allocation:
        raise ClaimMismatchError(
            f"ResourceClaim {claim.namespace}/{claim.name} is not allocated"
        )
    if not isinstance(allocation, Mapping):
        raise ConfigError("must be an object", path="status.allocation")
    devices = allocation.get("devices")
    if devices is None:
        return {}
    if not isinstance(devices, Mapping):
        raise ConfigError("must be an object", path="status.allocation.devices")
    return devices


def driver_results(devices: Mapping[str, Any], *, claim: ClaimRef, driver: str) -> list[
    Mapping[str, Any]
]:
    """This driver's allocation results; a ClaimMismatchError when there are none."""
    mine = []
    for i, r in enumerate(_list(devices.get("results"), RESULTS)):
        if not isinstance(r, Mapping):
            raise ConfigError("must be an object", path=f"{RESULTS}[{i}]")
        if r.get("driver") != driver:
            continue
        for key in ("request", "pool", "device"):
            if not isinstance(r.get(key), str) or not r.get(key):
                raise ConfigError(f"missing or invalid {key!r}", path=f"{RESULTS}[{i}]")
        if not isinstance(r.get("adminAccess", False), (bool, type(None))):
            raise ConfigError("must be a boolean", path=f"{RESULTS}[{i}].adminAccess")
        if not isinstance(r.get("shareID", ""), (str, type(None))):
            raise ConfigError("must be a string", path=f"{RESULTS}[{i}].shareID")
        mine.append(r)
    if not mine:
        raise ClaimMismatchError(
            f"ResourceClaim {claim.namespace}/{claim.name} has no devices allocated "
            f"by driver {driver}"
        )
    return mine


def driver_configs(devices: Mapping[str, Any], *, driver: str) -> list[ConfigEntry]:
    """This driver's opaque config entries, class entries first, order otherwise kept."""
    entries: list[ConfigEntry] = []
    for i, entry in enumerate(_list(devices.get("config"), CONFIG)):
        if not isinstance(entry, Mapping):
            raise ConfigError("must be an object", path=f"{CONFIG}[{i}]")
        opaque = entry.get("opaque")
        if not isinstance(opaque, Mapping) or opaque.get("driver") != driver:
            continue
        params = opaque.get("parameters")
        where = f"{CONFIG}[{i}].opaque.parameters"
        if not isinstance(params, Mapping):
            raise ConfigError("must be a JSON object", path=where)
        if _nested_deeper(params, MAX_PARAMETER_DEPTH):
            raise ConfigError(f"nested deeper than {MAX_PARAMETER_DEPTH} levels", path=where)
        requests = _list(entry.get("requests"), f"{CONFIG}[{i}].requests")
        if not all(isinstance(r, str) for r in requests):
            raise ConfigError("must be a list of strings", path=f"{CONFIG}[{i}].requests")
        source = entry.get("source", "")
        if not isinstance(source, str):
            raise ConfigError("must be a string", path=f"{CONFIG}[{i}].source")
        entries.append(
            ConfigEntry(index=i, source=source, requests=tuple(requests), parameters=params)
        )
    entries.sort(key=lambda e: _SOURCE_ORDER.get(e.source, 2))
    return entries


Decoder = Callable[[Mapping[str, Any]], Any]


def allocated_devices(
    obj: Mapping[str, Any], *, claim: ClaimRef, driver: str, decode: Decoder | None
) -> list[AllocatedDevice]:
    """Check the claim and return this driver's results with their decoded config.

    ``decode`` is the backend's config decoder; ``None`` means the backend takes no config, so
    any opaque config for this driver is refused.  Each entry is decoded once, and a decoding
    error is re-raised with the entry's location in the claim.
    """
    devices = check_claim(obj, claim=claim)
    results = driver_results(devices, claim=claim, driver=driver)
    configs = driver_configs(devices, driver=driver)
    decoded: list[tuple[ConfigEntry, Any]] = []
    for entry in configs:
        where = f"status.allocation.devices.config[{entry.index}] ({entry.source})"
        if decode is None:
            raise ConfigError(f"driver {driver} accepts no opaque config", path=where)
        try:
            decoded.append((entry, decode(entry.parameters)))
        except ConfigError as exc:
            raise ConfigError(str(exc), path=where) from exc
    return [
        AllocatedDevice(
            request=r["request"],
            pool=r["pool"],
            device=r["device"],
            admin_access=bool(r.get("adminAccess", False)),
            share_id=r.get("shareID") or None,
            config=tuple(value for entry, value in decoded if entry.applies_to(r["request"])),
        )
        for r in results
    ]


def base_request_names(requests: Sequence[str]) -> list[str]:
    """``["a/b", "a", "c"]`` → ``["a", "c"]``: base names, first occurrence order."""
    seen: dict[str, None] = {}
    for r in requests:
        seen.setdefault(r.split("/", 1)[0], None)
    return list(seen)
