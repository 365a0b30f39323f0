"""Benchmark: publishing the ResourceSlices of 1,024 devices on one node.

Runs ``SlicePublisher`` (the production code: slice building, validation, semantic diff,
real ``kubernetes`` client over HTTP) against ``FakeApiServer``, and prints:

* API writes and wall time of the first publish of 1,024 devices (goal: ≤ 9 writes);
* writes and time of a resync with an unchanged inventory (goal: 0 writes);
* writes and time after one device changed (goal: 1 write, pool generation kept);
* writes and time after a kubelet restart wiped the node's slices (republish).

Writes are counted on the client side, under the publisher: every POST, PUT, PATCH and
DELETE that leaves the process.  The API server runs in a process of its own
(``bench/apiserver.py``), as a real one would (``--api-in-process`` shares this process).

    .venv/bin/python bench/publish.py [--devices 1024] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
from kubernetes import client

from dra_framework.api.apiversions import V1
from dra_framework.api.publisher import PublishResult, SlicePublisher
from dra_framework.api.rest import KubeApi
from dra_framework.api.slices import NodePool
from dra_framework.models import Device, Version
from dra_framework.testing.fakeapi import FakeApiServer

REPO = Path(__file__).resolve().parents[1]
DRIVER = "gpu.example.com"
NODE = "bench-node"


class CountingApi(KubeApi):
    """``KubeApi`` that counts the requests it sends, by HTTP method."""

    def __init__(self, url: str) -> None:
        cfg = client.Configuration()
        cfg.host = url
        super().__init__(api_client=client.ApiClient(cfg), timeout=30)
        self.counts: Counter[str] = Counter()

    def request(self, method: str, url_path: str, **kw: Any) -> dict[str, Any]:
        self.counts[method] += 1
        return super().request(method, url_path, **kw)

    @property
    def writes(self) -> int:
        return sum(n for m, n in self.counts.items() if m != "GET")


@contextmanager
def api_server(in_process: bool) -> Iterator[str]:
    if in_process:
        with FakeApiServer(bookmark_interval=None) as server:
            yield server.url
        return
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "apiserver.py")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def device(i: int) -> Device:
    """A GPU with the attributes and capacities a real driver publishes."""
    return Device(
        name=f"gpu-{i}",
        attributes={
            "index": i, "minor": i % 8, "model": "Example-X100", "migCapable": i % 2 == 0,
            "driverVersion": Version("550.54.15"), "cudaComputeCapability": Version("9.0.0"),
            "gpu.example.com/uuid": f"GPU-{i:08x}-aaaa-bbbb-cccc-dddddddddddd",
            "resource.kubernetes.io/pcieRoot": f"pci0000:{i // 64:02x}",
        },
        capacity={"memory": "80Gi", "cores": "132", "bandwidth": "3352Gi"},
    )


def measure(api: CountingApi, step: Callable[[], PublishResult]) -> tuple[int, float]:
    before = api.writes
    start = time.perf_counter()
    step()
    return api.writes - before, time.perf_counter() - start


def run(url: str, devices: int, repeat: int) -> None:
    api = CountingApi(url)
    api.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                 "metadata": {"name": NODE}})
    inventory = {"pool": NodePool(tuple(device(i) for i in range(devices)))}
    publisher = SlicePublisher(api=api, resource_api=V1, driver=DRIVER, node_name=NODE,
                               pools=lambda: inventory["pool"])
    rows: list[tuple[str, int, float]] = []
    rows.append(("first publish", *measure(api, publisher.reconcile_once)))
    slices = api.list(V1.path("resourceslices"), field_selector=f"spec.nodeName={NODE}")
    count = len(slices["items"])
    noop = [measure(api, publisher.reconcile_once) for _ in range(repeat)]
    rows.append(("unchanged resync", max(w for w, _ in noop),
                 statistics.median(t for _, t in noop)))
    changed = list(inventory["pool"].devices)
    one = len(changed) * 2 // 3  # a device in one of the later slices
    changed[one] = attrs.evolve(changed[one], attributes={**changed[one].attributes,
                                                          "model": "Example-X100-SXM"})
    inventory["pool"] = NodePool(tuple(changed))
    rows.append(("one device changed", *measure(api, publisher.reconcile_once)))
    generations = {s["spec"]["pool"]["generation"] for s in api.list(
        V1.path("resourceslices"), field_selector=f"spec.nodeName={NODE}")["items"]}
    api.request("DELETE", V1.path("resourceslices"),
                query=[("fieldSelector", f"spec.nodeName={NODE}")])
    rows.append(("after a kubelet wipe", *measure(api, publisher.reconcile_once)))

    print(f"{devices} devices on one node -> {count} ResourceSlices; "
          f"pool generation after the one-device change: {sorted(generations)}")
    print(f"{'step':<24}{'API writes':>12}{'time':>12}")
    for label, writes, seconds in rows:
        print(f"{label:<24}{writes:>12}{seconds * 1000:>10.1f}ms")
    print("goals: first publish <= 9 writes, unchanged resync 0, one device changed 1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5, help="unchanged resyncs to time")
    parser.add_argument("--api-in-process", action="store_true",
                        help="run the fake API server in this process")
    args = parser.parse_args()
    with api_server(args.api_in_process) as url:
        run(url, args.devices, args.repeat)


if __name__ == "__main__":
    main()
