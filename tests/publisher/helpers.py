"""Shared pieces of the publisher tests: devices, a publisher factory, slice readers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dra_framework.api.apiversions import V1
from dra_framework.api.publisher import DesiredPools, SlicePublisher
from dra_framework.api.rest import KubeApi
from dra_framework.api.slices import NodePool
from dra_framework.models import CounterConsumption, CounterSet, Device, DeviceTaint, Version
from dra_framework.testing.fakeapi import FakeApiServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-v1.35"
DRIVER = "gpu.example.com"
NODE = "node-1"
NODE_UID = "5f0e3e1c-1d52-4a36-9c1b-0d3f4b1a2c3d"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def gpu(i: int, **fields: Any) -> Device:
    """A device like those of ``resourceslice-created.json`` (gpu-0 … gpu-3 and more)."""
    big = i % 4 < 2
    attributes: dict[str, Any] = {
        "driverVersion": Version("1.2.3"),
        "gpu.example.com/uuid": f"GPU-{i:08d}-aaaa-bbbb-cccc-dddddddddddd",
        "index": i,
        "migCapable": big,
        "model": "Example-X100" if big else "Example-X50",
    }
    capacity = {"cores": "128" if big else "64", "memory": "80Gi" if big else "40Gi"}
    return Device(name=f"gpu-{i}", attributes=fields.pop("attributes", attributes),
                  capacity=fields.pop("capacity", capacity), **fields)


def gpus(count: int, **fields: Any) -> tuple[Device, ...]:
    return tuple(gpu(i, **fields) for i in range(count))


def partition(i: int) -> Device:
    """A partition that consumes counters of set ``gpu-<i // 8>`` and carries a taint."""
    return Device(name=f"part-{i}", attributes={"index": i},
                  consumes_counters=(CounterConsumption(f"gpu-{i // 8}", {"memory": "10Gi"}),),
                  taints=(DeviceTaint(key="example.com/unhealthy", effect="NoSchedule"),)
                  if i % 5 == 0 else ())


def counter_sets(count: int) -> tuple[CounterSet, ...]:
    return tuple(CounterSet(f"gpu-{i}", {"memory": "80Gi"}) for i in range(count))


class Inventory:
    """A mutable desired state for a publisher's ``pools`` callable."""

    def __init__(self, value: DesiredPools) -> None:
        self.value = value

    def __call__(self) -> DesiredPools:
        return self.value


def seed_node(server: FakeApiServer, name: str = NODE, uid: str = NODE_UID) -> None:
    server.seed({"kind": "Node", "apiVersion": "v1", "metadata": {"name": name, "uid": uid}})


def kube_api(server: FakeApiServer) -> KubeApi:
    return KubeApi(api_client=server.api_client(), timeout=5)


def make_publisher(server: FakeApiServer, pools: Callable[[], DesiredPools], *,
                   node: str | None = NODE, api: KubeApi | None = None,
                   **kwargs: Any) -> SlicePublisher:
    kwargs.setdefault("resync_interval", 60.0)
    kwargs.setdefault("retry_initial", 0.05)
    kwargs.setdefault("watch_timeout", 5)
    return SlicePublisher(api=api or kube_api(server), resource_api=V1, driver=DRIVER,
                          node_name=node, pools=pools, **kwargs)


def node_inventory(devices: tuple[Device, ...], sets: tuple[CounterSet, ...] = ()) -> Inventory:
    return Inventory(NodePool(devices, sets))


def slices(server: FakeApiServer, *, pool: str | None = None) -> list[dict[str, Any]]:
    """Stored slices (of one pool), in the order of their names."""
    items = server.objects("resourceslices")
    return [s for s in items if pool is None or s["spec"]["pool"]["name"] == pool]


def device_names(items: list[dict[str, Any]]) -> list[str]:
    return [d["name"] for s in items for d in s["spec"].get("devices") or []]


def pool_numbers(items: list[dict[str, Any]]) -> set[tuple[int, int]]:
    return {(s["spec"]["pool"]["generation"], s["spec"]["pool"]["resourceSliceCount"])
            for s in items}


def wait_for(condition: Callable[[], bool], *, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


@contextmanager
def running(publisher: SlicePublisher) -> Iterator[SlicePublisher]:
    publisher.start()
    try:
        yield publisher
    finally:
        publisher.stop()
