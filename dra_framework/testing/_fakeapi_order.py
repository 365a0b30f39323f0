"""Key order of the objects the fake API server prints.

kube-apiserver decodes every request into Go structs, so what it sends back is in struct
field order whatever order the client used (client 37 even sends fields alphabetically),
and map keys (attributes, capacity, labels...) come out sorted. The tables below give the
v1 field order of the resource.k8s.io types and coordination Leases; ``order`` rebuilds an
object accordingly. Keys the tables do not name keep their place after the known ones,
and RawExtension contents (opaque parameters, device status data) are left untouched.
"""

from __future__ import annotations

from typing import Any

_S = dict[str, str | None]
_POLICY: _S = {"default": None, "validValues": None, "validRange": "Range"}
_TYPES: dict[str, _S] = {
    "ResourceSliceSpec": {"driver": None, "pool": "Pool", "nodeName": None,
                          "nodeSelector": "NodeSelector", "allNodes": None,
                          "devices": "[]Device", "perDeviceNodeSelection": None,
                          "sharedCounters": "[]CounterSet"},
    "Pool": {"name": None, "generation": None, "resourceSliceCount": None},
    "Device": {"name": None, "attributes": "{}Attribute", "capacity": "{}Capacity",
               "consumesCounters": "[]CounterConsumption", "nodeName": None,
               "nodeSelector": "NodeSelector", "allNodes": None, "taints": "[]Taint",
               "bindsToNode": None, "bindingConditions": None,
               "bindingFailureConditions": None, "allowMultipleAllocations": None},
    "Attribute": {"int": None, "bool": None, "string": None, "version": None},
    "Capacity": {"value": None, "requestPolicy": "Policy"},
    "Policy": _POLICY,
    "Range": {"min": None, "max": None, "step": None},
    "CounterSet": {"name": None, "counters": "{}Counter"},
    "CounterConsumption": {"counterSet": None, "counters": "{}Counter"},
    "Counter": {"value": None},
    "Taint": {"key": None, "value": None, "effect": None, "timeAdded": None},
    "NodeSelector": {"nodeSelectorTerms": "[]Term"},
    "Term": {"matchExpressions": "[]Requirement", "matchFields": "[]Requirement"},
    "Requirement": {"key": None, "operator": None, "values": None},
    "DeviceClassSpec": {"selectors": "[]Selector", "config": "[]Config",
                        "extendedResourceName": None},
    "Selector": {"cel": "CEL"},
    "CEL": {"expression": None},
    "Config": {"requests": None, "opaque": "Opaque"},
    "Opaque": {"driver": None, "parameters": "raw"},
    "ClaimSpec": {"devices": "DeviceClaim"},
    "DeviceClaim": {"requests": "[]Request", "constraints": "[]Constraint",
                    "config": "[]Config"},
    "Request": {"name": None, "exactly": "Exact", "firstAvailable": "[]SubRequest"},
    "Exact": {"deviceClassName": None, "selectors": "[]Selector", "allocationMode": None,
              "count": None, "adminAccess": None, "tolerations": "[]Toleration",
              "capacity": "Requirements"},
    "SubRequest": {"name": None, "deviceClassName": None, "selectors": "[]Selector",
                   "allocationMode": None, "count": None, "tolerations": "[]Toleration",
                   "capacity": "Requirements"},
    "Requirements": {"requests": "{}"},
    "Toleration": {"key": None, "operator": None, "value": None, "effect": None,
                   "tolerationSeconds": None},
    "Constraint": {"requests": None, "matchAttribute": None, "distinctAttribute": None},
    "ClaimStatus": {"allocation": "Allocation", "reservedFor": "[]Consumer",
                    "devices": "[]DeviceStatus"},
    "Allocation": {"devices": "DeviceAllocation", "nodeSelector": "NodeSelector",
                   "allocationTimestamp": None},
    "DeviceAllocation": {"results": "[]Result", "config": "[]AllocConfig"},
    "Result": {"request": None, "driver": None, "pool": None, "device": None,
               "adminAccess": None, "tolerations": "[]Toleration", "bindingConditions": None,
               "bindingFailureConditions": None, "shareID": None, "consumedCapacity": "{}"},
    "AllocConfig": {"source": None, "requests": None, "opaque": "Opaque"},
    "Consumer": {"apiGroup": None, "resource": None, "name": None, "uid": None},
    "DeviceStatus": {"driver": None, "pool": None, "device": None, "shareID": None,
                     "conditions": "[]Condition", "data": "raw", "networkData": "Network"},
    "Condition": {"type": None, "status": None, "observedGeneration": None,
                  "lastTransitionTime": None, "reason": None, "message": None},
    "Network": {"interfaceName": None, "ips": None, "hardwareAddress": None},
    "TemplateSpec": {"metadata": None, "spec": "ClaimSpec"},
    "LeaseSpec": {"holderIdentity": None, "leaseDurationSeconds": None, "acquireTime": None,
                  "renewTime": None, "leaseTransitions": None, "strategy": None,
                  "preferredHolder": None},
}
ROOTS: dict[str, _S] = {
    "resourceslices": {"spec": "ResourceSliceSpec"},
    "deviceclasses": {"spec": "DeviceClassSpec"},
    "resourceclaims": {"spec": "ClaimSpec", "status": "ClaimStatus"},
    "resourceclaimtemplates": {"spec": "TemplateSpec"},
    "leases": {"spec": "LeaseSpec"},
}


def order(value: Any, type_name: str | None) -> Any:
    """``value`` rebuilt in the key order of ``type_name`` (see the tables above)."""
    if type_name is None or type_name == "raw":
        return value
    if type_name.startswith("[]"):
        return [order(v, type_name[2:]) for v in value] if isinstance(value, list) else value
    if type_name.startswith("{}"):
        if not isinstance(value, dict):
            return value
        inner = type_name[2:] or None
        return {k: order(value[k], inner) for k in sorted(value)}
    if not isinstance(value, dict):
        return value
    fields = _TYPES[type_name]
    out = {k: order(value[k], fields[k]) for k in fields if k in value}
    out.update((k, v) for k, v in value.items() if k not in fields)
    return out
