"""Discovery of the served resource.k8s.io version, and conversion between v1 and the betas."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from dra_framework.api.apiversions import (
    SUPPORTED_VERSIONS,
    V1,
    ResourceApi,
    choose,
    discover,
    served_versions,
)
from dra_framework.api.rest import KubeApi
from dra_framework.errors import SetupError
from dra_framework.testing.fakeapi import FakeApiServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-v1.35"
V1BETA1 = ResourceApi("v1beta1")
V1BETA2 = ResourceApi("v1beta2")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def fixture_events(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_bytes().splitlines() if line]


# --- a stub server for answers the fake does not give ----------------------------------
class _Stub(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes]] = {}

    def do_GET(self) -> None:
        status, body = self.routes.get(self.path, (404, b'{"kind":"Status","code":404}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[KubeApi, dict[str, tuple[int, bytes]]]]:
    """A KubeApi against a tiny server answering GETs from a ``path → (status, body)`` map."""
    routes: dict[str, tuple[int, bytes]] = {}
    handler = type("Handler", (_Stub,), {"routes": routes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield KubeApi(api_client=client.ApiClient(configuration), timeout=5), routes
    finally:
        server.shutdown()
        server.server_close()


# --- discovery -------------------------------------------------------------------------
def test_captured_group_document_picks_v1(stub: tuple[KubeApi, dict[str, Any]]) -> None:
    api, routes = stub
    routes["/apis/resource.k8s.io"] = (200, (FIXTURES / "resource-group.json").read_bytes())
    assert served_versions(api) == ("v1",)
    assert discover(api) == V1


@pytest.mark.parametrize(("served", "expected"), [
    (("v1",), "v1"),
    (("v1", "v1beta2", "v1beta1"), "v1"),
    (("v1beta2", "v1beta1"), "v1beta2"),
    (("v1beta2",), "v1beta2"),
    (("v1beta1",), "v1beta1"),
    (("v1beta1", "v1alpha3"), "v1beta1"),
], ids=lambda v: ",".join(v) if isinstance(v, tuple) else v)
def test_discovery_on_the_fake_server(served: tuple[str, ...], expected: str) -> None:
    with FakeApiServer(resource_versions=served, bookmark_interval=None) as server:
        api = KubeApi(api_client=server.api_client(), timeout=5)
        assert served_versions(api) == served
        resource_api = discover(api)
    assert resource_api == ResourceApi(expected)
    assert resource_api.path("resourceslices") == f"/apis/resource.k8s.io/{expected}/resourceslices"


def test_default_fake_server_serves_v1() -> None:
    with FakeApiServer(bookmark_interval=None) as server:
        assert discover(KubeApi(api_client=server.api_client(), timeout=5)) == V1


def test_group_not_served_means_dra_is_off(stub: tuple[KubeApi, dict[str, Any]]) -> None:
    api, _ = stub
    with pytest.raises(SetupError) as err:
        discover(api)
    message = str(err.value)
    assert "does not serve resource.k8s.io: Dynamic Resource Allocation is off" in message
    for hint in ("1.34", "DynamicResourceAllocation=true", "kube-apiserver",
                 "kube-controller-manager", "kube-scheduler", "kubelet",
                 "--runtime-config=resource.k8s.io/v1beta1=true", "resource.k8s.io/v1beta2=true"):
        assert hint in message


def test_only_unsupported_versions(stub: tuple[KubeApi, dict[str, Any]]) -> None:
    api, routes = stub
    group = {"kind": "APIGroup", "apiVersion": "v1", "name": "resource.k8s.io",
             "versions": [{"groupVersion": "resource.k8s.io/v1alpha3", "version": "v1alpha3"}]}
    routes["/apis/resource.k8s.io"] = (200, json.dumps(group).encode())
    with pytest.raises(SetupError, match="only at v1alpha3.*DynamicResourceAllocation=true"):
        discover(api)
    with pytest.raises(SetupError, match="does not serve"):
        choose(())


def test_forbidden_group(stub: tuple[KubeApi, dict[str, Any]]) -> None:
    api, routes = stub
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
              "message": "forbidden: User cannot get path", "code": 403}
    routes["/apis/resource.k8s.io"] = (403, json.dumps(status).encode())
    with pytest.raises(SetupError, match="cannot read the resource.k8s.io API group.*403"):
        discover(api)


def test_unreachable_server() -> None:
    server = FakeApiServer(bookmark_interval=None).start()
    try:
        api = KubeApi(api_client=server.api_client(), timeout=2)
        server.pause(refuse=True)
        with pytest.raises(SetupError, match=r"cannot reach the Kubernetes API server at http://"):
            discover(api)
    finally:
        server.stop()


# --- conversion: v1 objects that use every field drivers touch -------------------------
FULL_SLICE: dict[str, Any] = {
    "kind": "ResourceSlice", "apiVersion": "resource.k8s.io/v1",
    "metadata": {"name": "node-1-gpu-abcde", "labels": {"a": "b"}},
    "spec": {
        "driver": "gpu.example.com", "pool": {"name": "node-1", "generation": 3,
                                              "resourceSliceCount": 2},
        "perDeviceNodeSelection": True,
        "devices": [
            {"name": "gpu-0",
             "attributes": {"model": {"string": "X100"}, "index": {"int": 0},
                            "mig": {"bool": True}, "driverVersion": {"version": "1.2.3"}},
             "capacity": {"memory": {"value": "80Gi", "requestPolicy": {
                 "default": "1Gi", "validRange": {"min": "1Gi", "step": "1Gi"}}}},
             "consumesCounters": [{"counterSet": "gpu-0-counters",
                                   "counters": {"memory": {"value": "80Gi"}}}],
             "nodeName": "node-1",
             "taints": [{"key": "example.com/unhealthy", "value": "ecc",
                         "effect": "NoSchedule", "timeAdded": "2026-11-26T16:41:08Z"}],
             "bindsToNode": True, "bindingConditions": ["attached"],
             "bindingFailureConditions": ["attach-failed"], "allowMultipleAllocations": True},
            {"name": "gpu-1",
             "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                 {"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}]}},
            {"name": "empty", "allNodes": True},
        ],
    },
}
COUNTER_SLICE: dict[str, Any] = {
    "kind": "ResourceSlice", "apiVersion": "resource.k8s.io/v1", "metadata": {"name": "c"},
    "spec": {"driver": "gpu.example.com", "allNodes": True,
             "pool": {"name": "shared", "generation": 0, "resourceSliceCount": 1},
             "sharedCounters": [{"name": "gpu-0-counters",
                                 "counters": {"memory": {"value": "80Gi"}}}]},
}
FULL_CLAIM: dict[str, Any] = {
    "kind": "ResourceClaim", "apiVersion": "resource.k8s.io/v1",
    "metadata": {"name": "c", "namespace": "default"},
    "spec": {"devices": {
        "requests": [
            {"name": "all", "exactly": {
                "deviceClassName": "gpu.example.com", "allocationMode": "All",
                "selectors": [{"cel": {"expression": "device.attributes['x'].mig"}}],
                "adminAccess": True,
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute",
                                 "tolerationSeconds": 30}],
                "capacity": {"requests": {"memory": "10Gi"}}}},
            {"name": "flex", "firstAvailable": [
                {"name": "big", "deviceClassName": "gpu.example.com", "allocationMode":
                 "ExactCount", "count": 2, "tolerations": [{"key": "k", "operator": "Exists"}],
                 "capacity": {"requests": {"memory": "1Gi"}}},
                {"name": "small", "deviceClassName": "gpu.example.com"}]},
        ],
        "constraints": [{"requests": ["all"], "distinctAttribute": "gpu.example.com/uuid"}],
        "config": [{"requests": ["flex/big"], "opaque": {
            "driver": "gpu.example.com", "parameters": {"kind": "GpuConfig", "n": 1}}}],
    }},
    "status": {
        "allocation": {
            "devices": {
                "results": [{"request": "all", "driver": "gpu.example.com", "pool": "node-1",
                             "device": "gpu-0", "adminAccess": True, "shareID":
                             "4b4a0d6c-3b8e-4c6e-9a67-0f0c8e0e0b11",
                             "consumedCapacity": {"memory": "10Gi"},
                             "bindingConditions": ["attached"],
                             "tolerations": [{"key": "k", "operator": "Exists"}]}],
                "config": [{"source": "FromClaim", "requests": ["flex/big"], "opaque": {
                    "driver": "gpu.example.com", "parameters": {"kind": "GpuConfig"}}}]},
            "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}]},
            "allocationTimestamp": "2026-11-26T16:41:08Z"},
        "reservedFor": [{"resource": "pods", "name": "p", "uid": "u"}],
        "devices": [{"driver": "gpu.example.com", "pool": "node-1", "device": "gpu-0",
                     "conditions": [{"type": "Ready", "status": "True", "reason": "R",
                                     "message": "", "lastTransitionTime":
                                         "2026-11-26T16:41:08Z"}],
                     "data": {"a": 1}, "networkData": {"interfaceName": "eth1",
                                                       "ips": ["192.0.2.5/24"]}}],
    },
}


def _with_list(kind: str, *items: dict[str, Any]) -> dict[str, Any]:
    """A List as the server sends it: items without kind and apiVersion."""
    stripped = [{k: v for k, v in i.items() if k not in ("kind", "apiVersion")} for i in items]
    return {"kind": f"{kind}List", "apiVersion": "resource.k8s.io/v1",
            "metadata": {"resourceVersion": "7"}, "items": stripped}


V1_OBJECTS: dict[str, dict[str, Any]] = {
    "fixture-slice": fixture("resourceslice-created.json"),
    "fixture-slice-list": fixture("resourceslice-list.json"),
    "fixture-claim-created": fixture("resourceclaim-created.json"),
    "fixture-claim-allocated": fixture("resourceclaim-allocated.json"),
    "fixture-claim-status-devices": fixture("resourceclaim-status-devices.json"),
    "fixture-claim-from-template": fixture("resourceclaim-from-template.json"),
    "fixture-claim-template": fixture("resourceclaimtemplate.json"),
    "fixture-deviceclass": fixture("deviceclass.json"),
    "full-slice": FULL_SLICE,
    "counter-slice": COUNTER_SLICE,
    "full-claim": FULL_CLAIM,
    "slice-list": _with_list("ResourceSlice", FULL_SLICE, COUNTER_SLICE),
    "claim-list": _with_list("ResourceClaim", FULL_CLAIM, fixture("resourceclaim-created.json")),
    **{f"slice-watch-{i}": e for i, e in enumerate(fixture_events("watch-resourceslices.ndjson"))},
    **{f"claim-watch-{i}": e for i, e in enumerate(fixture_events("watch-resourceclaims.ndjson"))},
    "watch-error": fixture("error-watch-gone.json"),
}


@pytest.mark.parametrize("version", ["v1beta1", "v1beta2"])
@pytest.mark.parametrize("name", list(V1_OBJECTS))
def test_round_trip_through_a_beta_is_lossless(version: str, name: str) -> None:
    obj = V1_OBJECTS[name]
    before = copy.deepcopy(obj)
    api = ResourceApi(version)
    served = api.from_v1(obj)
    assert api.to_v1(served) == obj
    assert obj == before  # inputs are not changed
    body = served.get("object", served)
    if body.get("apiVersion", "").startswith("resource.k8s.io/"):
        assert body["apiVersion"] == f"resource.k8s.io/{version}"


@pytest.mark.parametrize("name", list(V1_OBJECTS))
def test_v1beta2_only_changes_api_version(name: str) -> None:
    obj = V1_OBJECTS[name]
    served = V1BETA2.from_v1(obj)
    assert json.dumps(served).replace("resource.k8s.io/v1beta2", "resource.k8s.io/v1") == (
        json.dumps(obj).replace("resource.k8s.io/v1beta2", "resource.k8s.io/v1")
    )


def test_v1_is_identity() -> None:
    assert V1.to_v1(FULL_SLICE) is FULL_SLICE
    assert V1.from_v1(FULL_CLAIM) is FULL_CLAIM


# --- conversion: the v1beta1 shapes ----------------------------------------------------
def test_v1beta1_slice_wraps_device_fields_in_basic() -> None:
    served = V1BETA1.from_v1(FULL_SLICE)
    devices = served["spec"]["devices"]
    assert [set(d) for d in devices] == [{"name", "basic"}] * 3
    basic = devices[0]["basic"]
    assert basic["capacity"]["memory"] == {"value": "80Gi", "requestPolicy": {
        "default": "1Gi", "validRange": {"min": "1Gi", "step": "1Gi"}}}
    assert set(basic) == set(FULL_SLICE["spec"]["devices"][0]) - {"name"}
    assert devices[2] == {"name": "empty", "basic": {"allNodes": True}}
    assert served["spec"]["perDeviceNodeSelection"] is True
    assert V1BETA1.from_v1(COUNTER_SLICE)["spec"] == COUNTER_SLICE["spec"]


def test_v1beta1_claim_has_exact_fields_inline() -> None:
    served = V1BETA1.from_v1(FULL_CLAIM)
    requests = served["spec"]["devices"]["requests"]
    assert requests[0] == {"name": "all", **FULL_CLAIM["spec"]["devices"]["requests"][0]["exactly"]}
    assert requests[1] == FULL_CLAIM["spec"]["devices"]["requests"][1]
    assert served["status"] == FULL_CLAIM["status"]
    template = V1BETA1.from_v1(fixture("resourceclaimtemplate.json"))
    assert template["spec"]["spec"]["devices"]["requests"] == [
        {"name": "gpu", "deviceClassName": "gpu.example.com", "allocationMode": "ExactCount",
         "count": 1}]


V1BETA1_TO_V1: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "device-with-basic": (
        {"name": "d", "basic": {"attributes": {"a": {"int": 1}},
                                "capacity": {"m": {"value": "1Gi"}}}},
        {"name": "d", "attributes": {"a": {"int": 1}}, "capacity": {"m": {"value": "1Gi"}}}),
    "device-empty-basic": ({"name": "d", "basic": {}}, {"name": "d"}),
    "device-v1-shaped": ({"name": "d", "attributes": {}}, {"name": "d", "attributes": {}}),
}


@pytest.mark.parametrize("name", list(V1BETA1_TO_V1))
def test_v1beta1_devices(name: str) -> None:
    beta, v1 = V1BETA1_TO_V1[name]
    obj = {"kind": "ResourceSlice", "apiVersion": "resource.k8s.io/v1beta1",
           "spec": {"driver": "x", "devices": [beta]}}
    assert V1BETA1.to_v1(obj) == {"kind": "ResourceSlice", "apiVersion": "resource.k8s.io/v1",
                                  "spec": {"driver": "x", "devices": [v1]}}


REQUESTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "exact": (
        {"name": "r", "deviceClassName": "c", "allocationMode": "ExactCount", "count": 1},
        {"name": "r", "exactly": {"deviceClassName": "c", "allocationMode": "ExactCount",
                                  "count": 1}}),
    "first-available-with-empty-class": (
        {"name": "r", "deviceClassName": "", "firstAvailable": [{"name": "s",
                                                                 "deviceClassName": "c"}]},
        {"name": "r", "firstAvailable": [{"name": "s", "deviceClassName": "c"}]}),
    "first-available-only": (
        {"name": "r", "firstAvailable": [{"name": "s", "deviceClassName": "c"}]},
        {"name": "r", "firstAvailable": [{"name": "s", "deviceClassName": "c"}]}),
    "tolerations-only": (
        {"name": "r", "tolerations": [{"key": "k", "operator": "Exists"}]},
        {"name": "r", "exactly": {"tolerations": [{"key": "k", "operator": "Exists"}]}}),
    "admin-access-false": (
        {"name": "r", "deviceClassName": "c", "adminAccess": False},
        {"name": "r", "exactly": {"deviceClassName": "c", "adminAccess": False}}),
    "capacity": (
        {"name": "r", "deviceClassName": "c", "capacity": {"requests": {"m": "1Gi"}}},
        {"name": "r", "exactly": {"deviceClassName": "c",
                                  "capacity": {"requests": {"m": "1Gi"}}}}),
    "already-v1": (
        {"name": "r", "exactly": {"deviceClassName": "c"}},
        {"name": "r", "exactly": {"deviceClassName": "c"}}),
}


@pytest.mark.parametrize("name", list(REQUESTS))
def test_v1beta1_requests(name: str) -> None:
    beta, v1 = REQUESTS[name]

    def claim(version: str, request: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "ResourceClaim", "apiVersion": f"resource.k8s.io/{version}",
                "spec": {"devices": {"requests": [request]}}, "status": {}}

    assert V1BETA1.to_v1(claim("v1beta1", beta)) == claim("v1", v1)
    if name not in ("first-available-with-empty-class", "already-v1"):
        assert V1BETA1.from_v1(claim("v1", v1)) == claim("v1beta1", beta)


def test_list_items_are_converted_by_the_list_kind() -> None:
    served = V1BETA1.from_v1(fixture("resourceslice-list.json"))
    assert served["apiVersion"] == "resource.k8s.io/v1beta1"
    assert "kind" not in served["items"][0]
    assert set(served["items"][0]["spec"]["devices"][0]) == {"name", "basic"}


def test_an_item_without_kind_needs_the_kind_argument() -> None:
    item = fixture("resourceslice-list.json")["items"][0]
    assert V1BETA1.from_v1(item) == item
    served = V1BETA1.from_v1(item, kind="ResourceSlice")
    assert "basic" in served["spec"]["devices"][0]
    assert V1BETA1.to_v1(served, kind="ResourceSlice") == item


def test_watch_events() -> None:
    added = fixture_events("watch-resourceslices.ndjson")[0]
    served = V1BETA1.from_v1(added)
    assert served["type"] == "ADDED"
    assert served["object"]["apiVersion"] == "resource.k8s.io/v1beta1"
    assert "basic" in served["object"]["spec"]["devices"][0]
    assert V1BETA1.to_v1(served) == added
    error = fixture("error-watch-gone.json")
    assert V1BETA1.to_v1(error) == error


def test_the_fake_beta_server_keeps_the_v1_shape_which_reads_unchanged() -> None:
    slice_ = fixture("resourceslice-created.json")
    with FakeApiServer(resource_versions=("v1beta1",), bookmark_interval=None) as server:
        server.seed(slice_)
        api = KubeApi(api_client=server.api_client(), timeout=5)
        resource_api = discover(api)
        listed = resource_api.to_v1(api.list(resource_api.path("resourceslices")))
    assert listed["apiVersion"] == "resource.k8s.io/v1"
    assert listed["items"][0]["spec"] == slice_["spec"]


def test_supported_versions_are_in_preference_order() -> None:
    assert SUPPORTED_VERSIONS == ("v1", "v1beta2", "v1beta1")
