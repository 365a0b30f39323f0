"""JSON bytes as kube-apiserver keeps and prints them.

Most of an object is decoded into typed Go structs, so its bytes do not matter. Opaque
``parameters`` and ``status.devices[].data`` are ``runtime.RawExtension``: the server
keeps their bytes *exactly as they arrived* and compares those bytes when it checks that
an immutable field did not change. A client that writes a claim with whitespace in the
parameters (Python's default ``json.dumps`` separators) therefore gets a 422 "field is
immutable" on a later patch, because patching re-serialises the stored object. This
module gives the store what it needs to reproduce that:

* ``scan_raw`` finds the byte span of every RawExtension value in a request body without
  a hand-written parser (the decoder skips subtrees that hold no such key, and every
  RawExtension value, however deep or odd its content);
* ``go_compact`` is Go's ``json.Compact`` with HTML escaping, i.e. what ``json.Marshal``
  does to raw bytes; ``go_sorted`` is ``json.Marshal`` of a decoded map (sorted keys);
  both, like ``go_json``, work on values of any depth (``_fakeapi_json``);
* ``render_go`` prints an internal Go struct (no json tags, nil as ``null``) the way
  ``field.Invalid`` puts it into an error message, using the kept raw bytes.

RawPaths are tuples of keys and list indices from the object root.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from dra_framework.api.jsondecode import OversizedInteger, raw_decode
from dra_framework.testing._fakeapi_json import dumps

RawPath = tuple[str | int, ...]
RawMap = dict[RawPath, str]

_MAX_RAW_DEPTH = 8  # no RawExtension field lies deeper in an object than this
_WS = re.compile(r"[ \t\n\r]*")
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[ \t\n\r]+', re.DOTALL)
_HTML = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                       "\u2028": "\\u2028", "\u2029": "\\u2029"})


def is_raw_path(path: RawPath) -> bool:
    """True for the RawExtension fields of resource.k8s.io objects."""
    if len(path) >= 2 and path[-1] == "parameters" and path[-2] == "opaque":
        return True
    return len(path) == 4 and path[:2] == ("status", "devices") and path[3] == "data"


def scan_raw(text: str) -> RawMap:
    """Map each RawExtension path in the JSON ``text`` to its exact source text."""
    found: RawMap = {}
    if '"parameters"' not in text and '"data"' not in text:
        return found

    def skip_ws(i: int) -> int:
        m = _WS.match(text, i)
        return m.end() if m else i

    def walk(i: int, path: RawPath) -> int:
        end: int = raw_decode(text, i)[1]
        opener = text[i]
        if opener not in "{[" or is_raw_path(path) or len(path) >= _MAX_RAW_DEPTH or (
                text.find('"parameters"', i, end) < 0 and text.find('"data"', i, end) < 0):
            return end
        j = skip_ws(i + 1)
        index = 0
        while text[j] not in "}]":
            key: str | int
            if opener == "{":
                key, j = json.decoder.scanstring(text, j + 1)  # type: ignore[attr-defined]
                j = skip_ws(skip_ws(j) + 1)
            else:
                key, index = index, index + 1
            child = (*path, key)
            value_end = walk(j, child)
            if is_raw_path(child):
                found[child] = text[j:value_end]
            j = skip_ws(value_end)
            if text[j] == ",":
                j = skip_ws(j + 1)
        return end

    walk(skip_ws(0), ())
    return found


def find_raw_paths(obj: Any, path: RawPath = ()) -> Iterable[tuple[RawPath, Any]]:
    """Yield ``(path, value)`` for every RawExtension field present in ``obj``."""
    if len(path) >= _MAX_RAW_DEPTH:
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            child = (*path, key)
            if is_raw_path(child):
                yield child, value
            elif isinstance(value, (dict, list)):
                yield from find_raw_paths(value, child)
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            if isinstance(value, (dict, list)):
                yield from find_raw_paths(value, (*path, index))


def oversized_outside_raw(obj: Any) -> OversizedInteger | None:
    """An integer too long for ``int()`` in ``obj`` but not in a RawExtension value: Go's
    decoder refuses it (no typed field holds one); None when there is none."""
    work: list[tuple[RawPath, Any]] = [((), obj)]
    while work:
        path, value = work.pop()
        if isinstance(value, OversizedInteger):
            return value
        if is_raw_path(path):
            continue
        if isinstance(value, dict):
            work.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            work.extend(((*path, i), v) for i, v in enumerate(value))
    return None


def go_compact(raw: str) -> str:
    """Go's ``json.Compact`` plus the HTML escaping ``json.Marshal`` applies."""
    compact = _TOKENS.sub(lambda m: m.group(0) if m.group(0)[0] == '"' else "", raw)
    return compact.translate(_HTML)


def go_json(value: Any) -> str:
    """Compact JSON keeping the key order of ``value``, escaped like Go."""
    return dumps(value).translate(_HTML)


def _go_float(number: float) -> str:
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    text = repr(number)
    if "e" in text and 1e-6 <= abs(number) < 1e21:
        return format(Decimal(text), "f")
    return text


def go_sorted(value: Any, *, go_numbers: bool = False) -> str:
    """``json.Marshal`` of a decoded ``map[string]any``: sorted keys, compact."""
    return dumps(value, sort_keys=True, number=_go_float if go_numbers else None).translate(_HTML)


def raw_of(raw: Mapping[RawPath, str], path: RawPath, value: Any) -> str:
    """The stored bytes at ``path``, or what the server would store for ``value``."""
    text = raw.get(path)
    return text if text is not None else go_json(value)


# --- internal Go structs, printed by field.Invalid ------------------------------------
# Field specs: (kind, GoName, jsonKey, type). Kinds: S string, I int64, P pointer or
# slice/map of scalars (null when unset), L slice of structs, T struct value, PT pointer
# to struct, E embedded struct, R RawExtension, M map (sorted keys), J json-tagged type.
_F = tuple[str, str, str, str]
_TOLERATION: list[_F] = [("S", "Key", "key", ""), ("S", "Operator", "operator", ""),
                         ("S", "Value", "value", ""), ("S", "Effect", "effect", ""),
                         ("P", "TolerationSeconds", "tolerationSeconds", "")]
_REQ_COMMON: list[_F] = [("S", "DeviceClassName", "deviceClassName", ""),
                         ("L", "Selectors", "selectors", "DeviceSelector"),
                         ("S", "AllocationMode", "allocationMode", ""),
                         ("I", "Count", "count", "")]
_SCHEMA: dict[str, list[_F]] = {
    "ResourceClaimSpec": [("T", "Devices", "devices", "DeviceClaim")],
    "DeviceClaim": [("L", "Requests", "requests", "DeviceRequest"),
                    ("L", "Constraints", "constraints", "DeviceConstraint"),
                    ("L", "Config", "config", "DeviceClaimConfiguration")],
    "DeviceRequest": [("S", "Name", "name", ""),
                      ("PT", "Exactly", "exactly", "ExactDeviceRequest"),
                      ("L", "FirstAvailable", "firstAvailable", "DeviceSubRequest")],
    "ExactDeviceRequest": [*_REQ_COMMON, ("P", "AdminAccess", "adminAccess", ""),
                           ("L", "Tolerations", "tolerations", "DeviceToleration"),
                           ("PT", "Capacity", "capacity", "CapacityRequirements")],
    "DeviceSubRequest": [("S", "Name", "name", ""), *_REQ_COMMON,
                         ("L", "Tolerations", "tolerations", "DeviceToleration"),
                         ("PT", "Capacity", "capacity", "CapacityRequirements")],
    "DeviceSelector": [("PT", "CEL", "cel", "CELDeviceSelector")],
    "CELDeviceSelector": [("S", "Expression", "expression", "")],
    "DeviceToleration": _TOLERATION,
    "CapacityRequirements": [("M", "Requests", "requests", "")],
    "DeviceConstraint": [("P", "Requests", "requests", ""),
                         ("P", "MatchAttribute", "matchAttribute", ""),
                         ("P", "DistinctAttribute", "distinctAttribute", "")],
    "DeviceClaimConfiguration": [("P", "Requests", "requests", ""),
                                 ("E", "", "", "DeviceConfiguration")],
    "DeviceConfiguration": [("PT", "Opaque", "opaque", "OpaqueDeviceConfiguration")],
    "OpaqueDeviceConfiguration": [("S", "Driver", "driver", ""),
                                  ("R", "Parameters", "parameters", "")],
    "AllocationResult": [("T", "Devices", "devices", "DeviceAllocationResult"),
                         ("PT", "NodeSelector", "nodeSelector", "NodeSelector"),
                         ("P", "AllocationTimestamp", "allocationTimestamp", "")],
    "DeviceAllocationResult": [("L", "Results", "results", "DeviceRequestAllocationResult"),
                               ("L", "Config", "config", "DeviceAllocationConfiguration")],
    "DeviceRequestAllocationResult": [
        ("S", "Request", "request", ""), ("S", "Driver", "driver", ""),
        ("S", "Pool", "pool", ""), ("S", "Device", "device", ""),
        ("P", "AdminAccess", "adminAccess", ""),
        ("L", "Tolerations", "tolerations", "DeviceToleration"),
        ("P", "BindingConditions", "bindingConditions", ""),
        ("P", "BindingFailureConditions", "bindingFailureConditions", ""),
        ("P", "ShareID", "shareID", ""), ("M", "ConsumedCapacity", "consumedCapacity", "")],
    "DeviceAllocationConfiguration": [("S", "Source", "source", ""),
                                      ("P", "Requests", "requests", ""),
                                      ("E", "", "", "DeviceConfiguration")],
    "NodeSelector": [("L", "NodeSelectorTerms", "nodeSelectorTerms", "NodeSelectorTerm")],
    "NodeSelectorTerm": [("L", "MatchExpressions", "matchExpressions", "NodeSelectorRequirement"),
                         ("L", "MatchFields", "matchFields", "NodeSelectorRequirement")],
    "NodeSelectorRequirement": [("S", "Key", "key", ""), ("S", "Operator", "operator", ""),
                                ("P", "Values", "values", "")],
    "ResourceClaimTemplateSpec": [("J", "ObjectMeta", "metadata", ""),
                                  ("T", "Spec", "spec", "ResourceClaimSpec")],
    "DeviceAttribute": [("P", "IntValue", "int", ""), ("P", "BoolValue", "bool", ""),
                        ("P", "StringValue", "string", ""),
                        ("P", "VersionValue", "version", "")],
}


def render_go(type_name: str, value: Any, *, path: RawPath = (),
              raw: Mapping[RawPath, str] | None = None,
              json_tagged: Callable[[Any], str] = go_json) -> str:
    """Print ``value`` (a v1 JSON dict) as the internal Go struct ``type_name``."""
    raw = raw or {}
    return _struct(type_name, value if isinstance(value, dict) else {}, path, raw, json_tagged)


def render_go_list(type_name: str, values: list[Any] | None, *, path: RawPath = ()) -> str:
    if values is None:
        return "null"
    return "[" + ",".join(render_go(type_name, v, path=(*path, i))
                          for i, v in enumerate(values)) + "]"


def _struct(type_name: str, value: dict[str, Any], path: RawPath,
            raw: Mapping[RawPath, str], json_tagged: Callable[[Any], str]) -> str:
    parts: list[str] = []
    for kind, go_name, key, sub in _SCHEMA[type_name]:
        if kind == "E":
            inner = _struct(sub, value, path, raw, json_tagged)
            if inner != "{}":
                parts.append(inner[1:-1])
            continue
        item = value.get(key)
        here = (*path, key)
        if kind == "S":
            text = go_json(item if isinstance(item, str) else "")
        elif kind == "I":
            text = str(item if isinstance(item, int) else 0)
        elif kind == "P":
            text = "null" if item is None else go_json(item)
        elif kind == "M":
            text = "null" if item is None else go_sorted(item)
        elif kind == "R":
            text = "null" if item is None else go_compact(raw_of(raw, here, item))
        elif kind == "J":
            text = json_tagged(item or {})
        elif kind == "T":
            text = _struct(sub, item if isinstance(item, dict) else {}, here, raw, json_tagged)
        elif kind == "PT":
            text = "null" if not isinstance(item, dict) else _struct(
                sub, item, here, raw, json_tagged)
        else:  # "L"
            if not isinstance(item, list):
                text = "null"
            else:
                text = "[" + ",".join(
                    _struct(sub, v if isinstance(v, dict) else {}, (*here, i), raw, json_tagged)
                    for i, v in enumerate(item)) + "]"
        parts.append(f'"{go_name}":{text}')
    return "{" + ",".join(parts) + "}"
