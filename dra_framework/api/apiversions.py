"""Which ``resource.k8s.io`` version the cluster serves, and conversion at the edge.

The rest of the framework sees one model: ``resource.k8s.io/v1`` objects as plain dicts.
``ResourceApi`` names the version actually used and converts objects between it and v1 when
they cross the API boundary (``to_v1`` on what is read, ``from_v1`` on what is written).
``discover`` asks the server which versions it serves and picks the newest one the framework
knows: v1 (Kubernetes 1.34+), else v1beta2 (1.33), else v1beta1 (1.32).

What differs between the versions (``k8s.io/api`` ``resource/v1beta1`` and the apiserver's
``pkg/apis/resource/v1beta1/conversion.go``), and so what is converted:

* v1beta2 has the v1 shape: only ``apiVersion`` changes.
* v1beta1 ``ResourceSlice``: each device is ``{name, basic: {...}}``; every other device field
  (attributes, capacity, consumesCounters, nodeName, nodeSelector, allNodes, taints,
  bindsToNode, bindingConditions, bindingFailureConditions, allowMultipleAllocations, and any
  later addition) sits under ``basic``.  Capacities are ``{value, requestPolicy}`` in both.
* v1beta1 ``ResourceClaim`` / ``ResourceClaimTemplate`` spec: a request carries the fields of
  v1's ``exactly`` inline (deviceClassName, selectors, allocationMode, count, adminAccess,
  tolerations, capacity) beside ``firstAvailable``.  Like the apiserver, reading makes
  ``exactly`` only when one of them is set (``""`` and ``0`` count as unset).
* Claim status (allocation results, reservedFor, devices), DeviceClass and everything else
  have the same shape in all three versions.

Lists are converted item by item (their items carry no kind), watch events through their
``object``.  Conversion is tolerant: a device that has no ``basic`` or a request that already
has ``exactly`` is left alone, so v1-shaped objects served under a beta version pass through.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ..errors import SetupError
from .jsondecode import clone
from .rest import ApiError, Backoff, KubeApi
from .rest import path as rest_path

log = logging.getLogger(__name__)

GROUP = "resource.k8s.io"
SUPPORTED_VERSIONS = ("v1", "v1beta2", "v1beta1")
"""The versions the framework can use, most preferred first."""

DRA_OFF_HELP = (
    "Kubernetes 1.34 and later serve resource.k8s.io/v1 with DRA on by default. "
    "On 1.32 and 1.33, turn DRA on with the feature gate DynamicResourceAllocation=true "
    "on kube-apiserver, kube-controller-manager, kube-scheduler and kubelet, and "
    "--runtime-config=resource.k8s.io/v1beta1=true on kube-apiserver "
    "(or resource.k8s.io/v1beta2=true on 1.33)."
)

JsonDict = dict[str, Any]
_Fix = Callable[[JsonDict], None]

# The fields of a DeviceRequest in both versions; v1beta1 keeps every other one inline where v1
# has it under ``exactly``.
_REQUEST_OWN = ("name", "firstAvailable")


@attrs.frozen
class ResourceApi:
    """The served ``resource.k8s.io`` version and its conversions to and from v1."""

    version: str = "v1"

    @property
    def group_version(self) -> str:
        return f"{GROUP}/{self.version}"

    def path(self, resource: str, *, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        return rest_path(group_version=self.group_version, resource=resource,
                         namespace=namespace, name=name, subresource=subresource)

    def to_v1(self, obj: dict[str, Any], *, kind: str | None = None) -> dict[str, Any]:
        """An object, a list or a watch event as served → its v1 form.

        A new object, except on v1, where ``obj`` itself comes back.  ``kind`` names the
        object's kind when it carries none (an item of a list).
        """
        if self.version == "v1":
            return obj
        return _convert(obj, kind, f"{GROUP}/v1", _TO_V1.get(self.version, {}))

    def from_v1(self, obj: dict[str, Any], *, kind: str | None = None) -> dict[str, Any]:
        """A v1 object (or list) → the form the served version expects (new unless v1)."""
        if self.version == "v1":
            return obj
        return _convert(obj, kind, self.group_version, _FROM_V1.get(self.version, {}))


V1 = ResourceApi("v1")


# --- discovery -------------------------------------------------------------------------
def served_versions(api: KubeApi) -> tuple[str, ...]:
    """The versions of ``resource.k8s.io`` the server serves, preferred first.

    Empty when the group is not served at all.  Raises ``SetupError`` when the server cannot
    be reached or refuses to answer.
    """
    try:
        group = api.get(f"/apis/{GROUP}")
    except ApiError as exc:
        if exc.code == 404:
            return ()
        host = api.api_client.configuration.host
        if exc.code == 0:
            raise SetupError(f"cannot reach the Kubernetes API server at {host}: "
                             f"{exc.message}") from exc
        raise SetupError(f"cannot read the {GROUP} API group from {host}: {exc}") from exc
    versions = group.get("versions") or []
    return tuple(str(v.get("version", "")) for v in versions if isinstance(v, dict))


def choose(served: Sequence[str]) -> ResourceApi:
    """The most preferred supported version among ``served``; ``SetupError`` if none."""
    for version in SUPPORTED_VERSIONS:
        if version in served:
            return ResourceApi(version)
    raise SetupError(dra_off_message(served))


def discover(api: KubeApi) -> ResourceApi:
    """Ask the server which ``resource.k8s.io`` versions it serves and pick one."""
    return choose(served_versions(api))


def dra_off_message(served: Sequence[str]) -> str:
    """Why the framework cannot run against a server serving ``served``, and what to do."""
    if not served:
        what = f"the API server does not serve {GROUP}: Dynamic Resource Allocation is off"
    else:
        what = (f"the API server serves {GROUP} only at {', '.join(served)}; this framework "
                f"needs one of {', '.join(SUPPORTED_VERSIONS)} "
                "(Kubernetes 1.32 or later with DRA on)")
    return f"{what}. {DRA_OFF_HELP}"


# --- conversion ------------------------------------------------------------------------
def _convert(obj: JsonDict, kind: str | None, api_version: str,
             fixes: dict[str, _Fix]) -> JsonDict:
    if "kind" not in obj and "type" in obj and isinstance(obj.get("object"), dict):
        event = dict(obj)  # a watch event: {"type": ..., "object": {...}}
        event["object"] = _convert(obj["object"], kind, api_version, fixes)
        return event
    out: JsonDict = clone(obj)  # opaque parameters may nest deeper than recursion allows
    _convert_in_place(out, kind or str(out.get("kind") or ""), api_version, fixes)
    return out


def _convert_in_place(obj: JsonDict, kind: str, api_version: str,
                      fixes: dict[str, _Fix]) -> None:
    if str(obj.get("apiVersion", "")).startswith(f"{GROUP}/"):
        obj["apiVersion"] = api_version
    if kind.endswith("List") and isinstance(obj.get("items"), list):
        for item in obj["items"]:
            if isinstance(item, dict):
                _convert_in_place(item, str(item.get("kind") or kind[:-4]), api_version, fixes)
        return
    fix = fixes.get(kind)
    if fix is not None:
        fix(obj)


def _at(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _slice_v1beta1_to_v1(obj: JsonDict) -> None:
    devices = _at(obj, "spec", "devices")
    for i, device in enumerate(devices if isinstance(devices, list) else []):
        if isinstance(device, dict) and isinstance(device.get("basic"), dict):
            flat = {k: v for k, v in device.items() if k != "basic"}
            flat.update(device["basic"])
            devices[i] = flat


def _slice_v1_to_v1beta1(obj: JsonDict) -> None:
    devices = _at(obj, "spec", "devices")
    for i, device in enumerate(devices if isinstance(devices, list) else []):
        if isinstance(device, dict) and "basic" not in device:
            named = {"name": device["name"]} if "name" in device else {}
            devices[i] = {**named, "basic": {k: v for k, v in device.items() if k != "name"}}


def _is_set(key: str, value: Any) -> bool:
    unset: tuple[Any, ...] = {"deviceClassName": ("",), "allocationMode": ("",),
                              "count": (0,)}.get(key, ())
    return value is not None and value not in unset


def _request_v1beta1_to_v1(request: JsonDict) -> JsonDict:
    if "exactly" in request:
        return request
    inline = {k: v for k, v in request.items() if k not in _REQUEST_OWN and v is not None}
    out = {k: request[k] for k in ("name",) if k in request}
    if any(_is_set(k, v) for k, v in inline.items()):
        out["exactly"] = inline
    if "firstAvailable" in request:
        out["firstAvailable"] = request["firstAvailable"]
    return out


def _request_v1_to_v1beta1(request: JsonDict) -> JsonDict:
    if "exactly" not in request:
        return request
    out = {k: request[k] for k in ("name",) if k in request}
    exactly = request["exactly"]
    if isinstance(exactly, dict):
        out.update(exactly)
    out.update((k, v) for k, v in request.items() if k not in ("name", "exactly"))
    return out


def _requests(convert: Callable[[JsonDict], JsonDict], *path: str) -> _Fix:
    def fix(obj: JsonDict) -> None:
        requests = _at(obj, *path, "devices", "requests")
        if isinstance(requests, list):
            requests[:] = [convert(r) if isinstance(r, dict) else r for r in requests]
    return fix


_TO_V1: dict[str, dict[str, _Fix]] = {
    "v1beta1": {
        "ResourceSlice": _slice_v1beta1_to_v1,
        "ResourceClaim": _requests(_request_v1beta1_to_v1, "spec"),
        "ResourceClaimTemplate": _requests(_request_v1beta1_to_v1, "spec", "spec"),
    },
}
_FROM_V1: dict[str, dict[str, _Fix]] = {
    "v1beta1": {
        "ResourceSlice": _slice_v1_to_v1beta1,
        "ResourceClaim": _requests(_request_v1_to_v1beta1, "spec"),
        "ResourceClaimTemplate": _requests(_request_v1_to_v1beta1, "spec", "spec"),
    },
}


def discover_patiently(api: KubeApi, *, stop: threading.Event | None = None,
                       backoff: Backoff | None = None) -> ResourceApi:
    """``discover``, waiting out an unreachable or failing API server (with backoff, until it
    answers or ``stop`` is set); a definite answer — DRA off, forbidden — is raised at once."""
    backoff = backoff or Backoff(initial=0.5, maximum=30.0)
    stop = stop or threading.Event()
    while True:
        try:
            return discover(api)
        except SetupError as exc:
            cause = exc.__cause__
            if not isinstance(cause, ApiError) or not cause.transient or stop.is_set():
                raise
            delay = backoff.next()
            log.warning(f"{exc}; retrying in {delay:.1f}s")
            if stop.wait(delay):
                raise
