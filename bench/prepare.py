"""Benchmark: prepare latency and throughput through the real kubelet socket.

Runs the production plugin stack in-process (``PluginHarness``): the example backend, claims
read by the real ``kubernetes`` client from ``FakeApiServer`` over HTTP, answers over a unix
socket to the kubelet-wire client, which runs in a process of its own (``bench/kubelet.py``)
as the kubelet does and times each call.  Prints:

* p50/p99 of one NodePrepareResources with 1 claim of 1 device (API read included);
* p50/p99 of a 64-claim batch;
* prepare+unprepare cycles per second;
* p50/p99 per-claim prepare with 10, 1,000 and 10,000 claims already prepared;

first with one API read per claim (``--no-claim-cache``), then with the claims answered from
the plugin's watch cache (the first three figures again).

The API server runs in a process of its own (``bench/apiserver.py``), as a real one would, and
claims are created in it through the API (``--api-in-process`` shares this process instead).

The checkpoint lives on disk (``--state-root``, default ``.bench-work/`` in the repository);
CDI specs go to tmpfs when /dev/shm exists, as /var/run/cdi is tmpfs on a node
(``--cdi-on-disk`` to change).

    .venv/bin/python bench/prepare.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client

from dra_framework.models import ClaimRef
from dra_framework.testing.claims import Result, allocated_claim
from dra_framework.testing.fakeapi import FakeApiServer
from dra_framework.testing.harness import PluginHarness, wait_for

REPO = Path(__file__).resolve().parents[1]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class RemoteApi:
    """The parts of ``FakeApiServer`` the harness needs, for a server in another process."""

    def __init__(self, url: str) -> None:
        self.url = url
        cfg = client.Configuration()
        cfg.host = url
        self._api = client.ResourceV1Api(client.ApiClient(cfg))
        self._core = client.CoreV1Api(client.ApiClient(cfg))

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: bench\n"
            f"clusters: [{{name: bench, cluster: {{server: '{self.url}'}}}}]\n"
            "users: [{name: bench, user: {}}]\n"
            "contexts: [{name: bench, context: {cluster: bench, user: bench}}]\n")
        return path

    def get(self, resource: str, name: str, namespace: str | None = None) -> Any:
        assert resource == "nodes"
        try:
            return self._core.read_node(name, _preload_content=False)
        except client.exceptions.ApiException:
            return None

    def seed(self, obj: Mapping[str, Any]) -> None:
        """Create the object; a claim's status (allocation) is written after, as by the
        scheduler."""
        if obj.get("kind") == "Node":
            self._core.create_node(dict(obj), _preload_content=False)
            return
        meta = obj["metadata"]
        body = {k: v for k, v in obj.items() if k != "status"}
        body["metadata"] = {k: v for k, v in meta.items() if k != "uid"}
        created = self._api.create_namespaced_resource_claim(
            meta["namespace"], body, _preload_content=False)
        import json
        stored = json.loads(created.data)
        stored["status"] = obj["status"]
        self._api.replace_namespaced_resource_claim_status(
            meta["name"], meta["namespace"], stored, _preload_content=False)
        meta["uid"] = stored["metadata"]["uid"]


@contextmanager
def remote_api() -> Iterator[RemoteApi]:
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("apiserver.py"))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield RemoteApi(proc.stdout.readline().strip())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


class Kubelet:
    """``bench/kubelet.py`` in its own process: prepares timed where the kubelet would."""

    def __init__(self, registry_dir: Path, driver: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("kubelet.py")), str(registry_dir),
             driver], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self._in, self._out = self.proc.stdin, self.proc.stdout
        assert "registered" in json.loads(self._out.readline())

    def call(self, op: str, claims: list[ClaimRef]) -> float:
        self._in.write(json.dumps({"op": op, "claims": [[c.namespace, c.name, c.uid]
                                                         for c in claims]}) + "\n")
        self._in.flush()
        answer = json.loads(self._out.readline())
        assert not answer["errors"], answer["errors"][:3]
        elapsed: float = answer["elapsed"]
        return elapsed

    def close(self) -> None:
        self._in.close()
        self.proc.wait(timeout=10)


class Bench:
    def __init__(self, harness: PluginHarness, kubelet: Kubelet) -> None:
        self.h = harness
        self.kubelet = kubelet
        self.n = 0

    def claims(self, count: int, *, device: Callable[[int], str]) -> list[ClaimRef]:
        out = []
        for _ in range(count):
            self.n += 1
            out.append(self.h.add_claim(allocated_claim(
                name=f"bench-{self.n}", results=[Result(request="gpu", device=device(self.n))])))
        return out

    def prepare(self, claims: list[ClaimRef]) -> float:
        return self.kubelet.call("prepare", claims)

    def unprepare(self, claims: list[ClaimRef]) -> float:
        return self.kubelet.call("unprepare", claims)


def measure(b: Bench, *, scale: float, cached: bool) -> None:
    """Single prepares, cycles and 64-claim batches; with ``cached`` the claims are in the
    plugin's claim cache before they are prepared."""
    spare = lambda n: "gpu-11999"  # noqa: E731  one device, prepared and unprepared in turn

    def ready(claims: list[ClaimRef]) -> list[ClaimRef]:
        if cached:
            node = b.h.node
            assert node is not None
            cache = node.caches[0]
            wait_for("the claims to reach the cache", lambda: all(
                cache.cached(c.namespace, c.name) for c in claims), timeout=30, interval=0.01)
        return claims

    for c in ready(b.claims(50, device=spare)):
        b.prepare([c]); b.unprepare([c])  # noqa: E702  warm-up

    n = int(1000 * scale)
    single, cycle = [], []
    for _ in range(0, n, 100):
        for c in ready(b.claims(100, device=spare)):
            t = time.perf_counter()
            single.append(b.prepare([c]))
            b.unprepare([c])
            cycle.append(time.perf_counter() - t)
    source = "from the claim cache" if cached else "API read included"
    print(f"  prepare 1 claim/1 device    p50 {pct(single, .5):6.2f} ms  "
          f"p99 {pct(single, .99):6.2f} ms  (n={len(single)}, {source})")
    print(f"  prepare+unprepare cycles    {1 / statistics.mean(cycle):7.0f} /s")

    batches = []
    for _ in range(int(50 * scale) or 5):
        batch = ready(b.claims(64, device=lambda i: f"gpu-{11000 + i % 64}"))
        batches.append(b.prepare(batch))
        b.unprepare(batch)
    print(f"  prepare 64-claim batch      p50 {pct(batches, .5):6.2f} ms  "
          f"p99 {pct(batches, .99):6.2f} ms  (n={len(batches)})")


def flatness(b: Bench, *, scale: float) -> None:
    """Per-claim prepare with 10, 1,000 and 10,000 claims already prepared."""
    spare = lambda n: "gpu-11999"  # noqa: E731
    prepared = 0
    for target in (10, 1000, 10000):
        while prepared < target:
            count = min(64, target - prepared)
            b.prepare([b.h.add_claim(allocated_claim(
                name=f"held-{prepared + k}",
                results=[Result(request="gpu", device=f"gpu-{prepared + k}")]))
                for k in range(count)])
            prepared += count
        samples = []
        for c in b.claims(int(300 * scale), device=spare):
            samples.append(b.prepare([c]))
            b.unprepare([c])
        print(f"  with {target:>6} prepared      p50 {pct(samples, .5):6.2f} ms  "
              f"p99 {pct(samples, .99):6.2f} ms")


def run(args: argparse.Namespace) -> None:
    scale = 0.2 if args.quick else 1.0
    Path(args.state_root).mkdir(parents=True, exist_ok=True)
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus; API server in "
          + ("this process" if args.api_in_process else "its own process"))
    for cached in (False, True):
        state_root = Path(tempfile.mkdtemp(prefix="dra-bench-", dir=args.state_root))
        cdi = Path(tempfile.mkdtemp(prefix="dra-bench-cdi-", dir="/dev/shm")) if (
            Path("/dev/shm").is_dir() and not args.cdi_on_disk) else state_root / "cdi"
        print(("claim cache (watch):" if cached else "one GET per claim (--no-claim-cache):")
              + f" state {state_root}, cdi {cdi}")
        api_context = FakeApiServer() if args.api_in_process else remote_api()
        with api_context as api, PluginHarness(
            root=state_root, api=api,  # type: ignore[arg-type]
            backend_options={"example": {"devices": "12000"}}, cdi_root=cdi,
            claim_cache=cached, publish=False,
        ) as h:
            kubelet = Kubelet(h.registry_dir, "gpu.example.com")
            try:
                b = Bench(h, kubelet)
                measure(b, scale=scale, cached=cached)
                if not cached:
                    flatness(b, scale=scale)
            finally:
                kubelet.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--state-root", default=str(REPO / ".bench-work"),
                        help="where the checkpoint lives (a disk, as /var/lib/kubelet is)")
    parser.add_argument("--cdi-on-disk", action="store_true")
    parser.add_argument("--api-in-process", action="store_true")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
