"""Validation of ResourceClaims, ResourceClaimTemplates and DeviceClasses.

Ported from ``pkg/apis/resource/validation`` of kube-apiserver v1.35, with the same field
paths, messages and order: requests (``exactly`` xor ``firstAvailable``, class names,
allocation modes), constraints, config whose opaque ``parameters`` must be a JSON object
of at most 10 KiB (measured on the bytes as sent), the immutable claim and template
specs, and claim status updates: ``reservedFor``, ``status.devices`` entries that must
name an allocated (driver, pool, device, shareID), and an allocation that may be set
once but never changed. Immutability compares the kept RawExtension bytes too, exactly
like Go's ``Semantic.DeepEqual`` on ``runtime.RawExtension``; the error then prints the
internal Go struct (see ``_fakeapi_rawjson.render_go``). Shared rules (names, drivers,
pools) live in ``_fakeapi_validation``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from dra_framework.testing import _fakeapi_status as st
from dra_framework.testing._fakeapi_rawjson import RawMap, go_json, render_go
from dra_framework.testing._fakeapi_validation import (
    Errs,
    JsonDict,
    blen,
    driver_name,
    duplicates,
    label_msgs,
    name_errors,
    pool_name,
    qualified,
    raw_equal,
    semantic_equal,
    subdomain_msgs,
)

OPAQUE_MAX = 10240
_REQUEST_REF_MSG = ("must be the name of a request in the claim or the name of a request and a "
                    "subrequest separated by '/'")
_CIDR_MSG = "must be a valid address in CIDR form, (e.g. 10.9.8.7/24 or 2001:db8::1/64)"


def _label(value: str, path: str) -> Errs:
    return name_errors(value, path, label_msgs(value))

def _request_names(devices: JsonDict) -> dict[str, set[str] | None]:
    names: dict[str, set[str] | None] = {}
    for request in devices.get("requests") or []:
        subs = request.get("firstAvailable") or []
        names[request.get("name", "")] = {s.get("name", "") for s in subs} if subs else None
    return names


def _request_ref(name: str, path: str, names: Mapping[str, set[str] | None]) -> Errs:
    segments = name.split("/")
    if len(segments) > 2:
        return [st.invalid(path, name, _REQUEST_REF_MSG)]
    errs: Errs = []
    for segment in segments:
        errs += name_errors(segment, path, label_msgs(segment))
    known = segments[0] in names and (len(segments) == 1 or segments[1] in (names[segments[0]]
                                                                             or set()))
    return errs if known else [*errs, st.invalid(path, name, _REQUEST_REF_MSG)]


def _refs(refs: list[str], path: str, names: Mapping[str, set[str] | None]) -> Errs:
    if len(refs) > 32:
        return [st.too_many(path, len(refs), 32)]
    errs: Errs = []
    for i, ref in enumerate(refs):
        errs += _request_ref(ref, f"{path}[{i}]", names)
    return errs + duplicates(refs, path)


def raw_extension(raw: str | None, value: Any, present: bool, path: str, *, stored: bool,
                  limit: int = OPAQUE_MAX) -> Errs:
    if not present or value is None:
        return [st.required(path)]
    if not stored and raw is not None and blen(raw) > limit:
        return [st.too_long(path, limit)]
    if not isinstance(value, dict):
        return [st.invalid(path, "<value omitted>", "must be a valid JSON object")]
    return []


def _opaque(config: JsonDict, path: str, rawpath: tuple[str | int, ...], raw: RawMap,
            stored: bool) -> Errs:
    opaque = config.get("opaque")
    if opaque is None:
        return [st.required(f"{path}.opaque")]
    errs = driver_name(opaque.get("driver") or "", f"{path}.opaque.driver")
    key = (*rawpath, "opaque", "parameters")
    return errs + raw_extension(raw.get(key), opaque.get("parameters"), "parameters" in opaque,
                                f"{path}.opaque.parameters", stored=stored)


def _selectors(selectors: list[JsonDict], path: str) -> Errs:
    if len(selectors) > 32:
        return [st.too_many(path, len(selectors), 32)]
    errs: Errs = []
    for i, selector in enumerate(selectors):
        cel = selector.get("cel")
        if cel is None:
            errs.append(st.required(f"{path}[{i}].cel"))
        elif len(cel.get("expression") or "") > 10240:
            errs.append(st.too_long(f"{path}[{i}].cel.expression", 10240))
    return errs


def _exact(request: JsonDict, path: str) -> Errs:
    class_name = request.get("deviceClassName") or ""
    errs = ([st.required(f"{path}.deviceClassName")] if not class_name
            else name_errors(class_name, f"{path}.deviceClassName", subdomain_msgs(class_name)))
    errs += _selectors(request.get("selectors") or [], f"{path}.selectors")
    mode, count = request.get("allocationMode") or "", request.get("count") or 0
    if mode == "All" and count != 0:
        errs.append(st.invalid(f"{path}.count", count,
                               "must not be specified when allocationMode is 'All'"))
    elif mode == "ExactCount" and count <= 0:
        errs.append(st.invalid(f"{path}.count", count, "must be greater than zero"))
    elif mode not in ("All", "ExactCount"):
        errs.append(st.not_supported(f"{path}.allocationMode", mode, ["All", "ExactCount"]))
    return errs


def claim_spec(spec: JsonDict, path: str, raw: RawMap, *, stored: bool = False) -> Errs:
    devices = spec.get("devices") or {}
    base = f"{path}.devices"
    rawbase = (*path.split("."), "devices")
    names = _request_names(devices)
    errs: Errs = []
    requests = devices.get("requests") or []
    if len(requests) > 32:
        errs.append(st.too_many(f"{base}.requests", len(requests), 32))
        requests = []
    for i, request in enumerate(requests):
        rp = f"{base}.requests[{i}]"
        errs += _label(request.get("name") or "", f"{rp}.name")
        subs, exactly = request.get("firstAvailable") or [], request.get("exactly")
        if not subs and exactly is None:
            errs.append(st.required(rp, "exactly one of `exactly` or `firstAvailable` is required"))
        elif subs and exactly is not None:
            errs.append(st.invalid(rp, None, "exactly one of `exactly` or `firstAvailable` is "
                                             "required, but multiple fields are set"))
        elif len(subs) > 8:
            errs.append(st.too_many(f"{rp}.firstAvailable", len(subs), 8))
        elif subs:
            for j, sub in enumerate(subs):
                sp = f"{rp}.firstAvailable[{j}]"
                errs += _label(sub.get("name") or "", f"{sp}.name")
                errs += _exact(sub, sp)
            errs += duplicates([s.get("name", "") for s in subs], f"{rp}.firstAvailable")
        else:
            errs += _exact(exactly, f"{rp}.exactly")
    errs += duplicates([r.get("name", "") for r in requests], f"{base}.requests")
    constraints = devices.get("constraints") or []
    if len(constraints) > 32:
        errs.append(st.too_many(f"{base}.constraints", len(constraints), 32))
        constraints = []
    for i, constraint in enumerate(constraints):
        cp = f"{base}.constraints[{i}]"
        errs += _refs(constraint.get("requests") or [], f"{cp}.requests", names)
        for key in ("matchAttribute", "distinctAttribute"):
            if (attr := constraint.get(key)) is not None:
                errs += qualified(attr, f"{cp}.{key}")
                if "/" not in attr:
                    errs.append(st.invalid(f"{cp}.{key}", attr, "a fully qualified name must be "
                                           "a domain and a name separated by a slash"))
                break
        else:
            errs.append(st.required(f"{cp}.matchAttribute"))
    configs = devices.get("config") or []
    if len(configs) > 32:
        return [*errs, st.too_many(f"{base}.config", len(configs), 32)]
    for i, config in enumerate(configs):
        errs += _refs(config.get("requests") or [], f"{base}.config[{i}].requests", names)
        errs += _opaque(config, f"{base}.config[{i}]", (*rawbase, "config", i), raw, stored)
    return errs


def immutable_spec(kind: str, new: JsonDict, old: JsonDict, raw_new: RawMap, raw_old: RawMap,
                   ordered_meta: Any) -> Errs:
    if semantic_equal(new.get("spec"), old.get("spec")) and raw_equal(raw_new, raw_old, ("spec",)):
        return []
    value = render_go(kind, new.get("spec"), path=("spec",), raw=raw_new,
                      json_tagged=lambda m: go_json(ordered_meta(m)))
    return [st.invalid("spec", value, st.IMMUTABLE_MSG, rendered=True)]


def _shared_id(entry: JsonDict) -> str:
    return go_json({"Driver": entry.get("driver", ""), "Pool": entry.get("pool", ""),
                    "Device": entry.get("device", ""), "ShareID": entry.get("shareID") or ""})


def claim_status(new: JsonDict, old: JsonDict, raw_new: RawMap, raw_old: RawMap) -> Errs:
    status, old_status = new.get("status") or {}, old.get("status") or {}
    names = _request_names((new.get("spec") or {}).get("devices") or {})
    errs: Errs = []
    reserved = status.get("reservedFor") or []
    if len(reserved) > 256:
        errs.append(st.too_many("status.reservedFor", len(reserved), 256))
    else:
        for i, ref in enumerate(reserved):
            errs += [st.required(f"status.reservedFor[{i}].{k}")
                     for k in ("resource", "name", "uid") if not ref.get(k)]
        errs += duplicates([r.get("uid", "") for r in reserved], "status.reservedFor")
    allocation = status.get("allocation")
    results = ((allocation or {}).get("devices") or {}).get("results") or []
    allocated = {_shared_id(r) for r in results}
    seen: set[str] = set()
    for i, device in enumerate(status.get("devices") or []):
        dp = f"status.devices[{i}]"
        errs += driver_name(device.get("driver") or "", f"{dp}.driver")
        errs += pool_name(device.get("pool") or "", f"{dp}.pool")
        errs += _label(device.get("device") or "", f"{dp}.device")
        key = _shared_id(device)
        if key not in allocated:
            errs.append(st.invalid(dp, key, "must be an allocated device in the claim",
                                   rendered=True))
        if len(conditions := device.get("conditions") or []) > 8:
            errs.append(st.too_many(f"{dp}.conditions", len(conditions), 8))
        if device.get("data") is not None:
            errs += raw_extension(raw_new.get(("status", "devices", i, "data")), device["data"],
                                  True, f"{dp}.data", stored=False)
        errs += _network(device.get("networkData") or {}, f"{dp}.networkData")
        if key in seen:
            errs.append(st.duplicate(dp, key, rendered=True))
        seen.add(key)
    if reserved and allocation is None:
        errs.append(st.forbidden("status.reservedFor",
                                 "may not be specified when `allocated` is not set"))
    elif reserved and (new.get("metadata") or {}).get("deletionTimestamp"):
        before = {r.get("uid") for r in old_status.get("reservedFor") or []}
        if any(r.get("uid") not in before for r in reserved):
            errs.append(st.forbidden("status.reservedFor", "new entries may not be added while "
                                     "`deallocationRequested` or `deletionTimestamp` are set"))
    old_allocation = old_status.get("allocation")
    if old_allocation is not None and allocation is not None:
        if not (semantic_equal(allocation, old_allocation)
                and raw_equal(raw_new, raw_old, ("status", "allocation"))):
            value = render_go("AllocationResult", allocation, path=("status", "allocation"),
                              raw=raw_new)
            errs.append(st.invalid("status.allocation", value, st.IMMUTABLE_MSG, rendered=True))
    elif allocation is not None:
        errs += _allocation(allocation, names, raw_new)
    return errs


def _network(data: JsonDict, path: str) -> Errs:
    errs: Errs = []
    if blen(data.get("interfaceName") or "") > 256:
        errs.append(st.too_long(f"{path}.interfaceName", 256))
    if blen(data.get("hardwareAddress") or "") > 128:
        errs.append(st.too_long(f"{path}.hardwareAddress", 128))
    ips = data.get("ips") or []
    if len(ips) > 16:
        return [*errs, st.too_many(f"{path}.ips", len(ips), 16)]
    for i, ip in enumerate(ips):
        try:
            parsed = ipaddress.ip_interface(ip)
        except ValueError:
            errs.append(st.invalid(f"{path}.ips[{i}]", ip, _CIDR_MSG))
            continue
        if "/" not in ip:
            errs.append(st.invalid(f"{path}.ips[{i}]", ip, _CIDR_MSG))
        elif str(parsed) != ip:
            errs.append(st.invalid(f"{path}.ips[{i}]", ip,
                                   f'must be in canonical form ("{parsed}")'))
    return errs + duplicates(ips, f"{path}.ips")


def _allocation(allocation: JsonDict, names: Mapping[str, set[str] | None], raw: RawMap) -> Errs:
    devices = allocation.get("devices") or {}
    base = "status.allocation.devices"
    errs: Errs = []
    results = devices.get("results") or []
    if len(results) > 32:
        errs.append(st.too_many(f"{base}.results", len(results), 32))
        results = []
    for i, result in enumerate(results):
        rp = f"{base}.results[{i}]"
        errs += _request_ref(result.get("request") or "", f"{rp}.request", names)
        errs += driver_name(result.get("driver") or "", f"{rp}.driver")
        errs += pool_name(result.get("pool") or "", f"{rp}.pool")
        errs += _label(result.get("device") or "", f"{rp}.device")
    configs = devices.get("config") or []
    if len(configs) > 64:
        return [*errs, st.too_many(f"{base}.config", len(configs), 64)]
    for i, config in enumerate(configs):
        cp = f"{base}.config[{i}]"
        source = config.get("source") or ""
        if not source:
            errs.append(st.required(f"{cp}.source"))
        elif source not in ("FromClaim", "FromClass"):
            errs.append(st.not_supported(f"{cp}.source", source, ["FromClaim", "FromClass"]))
        errs += _refs(config.get("requests") or [], f"{cp}.requests", names)
        errs += _opaque(config, cp, ("status", "allocation", "devices", "config", i), raw, False)
    return errs


def device_class(spec: JsonDict, old: JsonDict | None, raw: RawMap) -> Errs:
    errs = _selectors(spec.get("selectors") or [], "spec.selectors")
    configs = spec.get("config") or []
    if len(configs) > 32:
        return [*errs, st.too_many("spec.config", len(configs), 32)]
    stored = old is not None and semantic_equal(configs, old.get("config"))
    for i, config in enumerate(configs):
        errs += _opaque(config, f"spec.config[{i}]", ("spec", "config", i), raw, stored)
    return errs
