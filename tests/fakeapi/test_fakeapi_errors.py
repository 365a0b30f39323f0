"""Failure bodies compared with the ones kube-apiserver v1.35.6 sent for the same requests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from dra_framework.testing.fakeapi import ALL_DRA_GATES, FakeApiServer

from .helpers import body_of, fixture, raw_request, slice_body


def test_not_found(resource_api: client.ResourceV1Api) -> None:
    with pytest.raises(client.ApiException) as err:
        resource_api.read_namespaced_resource_claim("no-such-claim", "default")
    assert err.value.status == 404
    assert body_of(err.value) == fixture("error-claim-not-found.json")


def test_not_found_core_group(core_api: client.CoreV1Api) -> None:
    with pytest.raises(client.ApiException) as err:
        core_api.read_node("ghost")
    assert body_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'nodes "ghost" not found', "reason": "NotFound",
        "details": {"name": "ghost", "kind": "nodes"}, "code": 404}


def test_already_exists(server: FakeApiServer, resource_api: client.ResourceV1Api) -> None:
    server.seed(fixture("resourceslice-created.json"))
    with pytest.raises(client.ApiException) as err:
        resource_api.create_resource_slice(slice_body("node-1-gpu.example.com-abcde"))
    assert err.value.status == 409
    assert body_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'resourceslices.resource.k8s.io "node-1-gpu.example.com-abcde" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "node-1-gpu.example.com-abcde", "group": "resource.k8s.io",
                    "kind": "resourceslices"},
        "code": 409}


def test_conflict_on_stale_update(server: FakeApiServer,
                                  resource_api: client.ResourceV1Api) -> None:
    stale = resource_api.read_resource_slice(
        server.seed(fixture("resourceslice-created.json"))["metadata"]["name"])
    resource_api.patch_resource_slice(stale.metadata.name, {"metadata": {"labels": {"x": "1"}}})
    with pytest.raises(client.ApiException) as err:
        resource_api.replace_resource_slice(stale.metadata.name, stale)
    assert err.value.status == 409
    assert body_of(err.value) == fixture("error-conflict.json")


def test_conflict_on_stale_status_update(server: FakeApiServer,
                                         resource_api: client.ResourceV1Api) -> None:
    claim = fixture("resourceclaim-allocated.json")
    claim["metadata"]["resourceVersion"] = "1"
    del claim["spec"]["devices"]["config"]
    server.seed({**claim, "metadata": {**claim["metadata"]}})
    with pytest.raises(client.ApiException) as err:
        resource_api.replace_namespaced_resource_claim_status("gpu-claim", "default", claim)
    assert err.value.status == 409
    assert body_of(err.value) == fixture("error-conflict-claim-status.json")


def _devices(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": f"gpu-{i}", **extra} for i in range(count)]


SLICE_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("error-slice-too-many-devices.json", "too-many-devices", {"devices": _devices(129)}),
    ("error-slice-attribute-name-too-long.json", "attr-name-too-long",
     {"devices": [{"name": "gpu-0", "attributes": {"a" * 33: {"string": "x"}}}]}),
    ("error-slice-device-name-not-dns-label.json", "bad-device-name",
     {"devices": [{"name": "GPU_0"}]}),
    ("error-slice-driver-name-invalid.json", "bad-driver", {"driver": "GPU_Example.com"}),
    ("error-slice-negative-generation.json", "neg-generation",
     {"pool": {"name": "node-1", "generation": -1, "resourceSliceCount": 1}}),
    ("error-slice-nodename-and-allnodes.json", "node-and-all", {"allNodes": True}),
    ("error-slice-string-value-too-long.json", "long-string",
     {"devices": [{"name": "gpu-0", "attributes": {"model": {"string": "x" * 65}}}]}),
    ("error-slice-too-many-attributes.json", "too-many-attrs",
     {"devices": [{"name": "gpu-0",
                   "attributes": {f"attr{i}": {"int": i} for i in range(33)}}]}),
]


@pytest.mark.parametrize("expected, name, spec", SLICE_CASES,
                         ids=[case[0].removeprefix("error-slice-").removesuffix(".json")
                              for case in SLICE_CASES])
def test_slice_validation_matches_real_server(resource_api: client.ResourceV1Api,
                                              expected: str, name: str,
                                              spec: dict[str, Any]) -> None:
    with pytest.raises(client.ApiException) as err:
        resource_api.create_resource_slice(slice_body(name, **spec))
    assert err.value.status == 422
    assert body_of(err.value) == fixture(expected)


def _invalid_messages(exc: client.ApiException) -> list[str]:
    return [f"{c['field']}: {c['message']}" for c in body_of(exc)["details"]["causes"]]


@pytest.mark.parametrize("spec, messages", [
    ({"nodeName": None}, ["spec: Required value: exactly one of `nodeName`, `nodeSelector`, "
                          "`allNodes`, `perDeviceNodeSelection` is required"]),
    ({"pool": {"name": "", "generation": 0, "resourceSliceCount": 0}},
     ["spec.pool.name: Required value",
      "spec.pool.resourceSliceCount: Invalid value: 0: must be greater than zero"]),
    ({"devices": [{"name": "gpu-0"}, {"name": "gpu-0"}]},
     ['spec.devices[1]: Duplicate value: "gpu-0"']),
    ({"devices": [{"name": "gpu-0", "attributes": {"v": {"version": "1.2"}}}]},
     ['spec.devices[0].attributes[v].version: Invalid value: "1.2": must be a string '
      "compatible with semver.org spec 2.0.0"]),
    ({"devices": [{"name": "gpu-0", "attributes": {"v": {"int": 1, "bool": True}}}]},
     ['spec.devices[0].attributes[v]: Invalid value: {"IntValue":1,"BoolValue":true,'
      '"StringValue":null,"VersionValue":null}: exactly one value must be specified']),
    ({"devices": [{"name": "gpu-0", "attributes": {"v": {}}}]},
     ['spec.devices[0].attributes[v]: Invalid value: "": exactly one value must be specified']),
], ids=["no-node-selection", "pool", "duplicate-device", "semver", "two-values", "no-value"])
def test_more_slice_rules(resource_api: client.ResourceV1Api, spec: dict[str, Any],
                          messages: list[str]) -> None:
    body = slice_body("s", **spec)
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
    with pytest.raises(client.ApiException) as err:
        resource_api.create_resource_slice(body)
    assert _invalid_messages(err.value) == messages


def test_slice_rules_behind_gates() -> None:
    counters = [{"name": "gpu-0-counters", "counters": {"memory": {"value": "80Gi"}}}]
    taint = [{"key": "example.com/bad", "effect": "NoSchedule"}]
    with FakeApiServer(bookmark_interval=None, feature_gates=ALL_DRA_GATES) as srv, \
            srv.api_client() as api:
        slices = client.ResourceV1Api(api)
        with pytest.raises(client.ApiException) as err:
            slices.create_resource_slice(slice_body("both", sharedCounters=counters))
        assert _invalid_messages(err.value) == [
            'spec: Invalid value: "": only one of `sharedCounters` or `devices` is allowed']
        with pytest.raises(client.ApiException) as err:
            slices.create_resource_slice(slice_body("tainted", devices=_devices(65, taints=taint)))
        assert _invalid_messages(err.value) == [
            "spec.devices: Too many: 65: must have at most 64 items"]
        assert slices.create_resource_slice(slice_body("ok", devices=_devices(64, taints=taint)))


def test_slice_immutable_fields(server: FakeApiServer,
                                resource_api: client.ResourceV1Api) -> None:
    server.seed(slice_body("s"))
    with pytest.raises(client.ApiException) as err:
        resource_api.patch_resource_slice("s", {"spec": {"driver": "other.example.com",
                                                         "nodeName": "node-2"}})
    assert _invalid_messages(err.value) == [
        'spec.driver: Invalid value: "other.example.com": field is immutable',
        'spec.nodeName: Invalid value: "node-2": field is immutable']


def test_status_devices_must_be_allocated(server: FakeApiServer,
                                          resource_api: client.ResourceV1Api) -> None:
    server.seed(fixture("resourceclaim-allocated.json"))
    entry = fixture("resourceclaim-status-devices.json")["status"]["devices"][0]
    with pytest.raises(client.ApiException) as err:
        resource_api.patch_namespaced_resource_claim_status(
            "gpu-claim", "default", {"status": {"devices": [{**entry, "device": "gpu-3"}]}},
            _content_type="application/merge-patch+json")
    assert err.value.status == 422
    assert body_of(err.value) == fixture("error-status-devices-not-allocated.json")


@pytest.mark.parametrize("parameters, message", [
    ("[1, 2]", 'spec.devices.config[0].opaque.parameters: Invalid value: "<value omitted>": '
               "must be a valid JSON object"),
    ('{"blob": "' + "x" * 10240 + '"}',
     "spec.devices.config[0].opaque.parameters: Too long: may not be more than 10240 bytes"),
    ("null", "spec.devices.config[0].opaque.parameters: Required value"),
], ids=["not-an-object", "too-long", "null"])
def test_opaque_parameters(server: FakeApiServer, parameters: str, message: str) -> None:
    claim = ('{"apiVersion":"resource.k8s.io/v1","kind":"ResourceClaim","metadata":'
             '{"name":"p"},"spec":{"devices":{"requests":[{"name":"gpu","exactly":'
             '{"deviceClassName":"gpu.example.com"}}],"config":[{"opaque":'
             '{"driver":"gpu.example.com","parameters":' + parameters + "}}]}}}")
    status, body = raw_request(server, "POST",
                               "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims", claim)
    assert status == 422
    assert json.loads(body)["message"] == f'ResourceClaim.resource.k8s.io "p" is invalid: {message}'


def test_claim_spec_rules(resource_api: client.ResourceV1Api) -> None:
    body = {"metadata": {"name": "Bad_Name"}, "spec": {"devices": {
        "requests": [{"name": "gpu"}, {"name": "x", "exactly": {"deviceClassName": "c",
                                                                "count": 0}}],
        "constraints": [{"requests": ["nope"], "matchAttribute": "model"}]}}}
    with pytest.raises(client.ApiException) as err:
        resource_api.create_namespaced_resource_claim("default", body)
    assert _invalid_messages(err.value) == [
        'metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist '
        "of lower case alphanumeric characters, '-' or '.', and must start and end with an "
        "alphanumeric character (e.g. 'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        "spec.devices.requests[0]: Required value: exactly one of `exactly` or `firstAvailable` "
        "is required",
        'spec.devices.constraints[0].requests[0]: Invalid value: "nope": must be the name of a '
        "request in the claim or the name of a request and a subrequest separated by '/'",
        'spec.devices.constraints[0].matchAttribute: Invalid value: "model": a fully qualified '
        "name must be a domain and a name separated by a slash"]


def test_multiple_errors_are_aggregated(resource_api: client.ResourceV1Api) -> None:
    with pytest.raises(client.ApiException) as err:
        resource_api.create_resource_slice(slice_body("s", driver="", devices=[{"name": "A"}]))
    message = body_of(err.value)["message"]
    assert message.startswith('ResourceSlice.resource.k8s.io "s" is invalid: [spec.driver: '
                              "Required value, spec.driver: Invalid value: \"\": ")
    assert message.endswith("]")
