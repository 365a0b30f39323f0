"""Builders of ResourceClaim and Pod objects shaped like the ones a real kube-apiserver returns.

``allocated_claim`` produces what ``GET …/resourceclaims/NAME`` returns after the scheduler
allocated it (compare ``resourceclaim-allocated.json`` of a v1.35 capture): requests, this
allocation's results, class and claim opaque config, node selector and ``reservedFor``.  Seed it
into ``FakeApiServer`` and prepare it through ``KubeletClient``.

``bound_pod`` is the pod that uses such claims, bound to its node (compare
``pod-with-claims.json``): claims it names directly and claims made from templates, named in
``status.resourceClaimStatuses`` as the resource claim controller writes them.  Its default name
and UID are those ``allocated_claim`` reserves the claim for, so the two fit together; the
default claim source of the plugin reads the claims of a node's pods ahead of the kubelet.
"""

from __future__ import annotations

import uuid as _uuid
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

POD = ("pod-1", "d0f16d89-9cc7-413b-a15f-6bac27ceaa09")
"""The name and UID of the pod ``allocated_claim`` reserves a claim for by default."""


@attrs.frozen
class Result:
    """One allocation result: ``request`` may be ``req/sub``."""

    request: str
    device: str
    pool: str = "node-1"
    driver: str = "gpu.example.com"
    admin_access: bool = False
    share_id: str | None = None


@attrs.frozen
class Config:
    """One opaque config entry of the allocation."""

    parameters: Mapping[str, Any]
    source: str = "FromClaim"
    requests: tuple[str, ...] = ()
    driver: str = "gpu.example.com"


def allocated_claim(
    *,
    name: str,
    results: Sequence[Result],
    namespace: str = "default",
    uid: str | None = None,
    configs: Sequence[Config] = (),
    node_name: str = "node-1",
    device_class: str = "gpu.example.com",
    pod: tuple[str, str] = POD,
) -> dict[str, Any]:
    """A v1 ResourceClaim dict, allocated and reserved for ``pod``."""
    requests = sorted({r.request.split("/", 1)[0] for r in results})
    result_json: list[dict[str, Any]] = []
    for r in results:
        item: dict[str, Any] = {"request": r.request, "driver": r.driver, "pool": r.pool,
                                "device": r.device}
        if r.admin_access:
            item["adminAccess"] = True
        if r.share_id:
            item["shareID"] = r.share_id
        result_json.append(item)
    config_json = []
    for c in sorted(configs, key=lambda c: c.source != "FromClass"):
        entry: dict[str, Any] = {"source": c.source}
        if c.requests:
            entry["requests"] = list(c.requests)
        entry["opaque"] = {"driver": c.driver, "parameters": dict(c.parameters)}
        config_json.append(entry)
    allocation: dict[str, Any] = {"devices": {"results": result_json}}
    if config_json:
        allocation["devices"]["config"] = config_json
    allocation["nodeSelector"] = {"nodeSelectorTerms": [{"matchFields": [
        {"key": "metadata.name", "operator": "In", "values": [node_name]}]}]}
    return {
        "kind": "ResourceClaim",
        "apiVersion": "resource.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or str(_uuid.uuid4()),
            "finalizers": ["resource.kubernetes.io/delete-protection"],
        },
        "spec": {"devices": {"requests": [
            {"name": req, "exactly": {"deviceClassName": device_class,
                                      "allocationMode": "ExactCount", "count": 1}}
            for req in requests
        ]}},
        "status": {
            "allocation": allocation,
            "reservedFor": [{"resource": "pods", "name": pod[0], "uid": pod[1]}],
        },
    }


def unallocated_claim(*, name: str, namespace: str = "default",
                      uid: str | None = None) -> dict[str, Any]:
    """A v1 ResourceClaim as created, before the scheduler allocated it (``status: {}``)."""
    claim = allocated_claim(name=name, namespace=namespace, uid=uid,
                            results=[Result(request="gpu", device="gpu-0")])
    claim["status"] = {}
    return claim


def bound_pod(
    *,
    name: str = POD[0],
    uid: str = POD[1],
    claims: Sequence[str] = (),
    from_templates: Mapping[str, str] | None = None,
    namespace: str = "default",
    node_name: str = "node-1",
) -> dict[str, Any]:
    """A v1 Pod scheduled to ``node_name`` whose container uses ``claims`` (ResourceClaims it
    names in ``spec.resourceClaims``) and ``from_templates`` (pod claim name → name of the
    claim made from its template, in ``status.resourceClaimStatuses``)."""
    templates = dict(from_templates or {})
    entries: list[dict[str, Any]] = [
        {"name": f"claim-{i}", "resourceClaimName": claim} for i, claim in enumerate(claims)]
    entries += [{"name": entry, "resourceClaimTemplateName": f"{entry}-template"}
                for entry in templates]
    status: dict[str, Any] = {"phase": "Pending", "qosClass": "BestEffort"}
    if templates:
        status["resourceClaimStatuses"] = [{"name": entry, "resourceClaimName": claim}
                                           for entry, claim in templates.items()]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {
            "containers": [{"name": "main", "image": "registry.example/app:1.0",
                            "resources": {"claims": [{"name": e["name"]} for e in entries]}}],
            "nodeName": node_name,
            "resourceClaims": entries,
        },
        "status": status,
    }
