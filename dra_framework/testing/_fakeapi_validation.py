"""Shared validation rules of the fake API server, and ResourceSlice validation.

Ported from ``pkg/apis/resource/validation`` (and the apimachinery name helpers) of
kube-apiserver v1.35: the checks, their order, field paths and messages match, so a 422
from the fake server can be compared with a real one byte for byte (the captured fixture
cases are). This module holds what every resource shares (DNS label / subdomain and
qualified names, driver and pool names, object names and labels, the finalizer rule,
Go's ``Semantic.DeepEqual``) plus the ResourceSlice rules: driver and pool, pool
generation and slice count, the node-selection one-of, ``devices`` xor
``sharedCounters``, at most 128 devices (64 with taints or counter consumption), device
names, attribute and capacity keys and values, 32 attributes+capacities per device,
counters, taints, and the immutable driver, pool name and node name.

Maps are walked in sorted key order (Go's is random). ``_fakeapi_validation_claims``
covers claims, templates and device classes.
"""

from __future__ import annotations

import re
from typing import Any

from dra_framework.testing import _fakeapi_status as st
from dra_framework.testing._fakeapi_rawjson import RawMap, render_go, render_go_list
from dra_framework.testing._fakeapi_status import FieldError

JsonDict = dict[str, Any]
Errs = list[FieldError]

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_C_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QNAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_NUM = r"(0|[1-9]\d*)"
_PRE = r"(0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
_SEMVER = re.compile(rf"{_NUM}\.{_NUM}\.{_NUM}(-{_PRE}(\.{_PRE})*)?"
                     r"(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?")
_QNAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
              "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', "
              "regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric "
                    "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                    "character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
                    "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
_ONE_OF_NODES = "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection`"
_PER_DEVICE = ("exactly one of `nodeName`, `nodeSelector`, or `allNodes` is required when "
               "`perDeviceNodeSelection` is set to true in the ResourceSlice spec")


def label_msgs(value: str) -> list[str]:
    msgs = ["must be no more than 63 characters"] if len(value) > 63 else []
    return msgs if _LABEL.fullmatch(value) else [*msgs, st.RFC1123_LABEL_MSG]


def subdomain_msgs(value: str) -> list[str]:
    msgs = ["must be no more than 253 characters"] if len(value) > 253 else []
    return msgs if _SUBDOMAIN.fullmatch(value) else [*msgs, st.RFC1123_SUBDOMAIN_MSG]


def qualified_name_msgs(value: str) -> list[str]:
    parts = value.split("/")
    if len(parts) > 2:
        return ["a qualified name " + _QNAME_MSG + " with an optional DNS subdomain prefix and "
                "'/' (e.g. 'example.com/MyName')"]
    msgs: list[str] = []
    if len(parts) == 2:
        if not parts[0]:
            msgs.append("prefix part must be non-empty")
        msgs += ["prefix part " + m for m in subdomain_msgs(parts[0]) if parts[0]]
    name = parts[-1]
    if not name:
        return [*msgs, "name part must be non-empty"]
    if len(name) > 63:
        msgs.append("name part must be no more than 63 characters")
    if not _QNAME.fullmatch(name):
        msgs.append("name part " + _QNAME_MSG)
    return msgs


def name_errors(value: str, path: str, msgs: list[str]) -> Errs:
    return [st.invalid(path, value, m) for m in msgs]


def blen(text: str) -> int:
    return len(text.encode())


def driver_name(name: str, path: str) -> Errs:
    errs: Errs = [st.required(path)] if not name else []
    if len(name) > 63:
        errs.append(st.too_long(path, 63))
    return errs + name_errors(name, path, subdomain_msgs(name.lower()))


def pool_name(name: str, path: str) -> Errs:
    if not name:
        return [st.required(path)]
    errs: Errs = [st.too_long(path, 253)] if len(name) > 253 else []
    for part in name.split("/"):
        errs += name_errors(part, path, subdomain_msgs(part))
    return errs


def metadata(obj: JsonDict, old: JsonDict | None) -> Errs:
    """Name and labels on create; the finalizer rule on update."""
    meta = obj.get("metadata") or {}
    errs: Errs = []
    if old is None:
        if not meta.get("name"):
            errs.append(st.required("metadata.name", "name or generateName is required"))
        else:
            errs += name_errors(meta["name"], "metadata.name", subdomain_msgs(meta["name"]))
    for key, value in sorted((meta.get("labels") or {}).items()):
        errs += name_errors(key, "metadata.labels", qualified_name_msgs(key))
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            msgs = ["must be no more than 63 characters"] if len(value) > 63 else []
            if not _LABEL_VALUE.fullmatch(value):
                msgs.append(_LABEL_VALUE_MSG)
            errs += name_errors(value, "metadata.labels", msgs)
    if old is not None and (old.get("metadata") or {}).get("deletionTimestamp"):
        before = set(old["metadata"].get("finalizers") or [])
        added = [f for f in meta.get("finalizers") or [] if f not in before]
        if added:
            listing = ", ".join(st.go_quote(f) for f in added)
            errs.append(st.forbidden("metadata.finalizers", "no new finalizers can be added if "
                                     f"the object is being deleted, found new finalizers "
                                     f"[]string{{{listing}}}"))
    return errs


def semantic_equal(a: Any, b: Any) -> bool:
    """Go's ``Semantic.DeepEqual`` on JSON values: nil and empty are equal.  Any depth (opaque
    parameters can nest thousands deep): pairs wait on a stack, not in recursive calls."""
    pairs: list[tuple[Any, Any]] = [(a, b)]
    while pairs:
        a, b = pairs.pop()
        if isinstance(a, dict) or isinstance(b, dict):
            a, b = a or {}, b or {}
            if not isinstance(a, dict) or not isinstance(b, dict):
                return False
            keys = {k for k in a if a[k] not in (None, [], {})} | {
                k for k in b if b[k] not in (None, [], {})}
            pairs.extend((a.get(k), b.get(k)) for k in keys)
        elif isinstance(a, list) or isinstance(b, list):
            a, b = a or [], b or []
            if not (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)):
                return False
            pairs.extend(zip(a, b, strict=True))
        elif not (a == b and type(a) is type(b)):
            return False
    return True


def raw_equal(new: RawMap, old: RawMap, prefix: tuple[str, ...]) -> bool:
    n = len(prefix)
    mine = {p: v for p, v in new.items() if p[:n] == prefix}
    theirs = {p: v for p, v in old.items() if p[:n] == prefix}
    return mine == theirs


# --- ResourceSlice ---------------------------------------------------------------------
def resource_slice(spec: JsonDict, old: JsonDict | None) -> Errs:
    errs = driver_name(spec.get("driver") or "", "spec.driver")
    pool = spec.get("pool") or {}
    errs += pool_name(pool.get("name") or "", "spec.pool.name")
    if (count := pool.get("resourceSliceCount") or 0) <= 0:
        errs.append(st.invalid("spec.pool.resourceSliceCount", count, "must be greater than zero"))
    if (gen := pool.get("generation") or 0) < 0:
        errs.append(st.invalid("spec.pool.generation", gen,
                               "must be greater than or equal to zero"))
    if old is not None:
        for path, new_v, old_v in (
                ("spec.pool.name", pool.get("name") or "", (old.get("pool") or {}).get("name", "")),
                ("spec.driver", spec.get("driver") or "", old.get("driver") or ""),
                ("spec.nodeName", spec.get("nodeName"), old.get("nodeName"))):
            if new_v != old_v:
                errs.append(st.invalid(path, new_v, st.IMMUTABLE_MSG))
    errs += _node_selection(spec, "spec", f"{_ONE_OF_NODES} is required",
                            f"{_ONE_OF_NODES} is required, but multiple fields are set", top=True)
    if spec.get("sharedCounters") is not None and spec.get("devices") is not None:
        errs.append(st.invalid("spec", "", "only one of `sharedCounters` or `devices` is allowed"))
    devices = spec.get("devices") or []
    advanced = any(d.get("taints") or d.get("consumesCounters") for d in devices)
    limit = 64 if advanced else 128
    if len(devices) > limit:
        errs.append(st.too_many("spec.devices", len(devices), limit))
    else:
        per_device = spec.get("perDeviceNodeSelection") is True
        for i, device in enumerate(devices):
            errs += _device(device, f"spec.devices[{i}]", per_device)
        errs += duplicates([d.get("name", "") for d in devices], "spec.devices")
    counter_sets = spec.get("sharedCounters") or []
    if len(counter_sets) > 8:
        errs.append(st.too_many("spec.sharedCounters", len(counter_sets), 8))
    else:
        for i, counter_set in enumerate(counter_sets):
            errs += _counters(counter_set, f"spec.sharedCounters[{i}]", "name")
        errs += duplicates([c.get("name", "") for c in counter_sets], "spec.sharedCounters")
    return errs


def duplicates(keys: list[str], path: str) -> Errs:
    seen: set[str] = set()
    errs: Errs = []
    for i, key in enumerate(keys):
        if key in seen:
            errs.append(st.duplicate(f"{path}[{i}]", key))
        seen.add(key)
    return errs


def _node_selection(spec: JsonDict, path: str, required_msg: str, multiple_msg: str, *,
                    top: bool) -> Errs:
    errs: Errs = []
    chosen: list[str] = []
    if (node := spec.get("nodeName")) is not None:
        if node:
            chosen.append("`nodeName`")
            errs += name_errors(node, f"{path}.nodeName", subdomain_msgs(node))
        else:
            detail = ("must be either unset or set to a non-empty string" if top
                      else "must not be empty")
            errs.append(st.invalid(f"{path}.nodeName", node, detail))
    if (selector := spec.get("nodeSelector")) is not None:
        chosen.append("`nodeSelector`")
        terms = selector.get("nodeSelectorTerms") if isinstance(selector, dict) else None
        if top and len(terms or []) != 1:
            errs.append(st.invalid(f"{path}.nodeSelector.nodeSelectorTerms",
                                   render_go_list("NodeSelectorTerm", terms),
                                   "must have exactly one node selector term", rendered=True))
    names = ("allNodes", "perDeviceNodeSelection") if top else ("allNodes",)
    for name in names:
        if (flag := spec.get(name)) is not None:
            if flag is True:
                chosen.append(f"`{name}`")
            else:
                errs.append(st.invalid(f"{path}.{name}", flag,
                                       "must be either unset or set to true"))
    if not chosen:
        errs.append(st.required(path, required_msg))
    elif len(chosen) > 1:
        errs.append(st.invalid(path, "{" + ", ".join(chosen) + "}", multiple_msg))
    return errs


def _truncate(key: str, limit: int = 96) -> str:
    if len(key) <= limit:
        return key
    keep = limit - 3
    return key[:(keep + 1) // 2] + "..." + key[len(key) - keep // 2:]


def qualified(name: str, path: str) -> Errs:
    parts = name.split("/")
    if len(parts) > 2:
        return [st.invalid(path, name, "must not contain more than one slash")]
    errs: Errs = []
    if len(parts) == 2:
        errs += (driver_name(parts[0], path) if parts[0]
                 else [st.invalid(path, "", "the domain must not be empty")])
        if not parts[1]:
            return [*errs, st.invalid(path, "", "the name must not be empty")]
    ident = parts[-1]
    if len(ident) > 32:
        errs.append(st.too_long(path, 32))
    if not _C_ID.fullmatch(ident):
        errs.append(st.invalid(path, ident, st.C_IDENTIFIER_MSG))
    return errs


def _attribute(value: JsonDict, path: str) -> Errs:
    errs: Errs = []
    present = [k for k in ("int", "bool", "string", "version") if value.get(k) is not None]
    if "string" in present and blen(value["string"]) > 64:
        errs.append(st.too_long(f"{path}.string", 64))
    if "version" in present:
        version = value["version"]
        if not _SEMVER.fullmatch(version):
            errs.append(st.invalid(f"{path}.version", version,
                                   "must be a string compatible with semver.org spec 2.0.0"))
        if blen(version) > 64:
            errs.append(st.too_long(f"{path}.version", 64))
    if not present:
        errs.append(st.invalid(path, "", "exactly one value must be specified"))
    elif len(present) > 1:
        errs.append(st.invalid(path, render_go("DeviceAttribute", value),
                               "exactly one value must be specified", rendered=True))
    return errs


def _device(device: JsonDict, path: str, per_device: bool) -> Errs:
    name = device.get("name") or ""
    errs = name_errors(name, f"{path}.name", label_msgs(name))
    attributes = device.get("attributes") or {}
    capacity = device.get("capacity") or {}
    if (total := len(attributes) + len(capacity)) > 32:
        errs.append(st.invalid(path, total, "the total number of attributes and capacities must "
                                            "not exceed 32"))
    for key in sorted(attributes):
        key_path = f"{path}.attributes[{_truncate(key)}]"
        errs += qualified(key, key_path) + _attribute(attributes[key] or {}, key_path)
    for key in sorted(capacity):
        key_path = f"{path}.capacity[{_truncate(key)}]"
        errs += qualified(key, key_path)
        if (capacity[key] or {}).get("requestPolicy") is not None and not device.get(
                "allowMultipleAllocations"):
            errs.append(st.forbidden(f"{key_path}.requestPolicy",
                                     "allowMultipleAllocations must be true"))
    taints = device.get("taints") or []
    if len(taints) > 16:
        errs.append(st.too_many(f"{path}.taints", len(taints), 16))
    else:
        for i, taint in enumerate(taints):
            errs += _taint(taint, f"{path}.taints[{i}]")
    consumes = device.get("consumesCounters") or []
    if len(consumes) > 2:
        errs.append(st.too_many(f"{path}.consumesCounters", len(consumes), 2))
    else:
        for i, consumption in enumerate(consumes):
            errs += _counters(consumption, f"{path}.consumesCounters[{i}]", "counterSet")
        errs += duplicates([c.get("counterSet", "") for c in consumes], f"{path}.consumesCounters")
    if per_device:
        errs += _node_selection(device, path, _PER_DEVICE, _PER_DEVICE, top=False)
    elif any(device.get(k) is not None for k in ("nodeName", "nodeSelector", "allNodes")):
        errs.append(st.invalid(path, None, "`nodeName`, `nodeSelector` and `allNodes` can only be "
                                           "set if `perDeviceNodeSelection` is set to true in the "
                                           "ResourceSlice spec"))
    for key in ("bindingConditions", "bindingFailureConditions"):
        if len(items := device.get(key) or []) > 4:
            errs.append(st.too_many(f"{path}.{key}", len(items), 4))
    return errs


def _counters(value: JsonDict, path: str, name_key: str) -> Errs:
    name = value.get(name_key) or ""
    errs = ([st.required(f"{path}.{name_key}")] if not name
            else name_errors(name, f"{path}.{name_key}", label_msgs(name)))
    counters = value.get("counters") or {}
    if not counters:
        errs.append(st.required(f"{path}.counters"))
    elif len(counters) > 32:
        errs.append(st.too_many(f"{path}.counters", len(counters), 32))
    return errs


def _taint(taint: JsonDict, path: str) -> Errs:
    key = taint.get("key") or ""
    errs = name_errors(key, f"{path}.key", qualified_name_msgs(key))
    value = taint.get("value") or ""
    if value and (len(value) > 63 or not _LABEL_VALUE.fullmatch(value)):
        errs.append(st.invalid(f"{path}.value", value, _LABEL_VALUE_MSG))
    effect = taint.get("effect") or ""
    if not effect:
        errs.append(st.required(f"{path}.effect"))
    elif effect not in ("NoExecute", "NoSchedule", "None"):
        errs.append(st.not_supported(f"{path}.effect", effect, ["NoExecute", "NoSchedule", "None"]))
    return errs
