"""What the fake API server knows about each resource, and how it reads selectors.

One ``ResourceInfo`` per served resource holds the facts the request path needs: group,
kind, scope, subresources, whether ``metadata.generation`` is kept, which field labels a
``fieldSelector`` may use, whether DELETE answers with the object, and the *zero shape*:
the fields Go always prints even when empty (``"status":{}``, a slice's
``"pool":{"name":"","generation":0,"resourceSliceCount":0}``). The zero shape is both
what a BOOKMARK event carries (exactly as in the captured watch streams) and what is
filled into stored objects, so responses look like the real server's.

Selectors follow ``k8s.io/apimachinery/pkg/fields`` and ``.../labels``: ``=``, ``==``,
``!=`` for fields; additionally ``in``, ``notin``, ``key`` and ``!key`` for labels.
Discovery lives here too: ``resource.k8s.io`` exactly as kube-apiserver v1.35.6 served
it (rewritten when other versions are asked for), core and coordination built alike.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dra_framework.testing._fakeapi_order import ROOTS, order
from dra_framework.testing._fakeapi_status import bad_request

JsonDict = dict[str, Any]
Predicate = Callable[[JsonDict], bool]

_NODE_INFO = {k: "" for k in ("machineID", "systemUUID", "bootID", "kernelVersion", "osImage",
                              "containerRuntimeVersion", "kubeletVersion", "kubeProxyVersion",
                              "operatingSystem", "architecture")}
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class ResourceInfo:
    """Static facts about one resource."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    zero: JsonDict
    status_subresource: bool = False
    generation: bool = False
    return_deleted: bool = True
    field_labels: frozenset[str] = frozenset()
    short_names: tuple[str, ...] = ()
    storage_hash: str = ""

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


RESOURCE_GROUP = "resource.k8s.io"
RESOURCES: dict[str, ResourceInfo] = {info.plural: info for info in (
    ResourceInfo(RESOURCE_GROUP, "v1", "deviceclasses", "deviceclass", "DeviceClass", False,
                 {"spec": {}}, generation=True, storage_hash="Yk2PTc1Ybxk="),
    ResourceInfo(RESOURCE_GROUP, "v1", "resourceclaims", "resourceclaim", "ResourceClaim", True,
                 {"spec": {"devices": {"requests": None}}, "status": {}},
                 status_subresource=True, storage_hash="wgAZaHcZxUg="),
    ResourceInfo(RESOURCE_GROUP, "v1", "resourceclaimtemplates", "resourceclaimtemplate",
                 "ResourceClaimTemplate", True,
                 {"spec": {"metadata": {}, "spec": {"devices": {"requests": None}}}},
                 storage_hash="TuzjC49aUfM="),
    ResourceInfo(RESOURCE_GROUP, "v1", "resourceslices", "resourceslice", "ResourceSlice", False,
                 {"spec": {"driver": "", "pool": {"name": "", "generation": 0,
                                                  "resourceSliceCount": 0}}},
                 generation=True, field_labels=frozenset({"spec.nodeName", "spec.driver"}),
                 storage_hash="KsC072WgaEY="),
    ResourceInfo("", "v1", "nodes", "node", "Node", False,
                 {"spec": {}, "status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
                                         "nodeInfo": _NODE_INFO}},
                 status_subresource=True, return_deleted=False,
                 field_labels=frozenset({"spec.unschedulable"}), short_names=("no",),
                 storage_hash="XwShjMxG9Fs="),
    ResourceInfo("", "v1", "pods", "pod", "Pod", True,
                 {"spec": {"containers": None}, "status": {}},
                 status_subresource=True, generation=True,
                 field_labels=frozenset({"spec.nodeName", "spec.restartPolicy",
                                         "spec.schedulerName", "spec.serviceAccountName",
                                         "spec.hostNetwork", "status.phase", "status.podIP",
                                         "status.nominatedNodeName"}),
                 short_names=("po",), storage_hash="xPOwRZ+Yhw8="),
    ResourceInfo("coordination.k8s.io", "v1", "leases", "lease", "Lease", True, {"spec": {}},
                 return_deleted=False, storage_hash="gqkMMb/YqFM="),
)}
_ALIASES = {alias.lower(): info for info in RESOURCES.values()
            for alias in (info.plural, info.singular, info.kind,
                          f"{info.plural}.{info.group}" if info.group else info.plural)}


def lookup(name: str) -> ResourceInfo:
    """Find a resource by plural, singular, kind or ``plural.group`` (any case)."""
    try:
        return _ALIASES[name.lower()]
    except KeyError:
        raise KeyError(f"the fake API server does not serve {name!r}") from None


def for_kind(kind: str) -> ResourceInfo:
    return lookup(kind)


def api_resource_list(group_version: str, infos: list[ResourceInfo]) -> JsonDict:
    """An APIResourceList for the core and coordination groups."""
    resources: list[JsonDict] = []
    for info in infos:
        entry: JsonDict = {"name": info.plural, "singularName": info.singular,
                           "namespaced": info.namespaced, "kind": info.kind,
                           "verbs": list(_VERBS)}
        if info.short_names:
            entry["shortNames"] = list(info.short_names)
        if info.storage_hash:
            entry["storageVersionHash"] = info.storage_hash
        resources.append(entry)
        if info.status_subresource:
            resources.append({"name": f"{info.plural}/status", "singularName": "",
                              "namespaced": info.namespaced, "kind": info.kind,
                              "verbs": ["get", "patch", "update"]})
        if info.plural == "pods":
            resources.append({"name": "pods/binding", "singularName": "", "namespaced": True,
                              "kind": "Binding", "verbs": ["create"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": resources}


def discovery(parts: list[str], *, versions: tuple[str, ...], git_version: str
              ) -> JsonDict | None:
    """Discovery documents and ``/version``, or None when ``parts`` is no such path."""
    group = {"name": RESOURCE_GROUP,
             "versions": [{"groupVersion": f"{RESOURCE_GROUP}/{v}", "version": v}
                          for v in versions],
             "preferredVersion": {"groupVersion": f"{RESOURCE_GROUP}/{versions[0]}",
                                  "version": versions[0]}}
    coordination = {"name": "coordination.k8s.io",
                    "versions": [{"groupVersion": "coordination.k8s.io/v1", "version": "v1"}],
                    "preferredVersion": {"groupVersion": "coordination.k8s.io/v1",
                                         "version": "v1"}}
    if parts == ["version"]:
        minor = git_version.lstrip("v").split(".")[1]
        return {"major": "1", "minor": minor, "emulationMajor": "1", "emulationMinor": minor,
                "minCompatibilityMajor": "1", "minCompatibilityMinor": str(int(minor) - 1),
                "gitVersion": git_version, "gitCommit": "0" * 40,
                "gitTreeState": "clean", "buildDate": "2026-11-20T00:00:00Z",
                "goVersion": "go1.25.3", "compiler": "gc", "platform": "linux/amd64"}
    if parts == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}
    if parts == ["api", "v1"]:
        return api_resource_list("v1", [RESOURCES["nodes"], RESOURCES["pods"]])
    if parts == ["apis"]:
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [coordination, group]}
    if parts == ["apis", RESOURCE_GROUP]:
        return {"kind": "APIGroup", "apiVersion": "v1", **group}
    if parts == ["apis", "coordination.k8s.io"]:
        return {"kind": "APIGroup", "apiVersion": "v1", **coordination}
    if parts == ["apis", "coordination.k8s.io", "v1"]:
        return api_resource_list("coordination.k8s.io/v1", [RESOURCES["leases"]])
    if len(parts) == 3 and parts[:2] == ["apis", RESOURCE_GROUP] and parts[2] in versions:
        resources: list[JsonDict] = []
        for info in RESOURCES.values():
            if info.group != RESOURCE_GROUP:
                continue
            resources.append({"name": info.plural, "singularName": info.singular,
                              "namespaced": info.namespaced, "kind": info.kind,
                              "verbs": list(_VERBS), "storageVersionHash": info.storage_hash})
            if info.status_subresource:
                resources.append({"name": f"{info.plural}/status", "singularName": "",
                                  "namespaced": info.namespaced, "kind": info.kind,
                                  "verbs": ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{RESOURCE_GROUP}/{parts[2]}", "resources": resources}
    return None


# --- selectors -------------------------------------------------------------------------
def _field_value(obj: JsonDict, label: str) -> str:
    node: Any = obj
    for part in label.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def field_selector(info: ResourceInfo, text: str) -> Predicate:
    """Compile a ``fieldSelector`` (raises 400 for unsupported labels)."""
    terms: list[tuple[str, bool, str]] = []
    for term in _split_unescaped(text, ","):
        if not term:
            continue
        m = re.fullmatch(r"(.*?)(!=|==|=)(.*)", term, re.DOTALL)
        if m is None:
            raise bad_request(f'invalid selector: \'{text}\'; can\'t understand \'{term}\'')
        label, op, value = m.groups()
        allowed = {"metadata.name", "metadata.namespace"} | info.field_labels
        if label not in allowed:
            raise bad_request(f"field label not supported: {label}")
        value = re.sub(r"\\(.)", r"\1", value)
        terms.append((label, op == "!=", value))
    return lambda obj: all((_field_value(obj, label) == value) != negate
                           for label, negate, value in terms)


_LABEL_TERM = re.compile(
    r"\s*(?P<not>!)?\s*(?P<key>[A-Za-z0-9./_-]+)\s*"
    r"(?:(?P<op>==|!=|=|>|<|\s+in\s+|\s+notin\s+)\s*"
    r"(?:\((?P<set>[^)]*)\)|(?P<value>[A-Za-z0-9._-]*)))?\s*(?:,|$)")


def label_selector(text: str) -> Predicate:
    """Compile a ``labelSelector``."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _LABEL_TERM.match(text, pos)
        if m is None or m.end() == pos:
            raise bad_request(f"unable to parse requirement: found '{text[pos:]}'")
        pos = m.end()
        key, op = m.group("key"), (m.group("op") or "").strip()
        values = ({v.strip() for v in m.group("set").split(",")} if m.group("set") is not None
                  else {m.group("value") or ""})
        checks.append(_label_check(key, op, values, negate=bool(m.group("not"))))
    return lambda obj: all(check(obj.get("metadata", {}).get("labels") or {}) for check in checks)


def _label_check(key: str, op: str, values: set[str], *,
                 negate: bool) -> Callable[[dict[str, str]], bool]:
    if not op:
        return (lambda labels: key not in labels) if negate else (lambda labels: key in labels)
    if op in ("=", "==", "in"):
        return lambda labels: labels.get(key) in values
    if op in ("!=", "notin"):
        return lambda labels: labels.get(key) not in values
    try:
        bound = int(next(iter(values)))
    except ValueError:
        raise bad_request(f"invalid label selector: {op} needs an integer") from None
    if op == ">":
        return lambda labels: key in labels and labels[key].isdigit() and int(labels[key]) > bound
    return lambda labels: key in labels and labels[key].isdigit() and int(labels[key]) < bound


# --- object shape ----------------------------------------------------------------------
_META_ORDER = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion",
               "generation", "creationTimestamp", "deletionTimestamp",
               "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
               "finalizers", "managedFields")
_MAPS = ("labels", "annotations")


def order_metadata(meta: JsonDict) -> JsonDict:
    """ObjectMeta in Go field order, empty values dropped, maps sorted."""
    out: JsonDict = {}
    for key in _META_ORDER:
        value = meta.get(key)
        if value in (None, "", [], {}) or key == "selfLink":
            continue
        out[key] = dict(sorted(value.items())) if key in _MAPS else value
    return out


def fill_zero(obj: JsonDict, zero: JsonDict) -> None:
    for key, value in zero.items():
        if key not in obj:
            obj[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(obj[key], dict):
            fill_zero(obj[key], value)


def shape(info: ResourceInfo, obj: JsonDict) -> JsonDict:
    """Top-level key order ``metadata, spec, status, ...`` without kind/apiVersion."""
    out: JsonDict = {"metadata": order_metadata(obj.get("metadata") or {})}
    body = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion", "metadata")}
    fill_zero(body, info.zero)
    roots = ROOTS.get(info.plural, {})
    for key in ("spec", "status"):
        if key in body:
            out[key] = order(body.pop(key), roots.get(key))
    out.update(body)
    return out

