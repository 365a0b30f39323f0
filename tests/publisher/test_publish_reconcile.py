"""Reconciling through the real client against the fake API server: shape, no-op, diffs."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest

from dra_framework.api.apiversions import ResourceApi
from dra_framework.api.publisher import SlicePublisher
from dra_framework.api.slices import NodePool
from dra_framework.models import Device, DeviceTaint, Pool, Version
from dra_framework.testing.fakeapi import FakeApiServer

from .helpers import (
    DRIVER,
    NODE,
    NODE_UID,
    Inventory,
    counter_sets,
    device_names,
    fixture,
    gpu,
    gpus,
    kube_api,
    make_publisher,
    node_inventory,
    partition,
    pool_numbers,
    seed_node,
    slices,
)


def test_first_publish_matches_the_captured_slice(server: FakeApiServer) -> None:
    publisher = make_publisher(server, node_inventory(gpus(4)))
    result = publisher.reconcile_once()
    assert (result.created, result.updated, result.deleted) == (1, 0, 0)
    [stored] = slices(server)
    captured = fixture("resourceslice-created.json")
    assert stored["spec"]["driver"] == captured["spec"]["driver"]
    assert stored["spec"]["pool"] == captured["spec"]["pool"]
    assert stored["spec"]["nodeName"] == captured["spec"]["nodeName"] == NODE
    for mine, theirs in zip(stored["spec"]["devices"], captured["spec"]["devices"], strict=True):
        assert mine["name"] == theirs["name"]
        assert mine["capacity"] == theirs["capacity"]
        for key, value in theirs["attributes"].items():
            if key != "gpu.example.com/uuid":
                assert mine["attributes"][key] == value, key
        assert mine["attributes"]["gpu.example.com/uuid"].keys() == {"string"}
    assert stored["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": NODE_UID, "controller": True}]
    assert stored["metadata"]["name"].startswith(f"00000-{DRIVER}-{NODE}-")
    assert server.write_count(resource="resourceslices") == 1


def test_unchanged_resync_writes_nothing(server: FakeApiServer) -> None:
    publisher = make_publisher(server, node_inventory(gpus(300)))
    publisher.reconcile_once()
    before = server.write_count(resource="resourceslices")
    for _ in range(3):
        assert publisher.reconcile_once().writes == 0
    assert server.write_count(resource="resourceslices") == before


def test_a_new_publisher_adopts_what_is_stored(server: FakeApiServer) -> None:
    """A restarted plugin (a new publisher) finds its slices and writes nothing."""
    make_publisher(server, node_inventory(gpus(200))).reconcile_once()
    before = server.write_count()
    assert make_publisher(server, node_inventory(gpus(200))).reconcile_once().writes == 0
    assert server.write_count() == before


def test_quantities_are_compared_by_value(server: FakeApiServer) -> None:
    devices = tuple(attrs.evolve(d, capacity={"memory": "1024Mi", "half": "0.5"})
                    for d in gpus(3))
    publisher = make_publisher(server, node_inventory(devices))
    publisher.reconcile_once()
    assert slices(server)[0]["spec"]["devices"][0]["capacity"] == {
        "half": {"value": "500m"}, "memory": {"value": "1Gi"}}
    assert publisher.reconcile_once().writes == 0


@pytest.mark.parametrize("change", [
    pytest.param(lambda d: attrs.evolve(d, attributes={**d.attributes, "model": "X200"}),
                 id="attribute"),
    pytest.param(lambda d: attrs.evolve(d, capacity={**d.capacity, "memory": "96Gi"}),
                 id="capacity"),
    pytest.param(lambda d: attrs.evolve(d, attributes={**d.attributes,
                                                       "driverVersion": Version("1.3.0")}),
                 id="version"),
])
def test_one_changed_device_rewrites_one_slice(server: FakeApiServer, change: Any) -> None:
    inventory = node_inventory(gpus(300))
    publisher = make_publisher(server, inventory)
    publisher.reconcile_once()
    names = sorted(s["metadata"]["name"] for s in slices(server))
    devices = list(gpus(300))
    devices[200] = change(devices[200])
    inventory.value = NodePool(tuple(devices))
    writes = server.write_count(resource="resourceslices")
    result = publisher.reconcile_once()
    assert (result.created, result.updated, result.deleted) == (0, 1, 0)
    assert server.write_count(resource="resourceslices") == writes + 1
    stored = slices(server)
    assert sorted(s["metadata"]["name"] for s in stored) == names
    assert pool_numbers(stored) == {(1, 3)}, "one updated slice keeps the generation"
    assert publisher.reconcile_once().writes == 0


def test_removed_device_disappears_and_pool_stays_consistent(server: FakeApiServer) -> None:
    inventory = node_inventory(gpus(10))
    publisher = make_publisher(server, inventory)
    publisher.reconcile_once()
    inventory.value = NodePool(tuple(d for d in gpus(10) if d.name != "gpu-3"))
    assert publisher.reconcile_once().writes == 1
    assert "gpu-3" not in device_names(slices(server))
    assert len(device_names(slices(server))) == 9


def test_shrinking_pool_deletes_slices_and_raises_the_generation(server: FakeApiServer) -> None:
    inventory = node_inventory(gpus(300))
    publisher = make_publisher(server, inventory)
    publisher.reconcile_once()
    inventory.value = NodePool(gpus(100))
    result = publisher.reconcile_once()
    assert result.deleted == 2
    stored = slices(server)
    assert pool_numbers(stored) == {(2, 1)}
    assert device_names(stored) == [f"gpu-{i}" for i in range(100)]


def test_300_devices_make_3_consistent_slices(server: FakeApiServer) -> None:
    publisher = make_publisher(server, node_inventory(gpus(300)))
    assert publisher.reconcile_once().created == 3
    stored = sorted(slices(server), key=lambda s: s["metadata"]["name"])
    assert [len(s["spec"]["devices"]) for s in stored] == [128, 128, 44]
    assert pool_numbers(stored) == {(1, 3)}
    assert [s["metadata"]["name"][:6] for s in stored] == ["00000-", "00001-", "00002-"]
    assert device_names(stored) == [f"gpu-{i}" for i in range(300)]


def test_growing_pool_adds_a_slice_and_raises_the_generation(server: FakeApiServer) -> None:
    inventory = node_inventory(gpus(128))
    publisher = make_publisher(server, inventory)
    publisher.reconcile_once()
    inventory.value = NodePool(gpus(129))
    result = publisher.reconcile_once()
    assert (result.created, result.updated) == (1, 1)
    assert pool_numbers(slices(server)) == {(2, 2)}


def test_taints_and_counters_use_64_device_slices_and_own_counter_slices(
        gated_server: FakeApiServer) -> None:
    devices = tuple(partition(i) for i in range(100))
    publisher = make_publisher(gated_server, node_inventory(devices, counter_sets(13)))
    assert publisher.reconcile_once().created == 4
    stored = sorted(slices(gated_server), key=lambda s: s["metadata"]["name"])
    assert [len(s["spec"].get("devices") or []) for s in stored] == [64, 36, 0, 0]
    assert [len(s["spec"].get("sharedCounters") or []) for s in stored] == [0, 0, 8, 5]
    assert pool_numbers(stored) == {(1, 4)}
    first = stored[0]["spec"]["devices"][0]
    assert first["consumesCounters"] == [{"counterSet": "gpu-0",
                                          "counters": {"memory": {"value": "10Gi"}}}]
    assert first["taints"] == [{"key": "example.com/unhealthy", "effect": "NoSchedule"}]
    assert publisher.reconcile_once().writes == 0


def test_empty_inventory_publishes_one_empty_slice(server: FakeApiServer) -> None:
    publisher = make_publisher(server, node_inventory(()))
    assert publisher.reconcile_once().created == 1
    [stored] = slices(server)
    assert "devices" not in stored["spec"] and stored["spec"]["pool"]["resourceSliceCount"] == 1
    assert publisher.reconcile_once().writes == 0


def test_obsolete_pool_and_stray_slices_are_deleted(server: FakeApiServer) -> None:
    stray = fixture("resourceslice-created.json")
    stray["metadata"] = {"name": "old-node-1-gpu.example.com-x"}
    stray["spec"]["pool"]["name"] = "renamed"
    server.seed(stray)
    other = fixture("resourceslice-created.json")
    other["metadata"] = {"name": "other-driver"}
    other["spec"]["driver"] = "nic.example.com"
    server.seed(other)
    publisher = make_publisher(server, node_inventory(gpus(2)))
    result = publisher.reconcile_once()
    assert (result.created, result.deleted) == (1, 1)
    assert sorted(s["spec"]["driver"] for s in slices(server)) == [DRIVER, "nic.example.com"]


def test_dropped_fields_are_reported_once_without_an_update_loop(
        server: FakeApiServer, caplog: pytest.LogCaptureFixture) -> None:
    taint = DeviceTaint(key="example.com/maintenance", effect="NoSchedule")
    publisher = make_publisher(server, node_inventory(gpus(4, taints=(taint,))))
    with caplog.at_level(logging.WARNING, logger="dra_framework.api.publisher"):
        assert publisher.reconcile_once().created == 1
        writes = server.write_count()
        for _ in range(3):
            assert publisher.reconcile_once().writes == 0
    assert server.write_count() == writes
    warnings = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1
    assert "spec.devices[*].taints" in warnings[0]
    assert "taints" not in slices(server)[0]["spec"]["devices"][0]


def test_taint_time_set_by_the_server_is_kept(gated_server: FakeApiServer) -> None:
    """A taint without timeAdded matches a stored one that has a time, and keeps it."""
    taint = DeviceTaint(key="example.com/maintenance", effect="NoExecute")
    inventory = node_inventory(gpus(2, taints=(taint,)))
    publisher = make_publisher(gated_server, inventory)
    publisher.reconcile_once()
    stored = slices(gated_server)[0]
    for device in stored["spec"]["devices"]:
        device["taints"][0]["timeAdded"] = "2026-11-26T16:41:08Z"
    gated_server.seed(stored)
    assert publisher.reconcile_once().writes == 0
    devices = list(gpus(2, taints=(taint,)))
    devices[0] = attrs.evolve(devices[0], attributes={"index": 7})
    inventory.value = NodePool(tuple(devices))
    assert publisher.reconcile_once().updated == 1
    kept = slices(gated_server)[0]["spec"]["devices"][1]["taints"][0]
    assert kept["timeAdded"] == "2026-11-26T16:41:08Z"


ALL = {"allNodes": True}
SELECTOR = {"nodeSelectorTerms": [{"matchExpressions": [
    {"key": "example.com/rack", "operator": "In", "values": ["r1"]}]}]}


@pytest.mark.parametrize(("pool", "expected"), [
    pytest.param(Pool(name="seats", devices=gpus(3), all_nodes=True), ALL, id="allNodes"),
    pytest.param(Pool(name="rack-1", devices=gpus(3), node_selector=SELECTOR),
                 {"nodeSelector": SELECTOR}, id="nodeSelector"),
    pytest.param(Pool(name="fabric", per_device_node_selection=True, devices=(
        attrs.evolve(gpu(0), node_name="node-1"), attrs.evolve(gpu(1), all_nodes=True),
        attrs.evolve(gpu(2), node_selector=SELECTOR))), {"perDeviceNodeSelection": True},
                 id="perDeviceNodeSelection"),
])
def test_cluster_pools(gated_server: FakeApiServer, pool: Pool,
                       expected: dict[str, Any]) -> None:
    node_local = fixture("resourceslice-created.json")
    node_local["metadata"] = {"name": "node-local"}
    gated_server.seed(node_local)
    publisher = make_publisher(gated_server, Inventory([pool]), node=None)
    assert publisher.reconcile_once().created == 1
    [stored] = slices(gated_server, pool=pool.name)
    spec = stored["spec"]
    assert {k: spec[k] for k in ("nodeName", "nodeSelector", "allNodes",
                                 "perDeviceNodeSelection") if k in spec} == expected
    assert "ownerReferences" not in stored["metadata"]
    if pool.per_device_node_selection:
        devices = spec["devices"]
        assert (devices[0]["nodeName"], devices[1]["allNodes"]) == ("node-1", True)
        assert devices[2]["nodeSelector"] == SELECTOR
    assert publisher.reconcile_once().writes == 0
    assert gated_server.get("resourceslices", "node-local") is not None, "node-local kept"


def test_cluster_pool_removed_from_the_backend_is_deleted(gated_server: FakeApiServer) -> None:
    inventory = Inventory([Pool(name="a", devices=gpus(1), all_nodes=True),
                           Pool(name="b", devices=gpus(1), all_nodes=True)])
    publisher = make_publisher(gated_server, inventory, node=None)
    assert publisher.reconcile_once().created == 2
    inventory.value = [Pool(name="a", devices=gpus(1), all_nodes=True)]
    assert publisher.reconcile_once().deleted == 1
    assert [s["spec"]["pool"]["name"] for s in slices(gated_server)] == ["a"]


def test_invalid_pool_is_refused_and_others_still_published(
        gated_server: FakeApiServer, caplog: pytest.LogCaptureFixture) -> None:
    bad = Device(name="gpu-3", attributes={"model": "x" * 65})
    inventory = Inventory([Pool(name="good", devices=gpus(2), all_nodes=True),
                           Pool(name="bad", devices=(bad,), all_nodes=True)])
    publisher = make_publisher(gated_server, inventory, node=None)
    with caplog.at_level(logging.ERROR, logger="dra_framework.api.publisher"):
        result = publisher.reconcile_once()
    assert result.invalid_pools == ["bad"] and result.created == 1
    assert [s["spec"]["pool"]["name"] for s in slices(gated_server)] == ["good"]
    assert ('device "gpu-3": attributes[model].string: Too long: may not be more than 64 bytes'
            in caplog.text)
    inventory.value = [Pool(name="good", devices=gpus(2), all_nodes=True),
                       Pool(name="bad", devices=(gpu(3),), all_nodes=True)]
    assert publisher.reconcile_once().created == 1, "publishes once the device is fixed"


@pytest.mark.parametrize("version", ["v1beta2", "v1beta1"])
def test_older_served_version_is_used_and_converted(version: str) -> None:
    with FakeApiServer(bookmark_interval=None, resource_versions=(version,)) as old:
        seed_node(old)
        publisher = SlicePublisher(api=kube_api(old), resource_api=ResourceApi(version),
                                   driver=DRIVER, node_name=NODE,
                                   pools=node_inventory(gpus(200)))
        assert publisher.reconcile_once().created == 2
        assert {r.path for r in old.requests if r.method == "POST"} == {
            f"/apis/resource.k8s.io/{version}/resourceslices"}
        assert publisher.reconcile_once().writes == 0


def test_pool_listed_twice_is_reported(gated_server: FakeApiServer) -> None:
    inventory = Inventory([Pool(name="a", devices=gpus(1), all_nodes=True),
                           Pool(name="a", devices=gpus(2), all_nodes=True)])
    result = make_publisher(gated_server, inventory, node=None).reconcile_once()
    assert result.invalid_pools == ["a"] and result.created == 1
    assert device_names(slices(gated_server)) == ["gpu-0"]


@pytest.mark.parametrize(("node", "value"), [
    pytest.param(NODE, [Pool(name="a", all_nodes=True)], id="node-local-given-pools"),
    pytest.param(None, NodePool(gpus(1)), id="cluster-given-a-node-pool"),
])
def test_wrong_kind_of_pools_is_a_type_error(server: FakeApiServer, node: str | None,
                                             value: Any) -> None:
    with pytest.raises(TypeError, match="pools\\(\\) returned"):
        make_publisher(server, Inventory(value), node=node).reconcile_once()
