"""Pods as a node-local watcher sees them: bound by the scheduler's Binding, selected by node."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from dra_framework.api.rest import KubeApi
from dra_framework.testing.claims import bound_pod
from dra_framework.testing.fakeapi import FakeApiServer

PODS = "/api/v1/pods"
ON_NODE_1 = "spec.nodeName=node-1"


def unbound(name: str, uid: str) -> dict[str, Any]:
    pod = bound_pod(name=name, uid=uid, from_templates={"gpu": f"{name}-gpu"})
    del pod["spec"]["nodeName"], pod["metadata"]["uid"], pod["status"]
    return pod


def bind(core: client.CoreV1Api, name: str, node: str) -> None:
    core.create_namespaced_pod_binding(name, "default", {
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}},
        _preload_content=False)


def test_a_binding_sets_the_node_once(server: FakeApiServer, core_api: client.CoreV1Api) -> None:
    core_api.create_namespaced_pod("default", unbound("p", "u"), _preload_content=False)
    bind(core_api, "p", "node-1")
    stored = server.get("pods", "p")
    assert stored is not None and stored["spec"]["nodeName"] == "node-1"
    with pytest.raises(client.exceptions.ApiException) as err:
        bind(core_api, "p", "node-2")
    assert err.value.status == 409
    assert json.loads(err.value.body)["message"] == (
        'Operation cannot be fulfilled on pods/binding "p": '
        'pod p is already assigned to node "node-1"')


def test_the_node_watch_sees_a_pod_from_its_binding_to_its_deletion(
        server: FakeApiServer, core_api: client.CoreV1Api) -> None:
    api = KubeApi(api_client=server.api_client(), timeout=5)
    since = api.list(PODS, field_selector=ON_NODE_1)["metadata"]["resourceVersion"]
    core_api.create_namespaced_pod("default", unbound("mine", "u1"), _preload_content=False)
    core_api.create_namespaced_pod("default", unbound("other", "u2"), _preload_content=False)
    core_api.patch_namespaced_pod_status("mine", "default", {"status": {
        "resourceClaimStatuses": [{"name": "gpu", "resourceClaimName": "mine-gpu"}]}})
    bind(core_api, "other", "node-2")
    bind(core_api, "mine", "node-1")
    core_api.delete_namespaced_pod("mine", "default")
    seen: list[tuple[str, Any]] = []
    for event in api.watch(PODS, resource_version=since, field_selector=ON_NODE_1,
                           timeout_seconds=5):
        obj = event["object"]
        seen.append((event["type"], obj["status"].get("resourceClaimStatuses")))
        if event["type"] == "DELETED":
            break
    claimed = [{"name": "gpu", "resourceClaimName": "mine-gpu"}]
    assert seen == [("ADDED", claimed), ("DELETED", claimed)]


def test_a_node_list_holds_only_that_nodes_pods(server: FakeApiServer) -> None:
    server.seed(bound_pod(name="a", uid="ua", claims=["c"]))
    server.seed(bound_pod(name="b", uid="ub", node_name="node-2"))
    api = KubeApi(api_client=server.api_client(), timeout=5)
    listed = api.list(PODS, field_selector=ON_NODE_1)["items"]
    assert [p["metadata"]["name"] for p in listed] == ["a"]
    assert listed[0]["spec"]["resourceClaims"] == [{"name": "claim-0",
                                                    "resourceClaimName": "c"}]
