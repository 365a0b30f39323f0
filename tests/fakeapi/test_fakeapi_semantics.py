"""Smaller server behaviours: history limits, time formats, dry runs, immutability, seeding."""

from __future__ import annotations

import datetime
import json

import pytest
from kubernetes import client

from dra_framework.testing import _fakeapi_store
from dra_framework.testing.fakeapi import FakeApiServer

from .helpers import body_of, data, fixture, raw_request, slice_body


def test_history_is_bounded(monkeypatch: pytest.MonkeyPatch, server: FakeApiServer,
                            resource_api: client.ResourceV1Api) -> None:
    monkeypatch.setattr(_fakeapi_store, "HISTORY", 10)
    start = int(server.resource_version)
    resource_api.create_resource_slice(slice_body("s"))
    for i in range(20):
        resource_api.patch_resource_slice("s", {"metadata": {"labels": {"i": str(i)}}})
    status, body = raw_request(server, "GET", "/apis/resource.k8s.io/v1/resourceslices"
                                              f"?watch=1&resourceVersion={start}")
    event = json.loads(body)
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410
    status, body = raw_request(server, "GET", "/apis/resource.k8s.io/v1/resourceslices?watch=1"
                               f"&resourceVersion={start + 15}&timeoutSeconds=0.2")
    assert len(body.splitlines()) == 6


def test_times_are_printed_like_go(api_client: client.ApiClient,
                                   resource_api: client.ResourceV1Api,
                                   server: FakeApiServer) -> None:
    moment = datetime.datetime(2026, 11, 26, 18, 30, 5, 123456,
                               tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    leases = client.CoordinationV1Api(api_client)
    lease = data(leases.create_namespaced_lease("default", client.V1Lease(
        metadata=client.V1ObjectMeta(name="l"),
        spec=client.V1LeaseSpec(holder_identity="me", renew_time=moment)),
        _preload_content=False))
    assert lease["spec"]["renewTime"] == "2026-11-26T17:30:05.123456Z"
    server.seed(fixture("resourceclaim-allocated.json"))
    entry = fixture("resourceclaim-status-devices.json")["status"]["devices"][0]
    entry["conditions"][0]["lastTransitionTime"] = moment.isoformat()
    claim = data(resource_api.patch_namespaced_resource_claim_status(
        "gpu-claim", "default", {"status": {"devices": [entry]}}, _preload_content=False))
    assert claim["status"]["devices"][0]["conditions"][0]["lastTransitionTime"] == (
        "2026-11-26T17:30:05Z")


def test_dry_run_stores_nothing(server: FakeApiServer,
                                resource_api: client.ResourceV1Api) -> None:
    before = server.resource_version
    created = resource_api.create_resource_slice(slice_body("s"), dry_run="All")
    assert created.metadata.name == "s"
    assert server.get("resourceslices", "s") is None
    assert server.resource_version == before


def test_template_spec_is_immutable(server: FakeApiServer,
                                    resource_api: client.ResourceV1Api) -> None:
    server.seed(fixture("resourceclaimtemplate.json"))
    with pytest.raises(client.ApiException) as err:
        resource_api.patch_namespaced_resource_claim_template(
            "single-gpu", "default", {"spec": {"metadata": {"labels": {"x": "y"}}}})
    cause = body_of(err.value)["details"]["causes"][0]
    assert cause["field"] == "spec"
    assert cause["message"].startswith(
        'Invalid value: {"ObjectMeta":{"labels":{"from-template":"single-gpu","x":"y"}},'
        '"Spec":{"Devices":{"Requests":[{"Name":"gpu","Exactly":')
    patched = resource_api.patch_namespaced_resource_claim_template(
        "single-gpu", "default", {"metadata": {"labels": {"x": "y"}}})
    assert patched.metadata.labels == {"x": "y"}


def test_device_class_generation(server: FakeApiServer,
                                 resource_api: client.ResourceV1Api) -> None:
    server.seed(fixture("deviceclass.json"))
    patched = resource_api.patch_device_class("gpu.example.com", {"spec": {"selectors": None}})
    assert patched.metadata.generation == 2
    assert patched.spec.selectors is None


def test_seed_keeps_identity_and_lists(server: FakeApiServer) -> None:
    captured = fixture("resourceslice-list.json")
    stored = server.seed(captured)
    item = stored["items"][0]
    original = captured["items"][0]["metadata"]
    assert item["metadata"]["uid"] == original["uid"]
    assert item["metadata"]["creationTimestamp"] == original["creationTimestamp"]
    assert item["metadata"]["resourceVersion"] == server.resource_version
    assert server.objects("ResourceSlice")[0]["metadata"]["uid"] == original["uid"]
    pod = server.seed(fixture("pod-with-claims.json"))
    assert pod == {**fixture("pod-with-claims.json"),
                   "metadata": {**fixture("pod-with-claims.json")["metadata"],
                                "resourceVersion": server.resource_version}}
