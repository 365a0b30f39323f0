"""Create/read/update/patch/delete round trips with the captured objects, via the real client."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from dra_framework.testing.fakeapi import ALL_DRA_GATES, FakeApiServer

from .helpers import body_of, data, fixture, request_body, slice_body

SERVER_SET = ("uid", "resourceVersion", "creationTimestamp", "managedFields")


def strip_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj["metadata"].items() if k not in SERVER_SET}
    return {**obj, "metadata": meta}


@pytest.mark.parametrize("name, create", [
    ("deviceclass.json", "create_device_class"),
    ("resourceslice-created.json", "create_resource_slice"),
])
def test_create_returns_what_the_real_server_returned(
        resource_api: client.ResourceV1Api, name: str, create: str) -> None:
    captured = fixture(name)
    created = data(getattr(resource_api, create)(request_body(captured),
                                                 _preload_content=False))
    assert strip_server_fields(created) == strip_server_fields(captured)
    assert list(created) == list(captured)
    assert list(created["metadata"]) == [k for k in captured["metadata"] if k != "managedFields"]


@pytest.mark.parametrize("name, create", [
    ("resourceclaim-created.json", "create_namespaced_resource_claim"),
    ("resourceclaimtemplate.json", "create_namespaced_resource_claim_template"),
])
def test_create_namespaced(resource_api: client.ResourceV1Api, name: str, create: str) -> None:
    captured = fixture(name)
    created = data(getattr(resource_api, create)("default", request_body(captured),
                                                 _preload_content=False))
    assert strip_server_fields(created) == strip_server_fields(captured)
    assert "generation" not in created["metadata"]  # claims and templates have none


def test_claim_defaults_and_status_reset(resource_api: client.ResourceV1Api) -> None:
    body = request_body(fixture("resourceclaim-created.json"))
    for request in body["spec"]["devices"]["requests"]:
        request.get("exactly", {}).pop("allocationMode", None)
        request.get("exactly", {}).pop("count", None)
    body["status"] = {"reservedFor": [{"resource": "pods", "name": "x", "uid": "1"}]}
    created = data(resource_api.create_namespaced_resource_claim("default", body,
                                                                 _preload_content=False))
    assert created["spec"] == fixture("resourceclaim-created.json")["spec"]
    assert created["status"] == {}


def test_typed_models_round_trip(server: FakeApiServer,
                                 resource_api: client.ResourceV1Api) -> None:
    server.seed(fixture("resourceslice-created.json"))
    typed = resource_api.read_resource_slice("node-1-gpu.example.com-abcde")
    assert typed.spec.pool.resource_slice_count == 1
    assert len(typed.spec.devices) == 4
    listed = resource_api.list_resource_slice(
        field_selector="spec.nodeName=node-1,spec.driver=gpu.example.com")
    assert [s.metadata.name for s in listed.items] == ["node-1-gpu.example.com-abcde"]
    typed.metadata.labels["extra"] = "yes"
    replaced = resource_api.replace_resource_slice(typed.metadata.name, typed)
    assert replaced.metadata.labels["extra"] == "yes"
    assert int(replaced.metadata.resource_version) > int(typed.metadata.resource_version)
    assert replaced.metadata.generation == 1  # labels are not spec


def test_list_shape_matches_capture(server: FakeApiServer,
                                    resource_api: client.ResourceV1Api) -> None:
    server.seed(fixture("resourceslice-created.json"))
    server.seed(slice_body("other-node", nodeName="node-2"))
    listed = data(resource_api.list_resource_slice(
        field_selector="spec.nodeName=node-1,spec.driver=gpu.example.com",
        _preload_content=False))
    captured = fixture("resourceslice-list.json")
    assert list(listed) == list(captured)
    assert listed["metadata"]["resourceVersion"] == server.resource_version
    assert [strip_server_fields(i) for i in listed["items"]] == [
        strip_server_fields(i) for i in captured["items"]]


@pytest.mark.parametrize("selector, expected", [
    ("", ["a", "b", "c"]),
    ("spec.nodeName=node-1", ["a", "c"]),
    ("spec.nodeName!=node-1", ["b"]),
    ("spec.driver==nic.example.com", ["c"]),
    ("metadata.name=b", ["b"]),
    ("spec.nodeName=node-1,spec.driver=gpu.example.com", ["a"]),
], ids=["all", "node", "not-node", "driver", "name", "node-and-driver"])
def test_field_selectors(server: FakeApiServer, resource_api: client.ResourceV1Api,
                         selector: str, expected: list[str]) -> None:
    server.seed(slice_body("a"))
    server.seed(slice_body("b", nodeName="node-2"))
    server.seed(slice_body("c", driver="nic.example.com"))
    listed = resource_api.list_resource_slice(field_selector=selector)
    assert [s.metadata.name for s in listed.items] == expected


def test_unsupported_field_selector_is_400(resource_api: client.ResourceV1Api) -> None:
    with pytest.raises(client.ApiException) as err:
        resource_api.list_resource_slice(field_selector="spec.pool.name=node-1")
    assert err.value.status == 400
    assert body_of(err.value)["message"] == "field label not supported: spec.pool.name"


@pytest.mark.parametrize("selector, expected", [
    ("app=a", ["x"]), ("app!=a", ["y", "z"]), ("app", ["x", "y"]), ("!app", ["z"]),
    ("app in (a, b)", ["x", "y"]), ("app notin (a)", ["y", "z"]), ("app=b,tier", ["y"]),
], ids=["eq", "neq", "exists", "not-exists", "in", "notin", "and"])
def test_label_selectors(server: FakeApiServer, resource_api: client.ResourceV1Api,
                         selector: str, expected: list[str]) -> None:
    for name, labels in (("x", {"app": "a"}), ("y", {"app": "b", "tier": "1"}), ("z", {})):
        body = slice_body(name)
        body["metadata"]["labels"] = labels
        server.seed(body)
    listed = resource_api.list_resource_slice(label_selector=selector)
    assert [s.metadata.name for s in listed.items] == expected


def test_namespaced_list_across_namespaces(server: FakeApiServer,
                                           resource_api: client.ResourceV1Api) -> None:
    claim = fixture("resourceclaim-created.json")
    server.seed(claim)
    other = request_body(claim)
    other["metadata"]["namespace"] = "team-b"
    server.seed(other)
    everywhere = resource_api.list_resource_claim_for_all_namespaces()
    assert [(c.metadata.namespace, c.metadata.name) for c in everywhere.items] == [
        ("default", "gpu-claim"), ("team-b", "gpu-claim")]
    in_b = resource_api.list_namespaced_resource_claim(
        "team-b", field_selector="metadata.namespace=team-b")
    assert len(in_b.items) == 1
    assert server.get("resourceclaims", "gpu-claim", "team-b") is not None


def test_generate_name(resource_api: client.ResourceV1Api) -> None:
    body = slice_body("")
    body["metadata"] = {"generateName": "node-1-gpu.example.com-"}
    names = {resource_api.create_resource_slice(body).metadata.name for _ in range(3)}
    assert len(names) == 3
    for name in names:
        assert name.startswith("node-1-gpu.example.com-")
        assert len(name) == len("node-1-gpu.example.com-") + 5


def test_generation_bumps_on_spec_change_only(server: FakeApiServer,
                                              resource_api: client.ResourceV1Api) -> None:
    created = resource_api.create_resource_slice(slice_body("s"))
    assert created.metadata.generation == 1
    patched = resource_api.patch_resource_slice("s", {"metadata": {"labels": {"a": "b"}}})
    assert patched.metadata.generation == 1
    patched = resource_api.patch_resource_slice(
        "s", {"spec": {"pool": {"name": "node-1", "generation": 2, "resourceSliceCount": 1}}})
    assert patched.metadata.generation == 2
    assert patched.spec.pool.generation == 2


def test_noop_update_writes_nothing(server: FakeApiServer,
                                    resource_api: client.ResourceV1Api) -> None:
    created = resource_api.create_resource_slice(slice_body("s"))
    before = server.resource_version
    same = resource_api.replace_resource_slice("s", created)
    assert same.metadata.resource_version == created.metadata.resource_version
    assert server.resource_version == before


def test_single_global_resource_version(server: FakeApiServer,
                                        resource_api: client.ResourceV1Api,
                                        core_api: client.CoreV1Api) -> None:
    first = int(resource_api.create_resource_slice(slice_body("s")).metadata.resource_version)
    node = core_api.create_node({"metadata": {"name": "node-1"}})
    claim = resource_api.create_namespaced_resource_claim(
        "default", request_body(fixture("resourceclaim-created.json")))
    assert [int(node.metadata.resource_version), int(claim.metadata.resource_version)] == [
        first + 1, first + 2]


def test_put_ignores_status_and_status_put_ignores_spec(
        server: FakeApiServer, resource_api: client.ResourceV1Api) -> None:
    claim = fixture("resourceclaim-allocated.json")
    # No opaque config: a PUT from this client re-sends parameters with whitespace, which
    # the real server refuses as an immutable-field change (see the quirk tests).
    del claim["spec"]["devices"]["config"]
    del claim["status"]["allocation"]["devices"]["config"]
    stored = server.seed(claim)
    changed = request_body(stored)
    changed["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
    changed["metadata"]["labels"] = {"app": "changed"}
    changed["status"] = {}
    main = data(resource_api.replace_namespaced_resource_claim(
        "gpu-claim", "default", changed, _preload_content=False))
    assert main["status"] == claim["status"]
    assert main["metadata"]["labels"] == {"app": "changed"}

    status_write = request_body(main)
    status_write["status"] = {"reservedFor": []}
    status_write["status"]["allocation"] = claim["status"]["allocation"]
    status_write["metadata"]["labels"] = {"app": "ignored"}
    status_write["spec"]["devices"]["requests"] = []
    result = data(resource_api.replace_namespaced_resource_claim_status(
        "gpu-claim", "default", status_write, _preload_content=False))
    assert result["spec"] == claim["spec"]
    assert result["metadata"]["labels"] == {"app": "changed"}
    assert "reservedFor" not in result["status"]


def test_status_devices_round_trip(server: FakeApiServer,
                                   resource_api: client.ResourceV1Api) -> None:
    server.seed(fixture("resourceclaim-allocated.json"))
    wanted = fixture("resourceclaim-status-devices.json")
    patched = data(resource_api.patch_namespaced_resource_claim_status(
        "gpu-claim", "default", {"status": {"devices": wanted["status"]["devices"]}},
        _content_type="application/merge-patch+json", _preload_content=False))
    assert patched["status"] == wanted["status"]
    assert strip_server_fields(patched) == strip_server_fields(wanted)


def test_deallocation_drops_device_status(server: FakeApiServer,
                                          resource_api: client.ResourceV1Api) -> None:
    server.seed(fixture("resourceclaim-status-devices.json"))
    patched = data(resource_api.patch_namespaced_resource_claim_status(
        "gpu-claim", "default", {"status": {"allocation": None, "reservedFor": None}},
        _content_type="application/merge-patch+json", _preload_content=False))
    assert patched["status"] == {}


def test_strategic_merge_patch_merges_finalizers(server: FakeApiServer,
                                                 resource_api: client.ResourceV1Api) -> None:
    server.seed(fixture("resourceclaim-allocated.json"))
    patched = resource_api.patch_namespaced_resource_claim(
        "gpu-claim", "default", {"metadata": {"finalizers": ["example.com/mine"]}})
    assert patched.metadata.finalizers == ["resource.kubernetes.io/delete-protection",
                                           "example.com/mine"]
    patched = resource_api.patch_namespaced_resource_claim(
        "gpu-claim", "default",
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/mine"]}})
    assert patched.metadata.finalizers == ["resource.kubernetes.io/delete-protection"]
    merged = resource_api.patch_namespaced_resource_claim(
        "gpu-claim", "default", {"metadata": {"finalizers": ["example.com/other"]}},
        _content_type="application/merge-patch+json")
    assert merged.metadata.finalizers == ["example.com/other"]


def test_json_patch(server: FakeApiServer, resource_api: client.ResourceV1Api) -> None:
    server.seed(slice_body("s"))
    patched = resource_api.patch_resource_slice("s", [
        {"op": "test", "path": "/spec/pool/generation", "value": 1},
        {"op": "replace", "path": "/spec/pool/generation", "value": 2},
        {"op": "add", "path": "/spec/devices/-", "value": {"name": "gpu-1"}},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}},
    ])
    assert patched.spec.pool.generation == 2
    assert [d.name for d in patched.spec.devices] == ["gpu-0", "gpu-1"]
    with pytest.raises(client.ApiException) as err:
        resource_api.patch_resource_slice(
            "s", [{"op": "test", "path": "/spec/pool/generation", "value": 7}])
    assert err.value.status == 422


def test_delete_returns_the_object(server: FakeApiServer,
                                   resource_api: client.ResourceV1Api) -> None:
    created = resource_api.create_resource_slice(slice_body("s"))
    deleted = resource_api.delete_resource_slice("s")
    assert deleted.metadata.uid == created.metadata.uid
    assert int(deleted.metadata.resource_version) > int(created.metadata.resource_version)
    assert server.get("resourceslices", "s") is None
    with pytest.raises(client.ApiException) as err:
        resource_api.delete_resource_slice("s")
    assert err.value.status == 404


def test_finalizers_delay_deletion(server: FakeApiServer,
                                   resource_api: client.ResourceV1Api) -> None:
    server.seed(fixture("resourceclaim-allocated.json"))
    marked = resource_api.delete_namespaced_resource_claim("gpu-claim", "default")
    assert marked.metadata.deletion_timestamp is not None
    assert marked.metadata.deletion_grace_period_seconds == 0
    assert server.get("resourceclaims", "gpu-claim") is not None
    again = resource_api.delete_namespaced_resource_claim("gpu-claim", "default")
    assert again.metadata.resource_version == marked.metadata.resource_version
    with pytest.raises(client.ApiException) as err:
        resource_api.patch_namespaced_resource_claim(
            "gpu-claim", "default", {"metadata": {"finalizers": ["example.com/late"]}})
    assert err.value.status == 422
    assert body_of(err.value)["details"]["causes"][0]["message"] == (
        'Forbidden: no new finalizers can be added if the object is being deleted, found new '
        'finalizers []string{"example.com/late"}')
    resource_api.patch_namespaced_resource_claim(
        "gpu-claim", "default", {"metadata": {"finalizers": None}})
    assert server.get("resourceclaims", "gpu-claim") is None


def test_delete_preconditions(server: FakeApiServer, resource_api: client.ResourceV1Api) -> None:
    server.seed(slice_body("s"))
    with pytest.raises(client.ApiException) as err:
        resource_api.delete_resource_slice(
            "s", body={"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}})
    assert err.value.status == 409
    assert "Precondition failed: UID in precondition" in body_of(err.value)["message"]


def test_delete_collection_with_field_selector(server: FakeApiServer,
                                               resource_api: client.ResourceV1Api) -> None:
    server.seed(slice_body("a"))
    server.seed(slice_body("b", nodeName="node-2"))
    resp = data(resource_api.delete_collection_resource_slice(
        field_selector="spec.nodeName=node-1", _preload_content=False))
    assert resp["kind"] == "ResourceSliceList"
    assert [i["metadata"]["name"] for i in resp["items"]] == ["a"]
    assert [o["metadata"]["name"] for o in server.objects("resourceslices")] == ["b"]


def test_quantities_are_canonicalised(resource_api: client.ResourceV1Api) -> None:
    body = slice_body("q")
    body["spec"]["devices"][0]["capacity"] = {"memory": {"value": "1024Mi"},
                                              "cores": {"value": "0.5"}}
    created = resource_api.create_resource_slice(body)
    capacity = created.spec.devices[0].capacity
    assert (capacity["memory"].value, capacity["cores"].value) == ("1Gi", "500m")
    body = slice_body("bad")
    body["spec"]["devices"][0]["capacity"] = {"memory": {"value": "lots"}}
    with pytest.raises(client.ApiException) as err:
        resource_api.create_resource_slice(body)
    assert err.value.status == 400


def test_disabled_gates_drop_fields() -> None:
    taints = [{"key": "example.com/unhealthy", "effect": "NoSchedule"}]
    body = slice_body("t")
    body["spec"]["devices"][0]["taints"] = taints
    with FakeApiServer(bookmark_interval=None) as default, \
            FakeApiServer(bookmark_interval=None, feature_gates=ALL_DRA_GATES) as gated:
        for srv, expected in ((default, None), (gated, taints)):
            with srv.api_client() as api:
                created = data(client.ResourceV1Api(api).create_resource_slice(
                    body, _preload_content=False))
            assert created["spec"]["devices"][0].get("taints") == expected


def test_core_and_coordination_resources(core_api: client.CoreV1Api,
                                         api_client: client.ApiClient,
                                         server: FakeApiServer) -> None:
    node = core_api.create_node({"metadata": {"name": "node-1"},
                                 "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert node.status.conditions[0].type == "Ready"
    assert core_api.read_node("node-1").metadata.uid == node.metadata.uid
    server.seed(fixture("pod-with-claims.json"))
    pods = core_api.list_namespaced_pod("default", field_selector="spec.nodeName=node-1")
    assert [p.metadata.name for p in pods.items] == ["pod-1"]
    assert pods.items[0].spec.resource_claims[0].resource_claim_name == "gpu-claim"
    leases = client.CoordinationV1Api(api_client)
    lease = leases.create_namespaced_lease("kube-system", {
        "metadata": {"name": "gpu-example-controller"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
    lease.spec.holder_identity = "b"
    assert leases.replace_namespaced_lease(lease.metadata.name, "kube-system",
                                           lease).spec.holder_identity == "b"
    status = core_api.delete_node("node-1")  # nodes answer with a Status, not the object
    assert status["status"] == "Success"
    assert status["details"] == {"name": "node-1", "kind": "nodes", "uid": node.metadata.uid}
