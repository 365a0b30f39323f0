"""Validation of ResourceSlices before the API server sees them.

Every limit of ``resource.k8s.io/v1`` (kube-apiserver 1.35) that applies to a slice: names,
driver, pool, node selection, devices per slice (128, or 64 with taints or counter
consumption), attributes and capacities, counter sets, counter consumption, taints, and
what spans the slices of a pool (unique device and counter-set names).  A backend that
reports a 65-character model string gets an error naming the device and the field,

    device "gpu-3": attributes[model].string: Too long: may not be more than 64 bytes

instead of a 422 for a whole slice, and the publisher can hold back just that pool.  Pure,
on v1 JSON dicts; all problems are collected; the wording follows the API server's.
``parse_quantity`` is here too: the publisher compares quantities by value with it.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from ..errors import DraError

MAX_DEVICES = 128
MAX_DEVICES_ADVANCED = 64
MAX_COUNTER_SETS = 8
MAX_COUNTERS = 32
MAX_CONSUMES_COUNTERS = 2
MAX_ATTRIBUTES_AND_CAPACITIES = 32
MAX_VALUE_LENGTH = 64
MAX_ID_LENGTH = 32
MAX_DOMAIN_LENGTH = 63
MAX_DRIVER_LENGTH = 63
MAX_POOL_NAME_LENGTH = 253
MAX_TAINTS = 16
TAINT_EFFECTS = ("NoExecute", "NoSchedule", "None")

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_C_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QNAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_NUM = r"(0|[1-9]\d*)"
_PRE = r"(0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
_SEMVER = re.compile(rf"{_NUM}\.{_NUM}\.{_NUM}(-{_PRE}(\.{_PRE})*)?"
                     r"(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_QUANTITY = re.compile(r"([+-]?)(\d*)(?:\.(\d*))?([a-zA-Z]*[-+]?\d*)")
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15,
            "E": 18}

LABEL_MSG = "must be a lowercase RFC 1123 label (e.g. 'my-name', at most 63 characters)"
SUBDOMAIN_MSG = "must be a lowercase RFC 1123 subdomain (e.g. 'example.com')"
C_ID_MSG = "must be a C identifier ([A-Za-z_][A-Za-z0-9_]*)"
ONE_OF_NODES = "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection`"


class SliceValidationError(DraError):
    """Slices that the API server would refuse; ``problems`` lists every finding."""

    def __init__(self, problems: Sequence[str], *, pool: str = "") -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)
        self.pool = pool


# --- messages --------------------------------------------------------------------------
def _quote(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def _invalid(path: str, value: Any, detail: str) -> str:
    return f"{path}: Invalid value: {_quote(value)}: {detail}"


def _too_long(path: str, limit: int) -> str:
    return f"{path}: Too long: may not be more than {limit} bytes"


def _too_many(path: str, count: int, limit: int) -> str:
    return f"{path}: Too many: {count}: must have at most {limit} items"


def _required(path: str, detail: str = "") -> str:
    return f"{path}: Required value" + (f": {detail}" if detail else "")


# --- names -----------------------------------------------------------------------------
def _label(value: str, path: str) -> list[str]:
    if not value:
        return [_required(path)]
    if len(value) > 63 or not _LABEL.fullmatch(value):
        return [_invalid(path, value, LABEL_MSG)]
    return []


def _subdomain(value: str, path: str, limit: int = 253) -> list[str]:
    if not value:
        return [_required(path)]
    errs = [_too_long(path, limit)] if len(value) > limit else []
    if not _SUBDOMAIN.fullmatch(value):
        errs.append(_invalid(path, value, SUBDOMAIN_MSG))
    return errs


def driver_problems(driver: str, *, path: str = "driver") -> list[str]:
    """A driver name: non-empty, at most 63, a DNS subdomain once lowercased."""
    if not driver:
        return [_required(path)]
    errs = [_too_long(path, MAX_DRIVER_LENGTH)] if len(driver) > MAX_DRIVER_LENGTH else []
    if not _SUBDOMAIN.fullmatch(driver.lower()):
        errs.append(_invalid(path, driver, SUBDOMAIN_MSG))
    return errs


def pool_name_problems(name: str, *, path: str = "pool.name") -> list[str]:
    """A pool name: non-empty, at most 253, each ``/``-separated part a DNS subdomain."""
    if not name:
        return [_required(path)]
    errs = [_too_long(path, MAX_POOL_NAME_LENGTH)] if len(name) > MAX_POOL_NAME_LENGTH else []
    if any(not _SUBDOMAIN.fullmatch(part) for part in name.split("/")):
        errs.append(_invalid(path, name, "each '/'-separated part " + SUBDOMAIN_MSG))
    return errs


def qualified_name_problems(name: str, *, path: str) -> list[str]:
    """An attribute or capacity name: ``<id>`` or ``<domain>/<id>``."""
    parts = name.split("/")
    if len(parts) > 2:
        return [_invalid(path, name, "must not contain more than one slash")]
    errs: list[str] = []
    if len(parts) == 2:
        domain = parts[0]
        if not domain:
            errs.append(_invalid(path, name, "the domain must not be empty"))
        else:
            if len(domain) > MAX_DOMAIN_LENGTH:
                errs.append(f"{path}: Too long: the domain may not be more than "
                            f"{MAX_DOMAIN_LENGTH} bytes")
            if not _SUBDOMAIN.fullmatch(domain.lower()):
                errs.append(_invalid(path, domain, "the domain " + SUBDOMAIN_MSG))
    ident = parts[-1]
    if not ident:
        return [*errs, _invalid(path, name, "the name must not be empty")]
    if len(ident) > MAX_ID_LENGTH:
        errs.append(_too_long(path, MAX_ID_LENGTH))
    if not _C_ID.fullmatch(ident):
        errs.append(_invalid(path, ident, C_ID_MSG))
    return errs


def _label_key(key: str, path: str) -> list[str]:
    """A label-style key (taint keys): ``[prefix/]name``, name at most 63."""
    prefix, _, name = key.rpartition("/") if "/" in key else ("", "", key)
    errs = _subdomain(prefix, path) if "/" in key else []
    if not name or len(name) > 63 or not _QNAME_PART.fullmatch(name):
        errs.append(_invalid(path, key, "must be a qualified name ([prefix/]name, the name at "
                                        "most 63 alphanumerics, '-', '_' or '.')"))
    return errs


# --- quantities ------------------------------------------------------------------------
class QuantityError(ValueError):
    """The text is not a Kubernetes quantity."""


@functools.lru_cache(maxsize=4096)
def parse_quantity(text: str) -> Fraction:
    """The value of a quantity (``"80Gi"``, ``"1.5"``, ``"500m"``, ``"1e3"``), rounded up
    to 1n as the API server stores it; ``QuantityError`` when it does not parse."""
    m = _QUANTITY.fullmatch(text) if isinstance(text, str) else None
    if m is None or not (m.group(2) or m.group(3)):
        raise QuantityError(f"{text!r} is not a quantity (e.g. '80Gi', '4', '500m')")
    sign, whole, frac, suffix = m.groups()
    value = Fraction(int((whole or "0") + (frac or "")), 10 ** len(frac or ""))
    if suffix in _BINARY:
        value *= 2 ** _BINARY[suffix]
    elif suffix in _DECIMAL:
        value *= Fraction(10) ** _DECIMAL[suffix]
    elif re.fullmatch(r"[eE][-+]?\d+", suffix):
        value *= Fraction(10) ** int(suffix[1:])
    else:
        raise QuantityError(f"{text!r} has an unknown suffix {suffix!r}")
    if (value * 10**9).denominator != 1:
        value = Fraction(math.ceil(value * 10**9), 10**9)
    return -value if sign == "-" else value


def _quantity(value: Any, path: str) -> list[str]:
    if value is None:
        return [_required(path)]
    try:
        parse_quantity(value)
    except QuantityError as exc:
        return [_invalid(path, value if isinstance(value, str) else str(value), str(exc))]
    return []


# --- node selection --------------------------------------------------------------------
def _node_selector(selector: Any, path: str) -> list[str]:
    terms = selector.get("nodeSelectorTerms") if isinstance(selector, Mapping) else None
    if not isinstance(terms, list) or len(terms) != 1:
        count = len(terms) if isinstance(terms, list) else 0
        return [_invalid(f"{path}.nodeSelectorTerms", count,
                         "must have exactly one node selector term")]
    return []


def _node_selection(spec: Mapping[str, Any], names: Sequence[str], prefix: str,
                    what: str) -> list[str]:
    errs: list[str] = []
    chosen: list[str] = []
    for name in names:
        value = spec.get(name)
        if value is None:
            continue
        chosen.append(f"`{name}`")
        if name == "nodeName":
            errs += _subdomain(value, f"{prefix}nodeName") if isinstance(value, str) else [
                _invalid(f"{prefix}nodeName", value, "must be a string")]
        elif name == "nodeSelector":
            errs += _node_selector(value, f"{prefix}nodeSelector")
        elif value is not True:
            errs.append(_invalid(f"{prefix}{name}", value, "must be either unset or set to true"))
    if len(chosen) != 1:
        found = ", ".join(chosen) or "none"
        errs.append(f"{prefix or 'spec'}: {what} is required, found {found}")
    return errs


# --- devices ---------------------------------------------------------------------------
def _attribute(value: Any, path: str) -> list[str]:
    present = [k for k in ("int", "bool", "string", "version")
               if isinstance(value, Mapping) and value.get(k) is not None]
    if len(present) != 1:
        return [_invalid(path, ", ".join(present) or "none", "exactly one of int, bool, "
                                                             "string, version must be set")]
    kind, item = present[0], str(value[present[0]])
    errs = [_too_long(f"{path}.{kind}", MAX_VALUE_LENGTH)] if kind in ("string", "version") and (
        len(item.encode()) > MAX_VALUE_LENGTH) else []
    if kind == "version" and not _SEMVER.fullmatch(item):
        errs.append(_invalid(f"{path}.version", item,
                             "must be a string compatible with semver.org spec 2.0.0"))
    return errs


def _counters(entry: Mapping[str, Any], name_key: str, path: str) -> list[str]:
    errs = _label(str(entry.get(name_key) or ""), f"{path}{name_key}")
    counters = entry.get("counters") or {}
    if not counters:
        errs.append(_required(f"{path}counters"))
    elif len(counters) > MAX_COUNTERS:
        errs.append(_too_many(f"{path}counters", len(counters), MAX_COUNTERS))
    for name in sorted(counters):
        errs += _label(name, f"{path}counters[{name}]")
        errs += _quantity((counters[name] or {}).get("value"), f"{path}counters[{name}].value")
    return errs


def _taint(taint: Mapping[str, Any], path: str) -> list[str]:
    errs = _label_key(str(taint.get("key") or ""), f"{path}.key")
    value = str(taint.get("value") or "")
    if value and (len(value) > 63 or not _QNAME_PART.fullmatch(value)):
        errs.append(_invalid(f"{path}.value", value, "must be a valid label value (at most 63 "
                                                     "alphanumerics, '-', '_' or '.')"))
    effect = taint.get("effect") or ""
    if not effect:
        errs.append(_required(f"{path}.effect"))
    elif effect not in TAINT_EFFECTS:
        supported = ", ".join(_quote(e) for e in TAINT_EFFECTS)
        errs.append(f"{path}.effect: Unsupported value: {_quote(effect)}: supported values: "
                    f"{supported}")
    added = taint.get("timeAdded")
    if added and not _TIME.fullmatch(str(added)):
        errs.append(_invalid(f"{path}.timeAdded", added, "must be an RFC 3339 time"))
    return errs


def device_problems(device: Mapping[str, Any], *, per_device_node_selection: bool = False
                    ) -> list[str]:
    """Every problem of one device, as ``<field>: <message>`` (without the device name)."""
    errs = _label(str(device.get("name") or ""), "name")
    attributes = device.get("attributes") or {}
    capacity = device.get("capacity") or {}
    if (total := len(attributes) + len(capacity)) > MAX_ATTRIBUTES_AND_CAPACITIES:
        errs.append(_invalid("attributes", total, "the total number of attributes and "
                             f"capacities must not exceed {MAX_ATTRIBUTES_AND_CAPACITIES}"))
    for key in sorted(attributes):
        errs += qualified_name_problems(key, path=f"attributes[{key}]")
        errs += _attribute(attributes[key], f"attributes[{key}]")
    for key in sorted(capacity):
        errs += qualified_name_problems(key, path=f"capacity[{key}]")
        errs += _quantity((capacity[key] or {}).get("value"), f"capacity[{key}].value")
    consumes = device.get("consumesCounters") or []
    if len(consumes) > MAX_CONSUMES_COUNTERS:
        errs.append(_too_many("consumesCounters", len(consumes), MAX_CONSUMES_COUNTERS))
    for i, entry in enumerate(consumes):
        errs += _counters(entry, "counterSet", f"consumesCounters[{i}].")
    errs += _duplicates([str(c.get("counterSet") or "") for c in consumes], "consumesCounters",
                        "counterSet")
    taints = device.get("taints") or []
    if len(taints) > MAX_TAINTS:
        errs.append(_too_many("taints", len(taints), MAX_TAINTS))
    for i, taint in enumerate(taints):
        errs += _taint(taint, f"taints[{i}]")
    if per_device_node_selection:
        errs += _node_selection(device, ("nodeName", "nodeSelector", "allNodes"), "",
                                "with perDeviceNodeSelection, exactly one of `nodeName`, "
                                "`nodeSelector`, `allNodes`")
    else:
        for key in ("nodeName", "nodeSelector", "allNodes"):
            if device.get(key) is not None:
                errs.append(_invalid(key, str(device[key]), "may only be set when the slice "
                                     "has perDeviceNodeSelection: true"))
    return errs


def _duplicates(names: Iterable[str], path: str, what: str) -> list[str]:
    seen: set[str] = set()
    errs = []
    for name in names:
        if name in seen:
            errs.append(f"{path}: Duplicate value: {what} {_quote(name)}")
        seen.add(name)
    return errs


def _device_label(device: Mapping[str, Any], index: int) -> str:
    name = device.get("name")
    return f"device {_quote(name)}" if name else f"device #{index}"


# --- slices and pools ------------------------------------------------------------------
def slice_problems(obj: Mapping[str, Any], *, index: int = 0) -> list[str]:
    """Every problem of one ResourceSlice (a v1 dict), each naming its device or field."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    where = f"slice {index}: "
    errs: list[str] = []
    if meta.get("name"):
        errs += [where + e for e in _subdomain(meta["name"], "metadata.name")]
    elif meta.get("generateName"):
        errs += [where + e for e in _subdomain(meta["generateName"] + "x0000",
                                               "metadata.generateName")]
    else:
        errs.append(where + _required("metadata.name", "name or generateName is required"))
    errs += driver_problems(str(spec.get("driver") or ""))
    pool = spec.get("pool") or {}
    errs += [f'pool {_quote(pool.get("name") or "")}: ' + e
             for e in pool_name_problems(str(pool.get("name") or ""), path="name")]
    if not isinstance(gen := pool.get("generation", 0), int) or gen < 0:
        errs.append(_invalid("pool.generation", gen, "must be greater than or equal to zero"))
    if not isinstance(count := pool.get("resourceSliceCount", 0), int) or count <= 0:
        errs.append(_invalid("pool.resourceSliceCount", count, "must be greater than zero"))
    errs += [where + e for e in _node_selection(
        spec, ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection"), "",
        ONE_OF_NODES)]
    devices = spec.get("devices") or []
    counter_sets = spec.get("sharedCounters") or []
    if devices and counter_sets:
        errs.append(where + "only one of `sharedCounters` or `devices` is allowed")
    advanced = any(d.get("taints") or d.get("consumesCounters") for d in devices)
    limit = MAX_DEVICES_ADVANCED if advanced else MAX_DEVICES
    if len(devices) > limit:
        reason = " (devices with taints or consumesCounters)" if advanced else ""
        errs.append(where + _too_many("devices", len(devices), limit) + reason)
    per_device = spec.get("perDeviceNodeSelection") is True
    for i, device in enumerate(devices):
        label = _device_label(device, i)
        errs += [f"{label}: {e}" for e in device_problems(
            device, per_device_node_selection=per_device)]
    if len(counter_sets) > MAX_COUNTER_SETS:
        errs.append(where + _too_many("sharedCounters", len(counter_sets), MAX_COUNTER_SETS))
    for i, counter_set in enumerate(counter_sets):
        label = f"counter set {_quote(counter_set.get('name') or f'#{i}')}: "
        errs += [label + e for e in _counters(counter_set, "name", "")]
    return errs


def pool_problems(slices: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every problem of the slices of one pool: each slice's, plus what spans slices (unique
    device and counter-set names, consistent generation and slice count, counter sets that
    devices consume must exist in the pool)."""
    errs: list[str] = []
    for i, obj in enumerate(slices):
        errs += slice_problems(obj, index=i)
    specs = [obj.get("spec") or {} for obj in slices]
    devices = [d for spec in specs for d in spec.get("devices") or []]
    counter_sets = [c for spec in specs for c in spec.get("sharedCounters") or []]
    errs += _duplicates((str(d.get("name") or "") for d in devices), "devices", "device")
    errs += _duplicates((str(c.get("name") or "") for c in counter_sets), "sharedCounters",
                        "counter set")
    pools = {json.dumps(spec.get("pool") or {}, sort_keys=True) for spec in specs}
    if len(pools) > 1:
        errs.append("pool: generation and resourceSliceCount differ between the slices")
    known = {str(c.get("name")): set(c.get("counters") or {}) for c in counter_sets}
    for i, device in enumerate(devices):
        for j, use in enumerate(device.get("consumesCounters") or []):
            name = str(use.get("counterSet") or "")
            path = f"{_device_label(device, i)}: consumesCounters[{j}]"
            if name and name not in known:
                errs.append(_invalid(f"{path}.counterSet", name, "no such counter set in the "
                                                                 "pool"))
            elif name:
                for counter in sorted(set(use.get("counters") or {}) - known[name]):
                    errs.append(_invalid(f"{path}.counters", counter,
                                         f"counter set {_quote(name)} has no such counter"))
    return errs


def validate_pool(slices: Sequence[Mapping[str, Any]], *, pool: str = "") -> None:
    """Raise ``SliceValidationError`` listing every problem of the pool's slices."""
    problems = pool_problems(slices)
    if problems:
        raise SliceValidationError(problems, pool=pool)
