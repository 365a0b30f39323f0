"""Building the desired slices (pure): device JSON, the cut into slices, names, diffs."""

from __future__ import annotations

import re
from typing import Any

import attrs
import pytest

from dra_framework.api.slices import (
    NodePool,
    comparable,
    device_json,
    diff_pool,
    generate_name,
    index_of,
    node_pool_slices,
    split_devices,
)
from dra_framework.models import CounterConsumption, Device, DeviceTaint, Version

from .helpers import DRIVER, NODE, NODE_UID, counter_sets, gpu, gpus, partition

DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def test_device_json_forms_and_empty_fields() -> None:
    device = Device(name="d", attributes={"b": False, "i": 3, "s": "x", "v": Version("1.0.0")},
                    capacity={"mem": "1Gi"},
                    consumes_counters=(CounterConsumption("set", {"m": "1Gi"}),),
                    taints=(DeviceTaint(key="k", effect="NoExecute",
                                        time_added="2026-01-02T03:04:05Z"),))
    assert device_json(device) == {
        "name": "d",
        "attributes": {"b": {"bool": False}, "i": {"int": 3}, "s": {"string": "x"},
                       "v": {"version": "1.0.0"}},
        "capacity": {"mem": {"value": "1Gi"}},
        "consumesCounters": [{"counterSet": "set", "counters": {"m": {"value": "1Gi"}}}],
        "taints": [{"key": "k", "effect": "NoExecute", "timeAdded": "2026-01-02T03:04:05Z"}],
    }
    assert device_json(Device(name="bare")) == {"name": "bare"}


def test_unsupported_attribute_names_device_and_attribute() -> None:
    with pytest.raises(TypeError, match=r"device 'd': attributes\[f\]: unsupported"):
        device_json(Device(name="d", attributes={"f": 1.5}))  # type: ignore[dict-item]


@pytest.mark.parametrize(("kinds", "sizes"), [
    pytest.param("p" * 300, [128, 128, 44], id="plain"),
    pytest.param("a" * 100, [64, 36], id="advanced"),
    pytest.param("p" * 100 + "a" + "p" * 100, [100, 64, 37], id="advanced-after-100-plain"),
    pytest.param("p" * 30 + "a" + "p" * 40, [64, 7], id="advanced-in-a-small-slice"),
    pytest.param("", [], id="none"),
])
def test_split(kinds: str, sizes: list[int]) -> None:
    devices = [{"name": f"d{i}", **({"taints": [{"key": "k"}]} if k == "a" else {})}
               for i, k in enumerate(kinds)]
    chunks = split_devices(devices)
    assert [len(c) for c in chunks] == sizes
    assert [d for c in chunks for d in c] == devices


def test_counter_sets_get_slices_of_their_own() -> None:
    plan = node_pool_slices(driver=DRIVER, node_name=NODE, node_uid=NODE_UID,
                            pool=NodePool(tuple(partition(i) for i in range(10)),
                                          counter_sets(17)))
    kinds = [sorted(c) for c in plan.contents]
    assert kinds == [["devices"], ["sharedCounters"], ["sharedCounters"], ["sharedCounters"]]
    assert [len(c["sharedCounters"]) for c in plan.contents[1:]] == [8, 8, 1]


@pytest.mark.parametrize(("driver", "pool", "index", "expected"), [
    ("gpu.example.com", "node-1", 0, "00000-gpu.example.com-node-1-"),
    ("gpu.example.com", "node-1", 0x1a, "0001a-gpu.example.com-node-1-"),
    ("gpu.example.com", "node-1", 0x123456, "123456-gpu.example.com-node-1-"),
    ("GPU.Example.com", "fabric/rack_1", 2, "00002-gpu.example.com-fabric-rack-1-"),
])
def test_generate_name(driver: str, pool: str, index: int, expected: str) -> None:
    assert generate_name(driver=driver, pool=pool, index=index) == expected


def test_long_generate_name_is_cut_to_a_valid_name() -> None:
    name = generate_name(driver="a" * 50 + ".example.com", pool="n" * 200 + ".x", index=3)
    assert len(name) <= 58 and name.startswith("00003-aaaa") and name.endswith("-")
    assert DNS_SUBDOMAIN.fullmatch(name + "b2c4d")
    assert index_of(name + "b2c4d", driver="a" * 50 + ".example.com", pool="n" * 200 + ".x",
                    limit=4) == 3


def test_index_of_ignores_foreign_names() -> None:
    assert index_of("00001-gpu.example.com-node-1-abcde", driver=DRIVER, pool=NODE,
                    limit=2) == 1
    assert index_of("00001-gpu.example.com-node-1-abcde", driver=DRIVER, pool=NODE,
                    limit=1) is None
    assert index_of("node-1-gpu.example.com-abcde", driver=DRIVER, pool=NODE, limit=9) is None


def stored(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the server would hold: names given, quantities canonical."""
    out = []
    for i, obj in enumerate(objects):
        meta = {"name": obj["metadata"]["generateName"] + f"{i:05d}", "uid": f"u{i}",
                **{k: v for k, v in obj["metadata"].items() if k != "generateName"}}
        out.append({**obj, "metadata": meta})
    return out


def plan(devices: tuple[Device, ...]) -> Any:
    return node_pool_slices(driver=DRIVER, node_name=NODE, node_uid=NODE_UID,
                            pool=NodePool(devices))


def test_diff_of_an_unchanged_pool_is_empty() -> None:
    current = stored(plan(gpus(300)).objects(generation=4))
    changes = diff_pool(plan(gpus(300)), current)
    assert (changes.writes, changes.generation) == (0, 4)


def test_diff_matches_moved_content_to_its_slice() -> None:
    current = stored(plan(gpus(300)).objects(generation=1))
    changes = diff_pool(plan(gpus(300)), list(reversed(current)))
    assert changes.writes == 0


def test_diff_of_one_changed_device() -> None:
    current = stored(plan(gpus(300)).objects(generation=1))
    devices = list(gpus(300))
    devices[5] = attrs.evolve(devices[5], capacity={"memory": "1Gi"})
    changes = diff_pool(plan(tuple(devices)), current)
    assert (changes.generation, changes.update, changes.create, changes.delete) == (
        1, ((0, 0),), (), ())


def test_diff_with_a_new_node_uid_rewrites_the_owner() -> None:
    current = stored(plan(gpus(4)).objects(generation=1))
    moved = node_pool_slices(driver=DRIVER, node_name=NODE, node_uid="other",
                             pool=NodePool(gpus(4)))
    assert diff_pool(moved, current).update == ((0, 0),)


def test_comparable_ignores_empty_fields_and_quantity_spelling() -> None:
    a = {"nodeName": "n", "devices": [{"name": "d", "capacity": {"m": {"value": "1024Mi"}},
                                       "attributes": {}}]}
    b = {"nodeName": "n", "devices": [{"name": "d", "capacity": {"m": {"value": "1Gi"}}}],
         "driver": "ignored"}
    assert comparable(a) == comparable(b)
    assert comparable(a, ignore=frozenset({("devices", "*", "capacity")})) == {
        "nodeName": "n", "devices": [{"name": "d"}]}


def test_same_inventory_same_slices() -> None:
    assert plan(gpus(500)).objects(generation=1) == plan(gpus(500)).objects(generation=1)
    assert gpu(1) == gpus(2)[1]
