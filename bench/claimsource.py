"""Benchmark: what a claim read costs on the prepare path, per claim source.

The fake API server runs in a process of its own (``bench/apiserver.py``), as a real one would;
everything else (the sources' watch and reader threads included) runs here, as in the plugin.
Prints:

* microseconds per ``ClaimReader.get`` on a kept-alive connection (the live read: the only path
  of ``--claim-source get``, the fallback of the others), next to the same GET sent the way the
  ``kubernetes`` client sends it (``param_serialize`` and urllib3's pool manager, the body
  decoded by ``jsondecode``), and the client's CPU time per read;
* for each claim source, the latency of ``get`` for a claim whose pod was just created, in the
  scheduler's order (pod created, claim allocated and reserved for it, pod bound to the node),
  right after the binding returned and 10 ms later, and how many of those reads were answered
  from memory; then ``get`` of a claim the source already holds.

    .venv/bin/python bench/claimsource.py [--quick]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client

from dra_framework.api import jsondecode
from dra_framework.api.claimcache import ClaimCache
from dra_framework.api.claimreader import ClaimReader
from dra_framework.api.podclaims import PodClaimCache
from dra_framework.api.rest import KubeApi
from dra_framework.models import ClaimRef
from dra_framework.testing.claims import Result, allocated_claim, bound_pod

DRIVER = "gpu.example.com"
CLAIMS = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims"
PODS = "/api/v1/namespaces/default/pods"


@contextmanager
def apiserver() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("apiserver.py"))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def connect(url: str) -> KubeApi:
    cfg = client.Configuration()
    cfg.host = url
    return KubeApi(api_client=client.ApiClient(cfg), timeout=10)


def create_claim(api: KubeApi, name: str, pod: tuple[str, str]) -> ClaimRef:
    """Create the claim, then allocate and reserve it for ``pod`` as the scheduler does."""
    obj = allocated_claim(name=name, results=[Result(request="gpu", device="gpu-0")], pod=pod)
    status = obj.pop("status")
    del obj["metadata"]["uid"]
    created = api.create(CLAIMS, obj)
    created["status"] = status
    api.replace(f"{CLAIMS}/{name}/status", created)
    return ClaimRef(namespace="default", name=name, uid=created["metadata"]["uid"])


def create_pod(api: KubeApi, name: str, claim: str) -> str:
    """Create a pod that uses ``claim``, not yet bound to a node; returns its UID."""
    pod = bound_pod(name=name, claims=[claim])
    del pod["status"], pod["spec"]["nodeName"], pod["metadata"]["uid"]
    uid: str = api.create(PODS, pod)["metadata"]["uid"]
    return uid


def bind(api: KubeApi, name: str) -> None:
    api.create(f"{PODS}/{name}/binding", {"apiVersion": "v1", "kind": "Binding",
                                          "metadata": {"name": name},
                                          "target": {"kind": "Node", "name": "node-1"}})


def per_call(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """Best of five runs: microseconds of wall time and of this process's CPU per call."""
    wall, cpu = [], []
    for _ in range(5):
        w, c = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        wall.append((time.perf_counter() - w) / n * 1e6)
        cpu.append((time.process_time() - c) / n * 1e6)
    return min(wall), min(cpu)


def client_get(api_client: client.ApiClient, path: str) -> Callable[[], Mapping[str, Any]]:
    """One GET the way the ``kubernetes`` client sends it: what a live read cost before."""
    pool = api_client.rest_client.pool_manager

    def get() -> Mapping[str, Any]:
        _, url, headers, _, _ = api_client.param_serialize(
            method="GET", resource_path=path, query_params=[],
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        resp = pool.request("GET", url, headers=headers, preload_content=False, retries=False,
                            timeout=urllib3.Timeout(total=10))
        data = resp.read()
        resp.release_conn()
        result: Mapping[str, Any] = jsondecode.loads(data)
        return result

    return get


def live_read(url: str, n: int) -> None:
    api = connect(url)
    claim = create_claim(api, "live", ("pod-live", "u-live"))
    reader = ClaimReader(api=api)
    old = client_get(api.api_client, f"{CLAIMS}/live")
    for _ in range(200):
        reader.get(claim)
        old()
    print("live read of one claim (kept-alive connection):")
    for what, fn in (("the client's request path", old),
                     ("ClaimReader.get", functools.partial(reader.get, claim))):
        wall, cpu = per_call(fn, n)
        print(f"  {what:30} {wall:7.1f} us   (client CPU {cpu:6.1f} us)")


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


def sources(url: str, n: int) -> None:
    print(f"get of a claim whose pod was just bound (n={n} each):")
    print(f"  {'source':8} {'after':>7} {'p50 us':>9} {'p99 us':>9} {'from memory':>12}")
    for name in ("pods", "cluster", "get"):
        api = connect(url)
        source: Any
        holder: Any = None
        if name == "pods":
            holder = PodClaimCache(api=api, node_name="node-1", drivers=[DRIVER]).start()
            source = holder.for_driver(DRIVER)
        elif name == "cluster":
            holder = source = ClaimCache(api=api, driver=DRIVER, node_name="node-1").start()
        else:
            source = ClaimReader(api=api)
        if holder is not None:
            assert holder.wait_synced(10)
        writer = connect(url)
        try:
            for delay in (0.0, 0.010):
                samples, hits = [], 0
                for i in range(n):  # the scheduler's order: reserve the claim, bind the pod
                    pod = f"{name}-{delay}-{i}"
                    uid = create_pod(writer, pod, f"c-{pod}")
                    claim = create_claim(writer, f"c-{pod}", (pod, uid))
                    bind(writer, pod)
                    if delay:
                        time.sleep(delay)
                    before = holder.hits if holder is not None else 0
                    t = time.perf_counter()
                    source.get(claim, timeout=5)
                    samples.append(time.perf_counter() - t)
                    hits += (holder.hits if holder is not None else 0) - before
                print(f"  {name:8} {delay * 1000:5.0f}ms {pct(samples, .5):9.1f} "
                      f"{pct(samples, .99):9.1f} {hits:7d}/{n}")
            if holder is not None:
                held = ClaimRef(namespace="default", name=claim.name, uid=claim.uid)
                wall, _ = per_call(functools.partial(source.get, held), 2000)
                print(f"  {name:8} {'held':>7} {wall:9.1f}  (a claim the source holds)")
        finally:
            if holder is not None:
                holder.stop(timeout=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, urllib3 "
          f"{getattr(urllib3, '__version__', '?')}; API server in its own process")
    with apiserver() as url:
        live_read(url, 200 if args.quick else 2000)
        sources(url, 50 if args.quick else 300)


if __name__ == "__main__":
    main()
