"""What a running ``serve`` does on the API side: slices, claim status, older API versions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kubernetes import client

from dra_framework.models import ClaimRef
from dra_framework.testing.claims import Result, allocated_claim
from dra_framework.testing.fakeapi import FakeApiServer
from dra_framework.testing.harness import PluginHarness, wait_for


def node_slices(api: FakeApiServer, driver: str = "gpu.example.com") -> list[dict[str, Any]]:
    return [s for s in api.objects("resourceslices")
            if s["spec"].get("nodeName") == "node-1" and s["spec"]["driver"] == driver]


def test_serve_publishes_the_node_pool_and_restores_it(short_tmp: Path) -> None:
    with FakeApiServer() as api, PluginHarness(root=short_tmp, api=api) as node:
        (published,) = wait_for("the node's slice", lambda: node_slices(api))
        assert published["spec"]["pool"] == {"name": "node-1", "generation": 1,
                                             "resourceSliceCount": 1}
        owner = published["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("Node", "node-1", True)
        assert owner["uid"] == api.get("nodes", "node-1")["metadata"]["uid"]  # type: ignore[index]
        assert len(published["spec"]["devices"]) == 8
        # the kubelet wipes the node's slices when it starts: they come back
        client.ResourceV1Api(api.api_client()).delete_collection_resource_slice(
            field_selector="spec.nodeName=node-1")
        wait_for("the slice to come back", lambda: node_slices(api))
        writes = api.write_count(resource="resourceslices")
        node.stop()  # shutdown leaves the slices for the next pod
        assert len(node_slices(api)) == 1
        assert api.write_count(resource="resourceslices") == writes
        node.start()  # a restart with the same inventory writes nothing
        node.connect()
        time.sleep(0.3)
        assert api.write_count(resource="resourceslices") == writes


def test_prepared_device_status_is_written_to_the_claim(short_tmp: Path) -> None:
    with FakeApiServer() as api, PluginHarness(
        root=short_tmp, api=api, backend_options={"example": {"status": "true"}}
    ) as node:
        c = node.add_claim(allocated_claim(name="with-status", results=[
            Result(request="gpu", device="gpu-2")]))
        conn = node.connect()
        assert conn.prepare([c])[c.uid].error == ""

        def devices() -> list[dict[str, Any]]:
            obj = api.get("resourceclaims", "with-status", namespace="default") or {}
            return list((obj.get("status") or {}).get("devices") or [])

        (entry,) = wait_for("status.devices", devices)
        assert (entry["driver"], entry["pool"], entry["device"]) == (
            "gpu.example.com", "node-1", "gpu-2")
        assert entry["conditions"][0]["type"] == "Ready"
        assert entry["data"] == {"env": ["GPU_DEVICE_GPU_2=gpu-2"]}
        assert conn.unprepare([c]) == {c.uid: ""}
        wait_for("status.devices cleared", lambda: not devices())


def test_status_written_on_claim_created_with_spaced_parameters(short_tmp: Path) -> None:
    """The server keeps the parameters' bytes as first written (here by Python's json.dumps
    with its default separators); the status write must still go through."""
    import json

    from dra_framework.testing.claims import Config

    with FakeApiServer() as api, PluginHarness(
        root=short_tmp, api=api, backend_options={"example": {"status": "true"}}
    ) as node:
        obj = allocated_claim(name="spaced", results=[Result(request="gpu", device="gpu-1")],
                              configs=[Config(parameters={
                                  "apiVersion": "gpu.example.com/v1", "kind": "GpuConfig",
                                  "sharing": {"strategy": "TimeSlicing"}})])
        api.seed(json.dumps(obj))
        raw_before = api.raw_parameters("resourceclaims", "spaced")
        c = ClaimRef(namespace="default", name="spaced", uid=obj["metadata"]["uid"])
        assert node.connect().prepare([c])[c.uid].error == ""

        def written() -> bool:
            got = api.get("resourceclaims", "spaced", namespace="default") or {}
            return bool((got.get("status") or {}).get("devices"))

        wait_for("status.devices on the spaced claim", written)
        after = api.raw_parameters("resourceclaims", "spaced")
        assert {k: v for k, v in after.items() if k in raw_before} == raw_before
        assert ", " in next(iter(raw_before.values()))  # the spaced bytes are still stored


def test_cluster_serving_only_v1beta1(short_tmp: Path) -> None:
    with FakeApiServer(resource_versions=("v1beta1",)) as api, PluginHarness(
        root=short_tmp, api=api
    ) as node:
        assert node.node is not None
        assert node.node.resource_api.version == "v1beta1"
        c = node.add_claim(allocated_claim(name="old-cluster", results=[
            Result(request="gpu", device="gpu-0")]))
        result = node.connect().prepare([c])[c.uid]
        assert result.error == "" and result.devices[0].device_name == "gpu-0"
        wait_for("slices through v1beta1", lambda: node_slices(api))
        assert any("/resource.k8s.io/v1beta1/" in r.path for r in api.requests)
        assert not any("/resource.k8s.io/v1/" in r.path for r in api.requests)


def test_serve_waits_for_an_unreachable_api_server_at_start(short_tmp: Path) -> None:
    """An API server that is down when the plugin starts is waited for, not a crash."""
    import threading

    with FakeApiServer() as api:
        api.pause(refuse=True)
        harness = PluginHarness(root=short_tmp, api=api)
        resumed = threading.Timer(1.5, api.resume)
        resumed.start()
        started = time.monotonic()
        try:
            with harness as node:
                assert time.monotonic() - started >= 1.0
                c = node.add_claim(allocated_claim(name="after-outage", results=[
                    Result(request="gpu", device="gpu-0")]))
                assert node.connect().prepare([c])[c.uid].error == ""
        finally:
            resumed.cancel()
