"""Per-resource write rules of the fake API server (the registry "strategies").

Before an object is validated and stored the real apiserver decodes it (dropping unknown
fields, printing quantities canonically), applies defaults, drops fields of disabled
feature gates, and resets the parts a request may not touch: ``status`` on create and on
updates of the main resource, ``spec`` and most of ``metadata`` on ``/status`` updates.
This module does the same, and runs the matching validation. It is kept apart from the
store so that the store only deals with versions, events and watches.

Feature gates default to kube-apiserver v1.35: DRAPrioritizedList, DRAAdminAccess and
DRAResourceClaimDeviceStatus on; DRAPartitionableDevices, DRADeviceTaints,
DRAConsumableCapacity, DRADeviceBindingConditions and DRAExtendedResource off, so e.g.
device taints and shared counters are silently dropped unless the gate is turned on.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator, Mapping
from typing import Any

from dra_framework.testing import _fakeapi_validation as va
from dra_framework.testing import _fakeapi_validation_claims as vc
from dra_framework.testing._fakeapi_json import clone
from dra_framework.testing._fakeapi_quantity import QuantityError, canonical
from dra_framework.testing._fakeapi_rawjson import RawMap, find_raw_paths, go_json, is_raw_path
from dra_framework.testing._fakeapi_resources import ResourceInfo, order_metadata
from dra_framework.testing._fakeapi_status import FieldError, bad_request, invalid_object

JsonDict = dict[str, Any]
Pattern = tuple[str, ...]

GATES_1_35: dict[str, bool] = {
    "DRAPrioritizedList": True, "DRAAdminAccess": True, "DRAResourceClaimDeviceStatus": True,
    "DRAPartitionableDevices": False, "DRADeviceTaints": False, "DRAConsumableCapacity": False,
    "DRADeviceBindingConditions": False, "DRAExtendedResource": False,
}
ALL_DRA_GATES: dict[str, bool] = dict.fromkeys(GATES_1_35, True)

_DEV = ("spec", "devices", "*")
_RESULT = ("status", "allocation", "devices", "results", "*")
_SLICE_DROPS: list[tuple[str | None, Pattern]] = [
    ("DRAPartitionableDevices", ("spec", "sharedCounters")),
    ("DRAPartitionableDevices", ("spec", "perDeviceNodeSelection")),
    *[("DRAPartitionableDevices", (*_DEV, k))
      for k in ("consumesCounters", "nodeName", "nodeSelector", "allNodes")],
    ("DRADeviceTaints", (*_DEV, "taints")),
    *[("DRADeviceBindingConditions", (*_DEV, k))
      for k in ("bindsToNode", "bindingConditions", "bindingFailureConditions")],
    ("DRAConsumableCapacity", (*_DEV, "allowMultipleAllocations")),
    ("DRAConsumableCapacity", (*_DEV, "capacity", "*", "requestPolicy")),
    # Fields added after v1.35: the v1.35 decoder does not know them.
    (None, ("spec", "partitionTypeAttribute")), (None, ("spec", "skipNodeOperations")),
    (None, (*_DEV, "nodeAllocatableResourceMappings")),
    (None, (*_DEV, "nodeAllocatableResources")),
    *[(None, (*_DEV, "attributes", "*", k)) for k in ("ints", "bools", "strings", "versions")],
]
_STATUS_DROPS: list[tuple[str | None, Pattern]] = [
    ("DRADeviceTaints", (*_RESULT, "tolerations")),
    ("DRADeviceBindingConditions", (*_RESULT, "bindingConditions")),
    ("DRADeviceBindingConditions", (*_RESULT, "bindingFailureConditions")),
    ("DRAConsumableCapacity", (*_RESULT, "shareID")),
    ("DRAConsumableCapacity", (*_RESULT, "consumedCapacity")),
    ("DRAConsumableCapacity", ("status", "devices", "*", "shareID")),
    ("DRAAdminAccess", (*_RESULT, "adminAccess")),
    ("DRAResourceClaimDeviceStatus", ("status", "devices")),
    (None, (*_RESULT, "skipNodeOperations")),
]


def _claim_spec_drops(prefix: Pattern) -> list[tuple[str | None, Pattern]]:
    req = (*prefix, "devices", "requests", "*")
    drops: list[tuple[str | None, Pattern]] = []
    for request in ((*req, "exactly"), (*req, "firstAvailable", "*")):
        drops += [("DRADeviceTaints", (*request, "tolerations")),
                  ("DRAConsumableCapacity", (*request, "capacity")),
                  (None, (*request, "derivedAttributes"))]
    return [*drops, ("DRAPrioritizedList", (*req, "firstAvailable")),
            ("DRAAdminAccess", (*req, "exactly", "adminAccess")),
            ("DRAConsumableCapacity", (*prefix, "devices", "constraints", "*",
                                       "distinctAttribute"))]


_DROPS: dict[str, list[tuple[str | None, Pattern]]] = {
    "resourceslices": _SLICE_DROPS,
    "resourceclaims": _claim_spec_drops(("spec",)) + _STATUS_DROPS,
    "resourceclaimtemplates": _claim_spec_drops(("spec", "spec")),
    "deviceclasses": [("DRAExtendedResource", ("spec", "extendedResourceName"))],
}
_QUANTITIES: dict[str, list[Pattern]] = {
    "resourceslices": [(*_DEV, "capacity", "*", "value"),
                       (*_DEV, "capacity", "*", "requestPolicy", "default"),
                       (*_DEV, "capacity", "*", "requestPolicy", "validValues", "*"),
                       *[(*_DEV, "capacity", "*", "requestPolicy", "validRange", k)
                         for k in ("min", "max", "step")],
                       ("spec", "sharedCounters", "*", "counters", "*", "value"),
                       (*_DEV, "consumesCounters", "*", "counters", "*", "value")],
    "resourceclaims": [("spec", "devices", "requests", "*", "exactly", "capacity", "requests", "*"),
                       ("spec", "devices", "requests", "*", "firstAvailable", "*", "capacity",
                        "requests", "*"),
                       (*_RESULT, "consumedCapacity", "*")],
}


_COND = ("status", "conditions", "*")
# metav1.Time fields (printed to the second) and, marked True, MicroTime fields.
_TIMES: dict[str, list[tuple[Pattern, bool]]] = {
    "resourceclaims": [(("status", "devices", "*", "conditions", "*", "lastTransitionTime"), False),
                       (("status", "allocation", "allocationTimestamp"), False)],
    "resourceslices": [((*_DEV, "taints", "*", "timeAdded"), False)],
    "pods": [((*_COND, "lastTransitionTime"), False), ((*_COND, "lastProbeTime"), False),
             (("status", "startTime"), False)],
    "nodes": [((*_COND, "lastTransitionTime"), False), ((*_COND, "lastHeartbeatTime"), False)],
    "leases": [(("spec", "acquireTime"), True), (("spec", "renewTime"), True)],
}


_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?"
                      r"([Zz]|[+-]\d{2}:\d{2})?")


def _go_time(info: ResourceInfo, value: Any, micro: bool) -> str:
    """Print a timestamp as Go's metav1.Time / MicroTime marshal it (UTC, ``Z``)."""
    m = _RFC3339.fullmatch(str(value))
    try:
        if m is None:
            raise ValueError(value)
        day, clock, fraction, zone = m.groups()
        micros = ((fraction or ".")[1:] + "000000")[:6]
        offset = "+00:00" if zone in (None, "Z", "z") else zone
        parsed = datetime.datetime.fromisoformat(f"{day}T{clock}.{micros}{offset}")
    except ValueError:
        raise bad_request(f'{info.kind} in version "{info.version}" cannot be handled as a '
                          f'{info.kind}: parsing time "{value}" as "2006-01-02T15:04:05Z07:00": '
                          "cannot parse") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(datetime.timezone.utc)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _matches(node: Any, pattern: Pattern) -> Iterator[tuple[Any, str | int]]:
    """Yield (container, key) for every place ``pattern`` matches in ``node``."""
    head, rest = pattern[0], pattern[1:]
    if isinstance(node, dict):
        keys: list[str | int] = list(node) if head == "*" else [head] if head in node else []
    elif isinstance(node, list) and head == "*":
        keys = list(range(len(node)))
    else:
        return
    for key in keys:
        if not rest:
            yield node, key
        else:
            yield from _matches(node[key], rest)


_DEEPEST_FIELD = 32  # no field of the served types nests deeper

# List fields without ``omitempty``: Go prints them even when empty.
_KEEP_EMPTY = {("devices", "requests"), ("spec", "containers"),
               ("nodeSelector", "nodeSelectorTerms")}


def strip_nulls(node: Any, path: tuple[str | int, ...] = ()) -> Any:
    """What survives a decode and re-encode in Go: ``null`` and, for omitempty slices,
    ``[]`` disappear (RawExtension contents, and what lies deeper than any Go type of
    these resources, are kept as they are)."""
    if is_raw_path(path) or len(path) > _DEEPEST_FIELD:
        return node
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if value is None or (value == [] and path[-1:] + (key,) not in _KEEP_EMPTY):
                continue
            out[key] = strip_nulls(value, (*path, key))
        return out
    if isinstance(node, list):
        return [strip_nulls(v, (*path, i)) for i, v in enumerate(node)]
    return node


def _decode(info: ResourceInfo, obj: JsonDict, old: JsonDict | None,
            gates: Mapping[str, bool]) -> None:
    for gate, pattern in _DROPS.get(info.plural, []):
        if gate is not None and gates.get(gate, False):
            continue
        if old is not None and gate is not None and any(True for _ in _matches(old, pattern)):
            continue
        for container, key in list(_matches(obj, pattern)):
            del container[key]
    for pattern in _QUANTITIES.get(info.plural, []):
        for container, key in _matches(obj, pattern):
            value = container[key]
            try:
                container[key] = canonical(str(value) if not isinstance(value, bool) else "")
            except QuantityError as exc:
                raise bad_request(f'{info.kind} in version "{info.version}" cannot be handled as '
                                  f"a {info.kind}: {exc}") from None
    for pattern, micro in _TIMES.get(info.plural, []):
        for container, key in _matches(obj, pattern):
            container[key] = _go_time(info, container[key], micro)
    if info.plural == "pods":  # a zero metav1.Time in a struct is printed as null
        for condition in (obj.get("status") or {}).get("conditions") or []:
            condition.setdefault("lastProbeTime", None)
    if info.plural in ("resourceclaims", "resourceclaimtemplates"):
        spec = obj.get("spec") or {}
        if info.plural == "resourceclaimtemplates":
            spec = spec.get("spec") or {}
        for request in (spec.get("devices") or {}).get("requests") or []:
            for exact in [request.get("exactly"), *(request.get("firstAvailable") or [])]:
                if isinstance(exact, dict):
                    if not exact.get("allocationMode"):
                        exact["allocationMode"] = "ExactCount"
                    if exact["allocationMode"] == "ExactCount" and not exact.get("count"):
                        exact["count"] = 1
                    for toleration in exact.get("tolerations") or []:
                        toleration.setdefault("operator", "Equal")


def _pod_status(pod: JsonDict) -> JsonDict:
    containers = (pod.get("spec") or {}).get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    besteffort = not any(r.get("requests") or r.get("limits") for r in resources)
    return {"phase": "Pending", "qosClass": "BestEffort" if besteffort else "Burstable"}


def prepare_create(info: ResourceInfo, body: JsonDict, gates: Mapping[str, bool]) -> JsonDict:
    obj = strip_nulls(clone(body))
    if info.plural == "resourceclaims":
        obj["status"] = {}
    elif info.plural == "pods":
        obj["status"] = _pod_status(obj)
    _decode(info, obj, None, gates)
    return dict(obj)


_STATUS_META = ("deletionTimestamp", "generation", "labels", "annotations", "finalizers",
                "ownerReferences")


def prepare_update(info: ResourceInfo, body: JsonDict, old: JsonDict, *, status: bool,
                   gates: Mapping[str, bool]) -> JsonDict:
    obj: JsonDict = strip_nulls(clone(body))
    if info.status_subresource and status:
        for key in [k for k in obj if k not in ("metadata", "status", "kind", "apiVersion")]:
            del obj[key]
        obj.update({k: clone(v) for k, v in old.items() if k not in ("metadata", "status")})
        meta = obj.setdefault("metadata", {})
        for key in _STATUS_META:
            meta.pop(key, None)
            if key in old["metadata"]:
                meta[key] = clone(old["metadata"][key])
    elif info.status_subresource:
        obj.pop("status", None)
        if "status" in old:
            obj["status"] = clone(old["status"])
    _decode(info, obj, old, gates)
    if info.plural == "resourceclaims" and status:
        _drop_deallocated_devices(obj, old)
    return obj


def _drop_deallocated_devices(new: JsonDict, old: JsonDict) -> None:
    def ids(claim: JsonDict) -> set[tuple[str, str, str]]:
        alloc = (claim.get("status") or {}).get("allocation") or {}
        return {(r.get("driver", ""), r.get("pool", ""), r.get("device", ""))
                for r in (alloc.get("devices") or {}).get("results") or []}

    gone = ids(old) - ids(new)
    status = new.get("status") or {}
    if gone and status.get("devices"):
        kept = [d for d in status["devices"]
                if (d.get("driver", ""), d.get("pool", ""), d.get("device", "")) not in gone]
        if kept:
            status["devices"] = kept
        else:
            del status["devices"]


def select_raw(obj: JsonDict, sources: Mapping[tuple[str | int, ...], str]) -> RawMap:
    """RawExtension bytes for ``obj``: from ``sources`` where known, else re-encoded."""
    return {p: sources[p] if p in sources else go_json(v) for p, v in find_raw_paths(obj)}


def merge_raw(info: ResourceInfo, new_raw: RawMap, old_raw: RawMap, *, status: bool) -> RawMap:
    """Which bytes survive an update: the part a request may not touch keeps the old ones."""
    if not info.status_subresource:
        return dict(new_raw)
    mine = {p: v for p, v in new_raw.items() if (p[:1] == ("status",)) == status}
    kept = {p: v for p, v in old_raw.items() if (p[:1] == ("status",)) != status}
    return {**kept, **mine}


def validate(info: ResourceInfo, obj: JsonDict, old: JsonDict | None, raw: RawMap,
             old_raw: RawMap, *, status: bool) -> None:
    """Raise a 422 shaped like kube-apiserver's when ``obj`` is invalid."""
    errs: list[FieldError] = va.metadata(obj, old)
    spec = obj.get("spec") or {}
    plural = info.plural
    if plural == "resourceslices":
        errs += va.resource_slice(spec, None if old is None else old.get("spec") or {})
    elif plural == "deviceclasses":
        errs += vc.device_class(spec, None if old is None else old.get("spec") or {}, raw)
    elif plural == "resourceclaims" and old is None:
        errs += vc.claim_spec(spec, "spec", raw)
    elif plural == "resourceclaims" and status:
        errs += vc.claim_status(obj, old or {}, raw, old_raw)
    elif plural == "resourceclaims" and old is not None:
        errs += vc.immutable_spec("ResourceClaimSpec", obj, old, raw, old_raw, order_metadata)
    elif plural == "resourceclaimtemplates" and old is None:
        errs += vc.claim_spec(spec.get("spec") or {}, "spec.spec", raw)
    elif plural == "resourceclaimtemplates" and old is not None:
        errs += vc.immutable_spec("ResourceClaimTemplateSpec", obj, old, raw, old_raw,
                                  order_metadata)
    if errs:
        name = (obj.get("metadata") or {}).get("name", "")
        raise invalid_object(info.kind, info.group, name, errs)
