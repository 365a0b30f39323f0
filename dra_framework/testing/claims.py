"""Builders of ResourceClaim objects shaped like the ones a real kube-apiserver returns.

``allocated_claim`` produces what ``GET …/resourceclaims/NAME`` returns after the scheduler
allocated it (compare ``resourceclaim-allocated.json`` of a v1.35 capture): requests, this
allocation's results, class and claim opaque config, node selector and ``reservedFor``.  Seed it
into ``FakeApiServer`` and prepare it through ``KubeletClient``.
"""

from __future__ import annotations

import uuid as _uuid
from collections.abc import Mapping, Sequence
from typing import Any

import attrs


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
    pod: tuple[str, str] = ("pod-1", "d0f16d89-9cc7-413b-a15f-6bac27ceaa09"),
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
