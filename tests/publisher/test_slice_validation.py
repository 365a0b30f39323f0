"""Validation before the API sees a slice: every limit, named by device and field.

Each invalid case is also sent to the fake API server (all DRA gates on, v1.35 rules): it
must refuse what the validator refuses, so the two stay in step.  Cases that span slices
(``server=False``) cannot be seen by the server.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from dra_framework.api.rest import ApiError
from dra_framework.api.slices import NodePool, cluster_pool_slices, node_pool_slices
from dra_framework.api.slicevalidation import (
    SliceValidationError,
    parse_quantity,
    pool_problems,
    validate_pool,
)
from dra_framework.errors import DraError
from dra_framework.models import CounterConsumption, CounterSet, Device, DeviceTaint, Pool, Version
from dra_framework.testing.fakeapi import FakeApiServer

from .helpers import DRIVER, NODE, NODE_UID, gpu, kube_api

Slices = list[dict[str, Any]]


def node_slices(*devices: Device, sets: tuple[CounterSet, ...] = (), driver: str = DRIVER,
                node: str = NODE) -> Slices:
    plan = node_pool_slices(driver=driver, node_name=node, node_uid=NODE_UID,
                            pool=NodePool(devices, sets))
    return plan.objects(generation=1)


def cluster_slices(pool: Pool) -> Slices:
    return cluster_pool_slices(driver=DRIVER, pool=pool).objects(generation=1)


def with_spec(change: Callable[[dict[str, Any]], None], base: Slices | None = None) -> Slices:
    out = copy.deepcopy(base or node_slices(gpu(0)))
    change(out[0]["spec"])
    return out


def dev(**fields: Any) -> Device:
    return attrs.evolve(gpu(0), **fields)


def attrs_of(**values: Any) -> Device:
    return Device(name="gpu-3", attributes=values)


def taint(**fields: Any) -> DeviceTaint:
    return DeviceTaint(**{"key": "example.com/t", "effect": "NoSchedule", **fields})


def uses(*names: str, counters: int = 1) -> tuple[CounterConsumption, ...]:
    return tuple(CounterConsumption(n, {f"c{i}": "1" for i in range(counters)}) for n in names)


SETS = (CounterSet("a", {f"c{i}": "1" for i in range(32)}), CounterSet("b", {"c0": "1"}),
        CounterSet("c", {"c0": "1"}))
SELECTOR = {"nodeSelectorTerms": [{"matchFields": [
    {"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}]}
LONG = "x" * 65

CASES: list[Any] = [
    # names
    pytest.param(node_slices(Device(name="GPU_0")), 'device "GPU_0": name: Invalid value',
                 True, id="device-name-not-dns-label"),
    pytest.param(node_slices(Device(name="g" * 64)), "name: Invalid value", True,
                 id="device-name-too-long"),
    pytest.param(node_slices(gpu(0), driver="GPU_Example.com"),
                 'driver: Invalid value: "GPU_Example.com"', True, id="driver-name-invalid"),
    pytest.param(node_slices(gpu(0), driver="d" * 60 + ".com"),
                 "driver: Too long: may not be more than 63 bytes", True, id="driver-too-long"),
    pytest.param(node_slices(gpu(0), node="Node_1"), 'pool "Node_1": name: Invalid value',
                 True, id="pool-name-invalid"),
    pytest.param(cluster_slices(Pool(name="/".join(["p" * 60] * 5), devices=(gpu(0),),
                                     all_nodes=True)),
                 "name: Too long: may not be more than 253 bytes", True, id="pool-name-too-long"),
    # attributes and capacity
    pytest.param(node_slices(attrs_of(model=LONG)),
                 'device "gpu-3": attributes[model].string: Too long: may not be more than 64 '
                 "bytes", True, id="string-value-too-long"),
    pytest.param(node_slices(attrs_of(v=Version("1.2"))),
                 'device "gpu-3": attributes[v].version: Invalid value: "1.2": must be a string '
                 "compatible with semver.org spec 2.0.0", True, id="version-not-semver"),
    pytest.param(node_slices(attrs_of(v=Version("1.2.3-" + "a" * 60))),
                 "attributes[v].version: Too long: may not be more than 64 bytes", True,
                 id="version-too-long"),
    pytest.param(node_slices(attrs_of(**{"a" * 33: 1})),
                 f'device "gpu-3": attributes[{"a" * 33}]: Too long: may not be more than 32 bytes',
                 True, id="attribute-name-too-long"),
    pytest.param(node_slices(attrs_of(**{"1st": 1})), "attributes[1st]: Invalid value: \"1st\"",
                 True, id="attribute-name-not-c-identifier"),
    pytest.param(node_slices(attrs_of(**{"Example_Com/x": 1})),
                 "attributes[Example_Com/x]: Invalid value: \"Example_Com\": the domain", True,
                 id="attribute-domain-invalid"),
    pytest.param(node_slices(attrs_of(**{"d" * 60 + ".com/x": 1})),
                 "Too long: the domain may not be more than 63 bytes", True,
                 id="attribute-domain-too-long"),
    pytest.param(node_slices(attrs_of(**{"a/b/c": 1})), "must not contain more than one slash",
                 True, id="attribute-name-two-slashes"),
    pytest.param(node_slices(Device(name="gpu-0", attributes={f"a{i}": i for i in range(20)},
                                    capacity={f"c{i}": "1" for i in range(13)})),
                 'device "gpu-0": attributes: Invalid value: 33: the total number of attributes '
                 "and capacities must not exceed 32", True, id="too-many-attributes"),
    pytest.param(node_slices(dev(capacity={"memory": "lots"})),
                 'device "gpu-0": capacity[memory].value: Invalid value: "lots"', True,
                 id="capacity-not-a-quantity"),
    pytest.param(node_slices(dev(capacity={"mem-ory": "1"})), "capacity[mem-ory]: Invalid value",
                 True, id="capacity-name-invalid"),
    # devices per slice, counters
    pytest.param(with_spec(lambda s: s.update(devices=[
        {"name": f"d{i}"} for i in range(129)])),
        "devices: Too many: 129: must have at most 128 items", True, id="129-devices"),
    pytest.param(with_spec(lambda s: s.update(devices=[
        {"name": f"d{i}", "taints": [{"key": "k", "effect": "NoSchedule"}]}
        for i in range(65)])),
        "devices: Too many: 65: must have at most 64 items", True, id="65-tainted-devices"),
    pytest.param(with_spec(lambda s: s.update(devices=None, sharedCounters=[
        {"name": f"s{i}", "counters": {"c": {"value": "1"}}} for i in range(9)])),
        "sharedCounters: Too many: 9: must have at most 8 items", True, id="9-counter-sets"),
    pytest.param(with_spec(lambda s: s.update(sharedCounters=[
        {"name": "s", "counters": {"c": {"value": "1"}}}])),
        "only one of `sharedCounters` or `devices` is allowed", True,
        id="devices-and-counters-in-one-slice"),
    pytest.param(node_slices(sets=(CounterSet("a", {f"c{i}": "1" for i in range(33)}),)),
                 'counter set "a": counters: Too many: 33: must have at most 32 items', True,
                 id="33-counters-in-a-set"),
    pytest.param(node_slices(sets=(CounterSet("Set_A", {"c": "1"}),)),
                 'counter set "Set_A": name: Invalid value', True, id="counter-set-name"),
    pytest.param(node_slices(dev(consumes_counters=uses("a", "b", "c")), sets=SETS),
                 'device "gpu-0": consumesCounters: Too many: 3: must have at most 2 items', True,
                 id="3-consumed-counter-sets"),
    pytest.param(node_slices(dev(consumes_counters=uses("a", counters=33)), sets=SETS),
                 "consumesCounters[0].counters: Too many: 33: must have at most 32 items", True,
                 id="33-consumed-counters"),
    pytest.param(node_slices(dev(consumes_counters=uses("a", "a")), sets=SETS),
                 'consumesCounters: Duplicate value: counterSet "a"', True,
                 id="same-counter-set-twice"),
    pytest.param(node_slices(dev(consumes_counters=uses("zz")), sets=SETS),
                 'consumesCounters[0].counterSet: Invalid value: "zz": no such counter set', False,
                 id="unknown-counter-set"),
    # taints
    pytest.param(node_slices(dev(taints=tuple(taint(key=f"k{i}") for i in range(17)))),
                 'device "gpu-0": taints: Too many: 17: must have at most 16 items', True,
                 id="17-taints"),
    pytest.param(node_slices(dev(taints=(taint(effect="Evict"),))),
                 'taints[0].effect: Unsupported value: "Evict"', True, id="taint-effect"),
    pytest.param(node_slices(dev(taints=(taint(key="bad key"),))),
                 'taints[0].key: Invalid value: "bad key"', True, id="taint-key"),
    pytest.param(node_slices(dev(taints=(taint(value="-bad"),))),
                 'taints[0].value: Invalid value: "-bad"', True, id="taint-value"),
    # node selection
    pytest.param(cluster_slices(Pool(name="p", devices=(gpu(0),))),
                 "exactly one of `nodeName`, `nodeSelector`, `allNodes`, "
                 "`perDeviceNodeSelection` is required, found none", True, id="no-node-selection"),
    pytest.param(with_spec(lambda s: s.update(allNodes=True)),
                 "is required, found `nodeName`, `allNodes`", True, id="nodename-and-allnodes"),
    pytest.param(cluster_slices(Pool(name="p", devices=(gpu(0),), node_selector={
        "nodeSelectorTerms": SELECTOR["nodeSelectorTerms"] * 2})),
        "nodeSelector.nodeSelectorTerms: Invalid value: 2: must have exactly one node selector "
        "term", True, id="two-selector-terms"),
    pytest.param(cluster_slices(Pool(name="p", devices=(gpu(0),),
                                     per_device_node_selection=True)),
                 'device "gpu-0": spec: with perDeviceNodeSelection, exactly one', True,
                 id="per-device-selection-missing"),
    pytest.param(cluster_slices(Pool(name="p", all_nodes=True,
                                     devices=(dev(node_name="node-1"),))),
                 'device "gpu-0": nodeName: Invalid value: "node-1": may only be set when', True,
                 id="device-node-without-per-device"),
    # pool
    pytest.param(node_slices(gpu(0), gpu(0)), 'devices: Duplicate value: device "gpu-0"', True,
                 id="duplicate-device-name"),
    pytest.param(node_slices(*[gpu(i) for i in range(128)], gpu(0)),
                 'devices: Duplicate value: device "gpu-0"', False,
                 id="duplicate-device-name-across-slices"),
    pytest.param(with_spec(lambda s: s["pool"].update(generation=-1)),
                 "pool.generation: Invalid value: -1: must be greater than or equal to zero",
                 True, id="negative-generation"),
]


@pytest.mark.parametrize(("objects", "expected", "server_checks"), CASES)
def test_limit(objects: Slices, expected: str, server_checks: bool,
               gated_server: FakeApiServer) -> None:
    problems = pool_problems(objects)
    assert any(expected in p for p in problems), problems
    with pytest.raises(SliceValidationError) as err:
        validate_pool(objects, pool="p")
    assert isinstance(err.value, DraError) and expected in str(err.value)
    if server_checks:
        api = kube_api(gated_server)
        with pytest.raises(ApiError) as refused:
            for obj in objects:
                api.create("/apis/resource.k8s.io/v1/resourceslices", obj)
        assert refused.value.code in (400, 422)  # 400: a quantity that does not decode


def test_valid_slices_pass_here_and_on_the_server(gated_server: FakeApiServer) -> None:
    objects = node_slices(*[dev(name=f"gpu-{i}", taints=(taint(),),
                                consumes_counters=uses("a", "b")) for i in range(64)], sets=SETS)
    objects += cluster_slices(Pool(name="fabric", per_device_node_selection=True, devices=(
        dev(node_selector=SELECTOR), dev(name="gpu-1", all_nodes=True))))
    assert pool_problems(objects[:-1]) == [] and pool_problems(objects[-1:]) == []
    api = kube_api(gated_server)
    for obj in objects:
        api.create("/apis/resource.k8s.io/v1/resourceslices", obj)


def test_all_problems_are_collected() -> None:
    problems = pool_problems(node_slices(attrs_of(model=LONG),
                                         Device(name="gpu-4", attributes={"a" * 33: 1}),
                                         Device(name="Bad")))
    assert [p.split(":")[0] for p in problems] == ['device "gpu-3"', 'device "gpu-4"',
                                                   'device "Bad"']


@pytest.mark.parametrize(("text", "value"), [
    ("80Gi", 80 * 2**30), ("1024Mi", 2**30), ("500m", 0.5), ("1e3", 1000), ("1.5k", 1500),
    ("-2", -2), (".5", 0.5), ("1n", 1e-9),
])
def test_quantities(text: str, value: float) -> None:
    assert float(parse_quantity(text)) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "lots", "1Qi", "1.2.3", "Gi", "1 Gi"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)
