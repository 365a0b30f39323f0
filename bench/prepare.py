"""Benchmark: what a prepare costs through the real kubelet socket, and where the time goes.

Runs the production plugin stack in-process (``PluginHarness``): the example backend, claims
read through the real ``kubernetes`` client's connection from ``FakeApiServer`` (in a process of
its own, as a real API server is; ``--api-in-process`` shares this one), answers over a unix
socket to a kubelet stand-in in a process of its own (``bench/kubelet.py``), which times each
call as the kubelet would.  Prints, for the claim source chosen (``--claim-source``, default
``pods``, the plugin's default):

* the floor: one bare gRPC unary call over a unix socket between the same two processes;
* a fresh prepare of 1 claim/1 device, p50/p99, and how far above the floor;
* a prepare of a claim already prepared, an unprepare, 8 and 64 claims in one call;
* prepare+unprepare cycles per second;
* where a fresh prepare's time goes: the mean of each stage the plugin measures
  (``dra_framework_prepare_stage_seconds``), the rest of the gRPC handler, and the transport
  (what the stand-in measured beyond the handler);
* a fresh prepare with 10, 1,000 and 10,000 claims already prepared;
* the goals, each met or missed.

A claim is created through the API as the scheduler leaves it (allocated, reserved for a pod),
with that pod bound to the node, and prepared once the plugin's claim source holds it (for
``get``, at once), as the kubelet calls only after the pod is bound and its claims allocated.

The checkpoint lives on disk (``--state-root``, default ``.bench-work/`` in the repository);
CDI specs go to tmpfs when /dev/shm exists, as /var/run/cdi is tmpfs on a node
(``--cdi-on-disk`` to change), and so does the example backend's simulated device setup, as a
device's state lives in the kernel, not in a file (``--setup-on-disk`` puts it beside the
checkpoint: a file created on this disk costs ~0.13 ms, which then dominates).

    .venv/bin/python bench/prepare.py [--quick] [--claim-source pods|cluster|get]
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
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client
from prometheus_client import REGISTRY

from dra_framework.metrics import STAGES
from dra_framework.models import ClaimRef
from dra_framework.testing.claims import Result, allocated_claim, bound_pod
from dra_framework.testing.fakeapi import FakeApiServer
from dra_framework.testing.harness import PluginHarness, wait_for

REPO = Path(__file__).resolve().parents[1]
DRIVER = "gpu.example.com"


def pct(samples: list[float], q: float) -> float:
    """The ``q`` quantile of ``samples`` (seconds), in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class RemoteApi:
    """The parts of ``FakeApiServer`` the harness and this benchmark need, for a server in
    another process."""

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

    def seed(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create the object and return it as stored; a claim's status (allocation) is written
        after, as by the scheduler."""
        if obj.get("kind") == "Node":
            self._core.create_node(dict(obj), _preload_content=False)
            return dict(obj)
        meta = obj["metadata"]
        if obj.get("kind") == "Pod":
            created = self._core.create_namespaced_pod(meta["namespace"], dict(obj),
                                                       _preload_content=False)
            pod: dict[str, Any] = json.loads(created.data)
            return pod
        body = {k: v for k, v in obj.items() if k != "status"}
        body["metadata"] = {k: v for k, v in meta.items() if k != "uid"}
        created = self._api.create_namespaced_resource_claim(
            meta["namespace"], body, _preload_content=False)
        stored = json.loads(created.data)
        stored["status"] = obj["status"]
        self._api.replace_namespaced_resource_claim_status(
            meta["name"], meta["namespace"], stored, _preload_content=False)
        meta["uid"] = stored["metadata"]["uid"]
        return stored

    def bind(self, pod: Mapping[str, Any], node_name: str) -> None:
        """Bind ``pod`` to ``node_name`` as the scheduler does (``pods/NAME/binding``)."""
        meta = pod["metadata"]
        self._core.create_namespaced_pod_binding(
            meta["name"], meta["namespace"], {
                "apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node_name}},
            _preload_content=False)


def schedule(api: Any, *, name: str, results: list[Result]) -> ClaimRef:
    """What the scheduler leaves for the kubelet: a pod, its claim allocated on node-1 and
    reserved for it, then the pod bound to node-1 (the order of kube-scheduler's binding
    cycle).  ``api`` is a ``FakeApiServer`` or a ``RemoteApi``."""
    pod = bound_pod(name=f"pod-{name}", uid=str(uuid.uuid4()), claims=[name])
    del pod["spec"]["nodeName"]
    stored = api.seed(pod)
    claim = allocated_claim(name=name, results=results,
                            pod=(stored["metadata"]["name"], stored["metadata"]["uid"]))
    api.seed(claim)  # the API server's UID is written back into ``claim``
    ref = ClaimRef(namespace="default", name=name, uid=claim["metadata"]["uid"])
    if isinstance(api, RemoteApi):
        api.bind(stored, "node-1")
    else:
        api.seed({**stored, "spec": {**stored["spec"], "nodeName": "node-1"}})
    return ref


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

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        self._in.write(json.dumps(command) + "\n")
        self._in.flush()
        answer: dict[str, Any] = json.loads(self._out.readline())
        return answer

    def call(self, op: str, claims: list[ClaimRef]) -> float:
        answer = self._ask({"op": op, "claims": [[c.namespace, c.name, c.uid] for c in claims]})
        assert not answer["errors"], answer["errors"][:3]
        elapsed: float = answer["elapsed"]
        return elapsed

    def floor(self, n: int) -> list[float]:
        samples: list[float] = self._ask({"op": "floor", "n": n})["samples"]
        return samples

    def close(self) -> None:
        self._in.close()
        self.proc.wait(timeout=10)


def stage_sums() -> dict[str, float]:
    """Seconds spent so far in each prepare stage, and in the prepare RPC handler."""
    sums = {stage: REGISTRY.get_sample_value("dra_framework_prepare_stage_seconds_sum",
                                             {"driver": DRIVER, "stage": stage}) or 0.0
            for stage in STAGES}
    sums["handler"] = REGISTRY.get_sample_value(
        "dra_framework_rpc_seconds_sum",
        {"driver": DRIVER, "method": "NodePrepareResources"}) or 0.0
    return sums


class Bench:
    def __init__(self, harness: PluginHarness, kubelet: Kubelet, source: str) -> None:
        self.h = harness
        self.kubelet = kubelet
        self.source = source
        self.n = 0

    def claims(self, devices: list[str]) -> list[ClaimRef]:
        """A claim of each device, allocated on this node, used by a pod bound to it, and held
        by the plugin's claim source (as when the kubelet asks)."""
        out = []
        for device in devices:
            self.n += 1
            out.append(schedule(self.h.api, name=f"bench-{self.n}",
                                results=[Result(request="gpu", device=device)]))
        if self.source != "get":
            node = self.h.node
            assert node is not None
            source = node.claim_sources[0]
            wait_for("the claims to reach the claim source", lambda: all(
                source.holds(c) for c in out), timeout=60, interval=0.002)
        # the kubelet calls once the pod's sandbox is on its way, well after the binding:
        # let the watch events of these pods settle, so that what is timed is the prepare
        time.sleep(0.2)
        return out

    def prepare(self, claims: list[ClaimRef]) -> float:
        return self.kubelet.call("prepare", claims)

    def unprepare(self, claims: list[ClaimRef]) -> float:
        return self.kubelet.call("unprepare", claims)


SPARE = "gpu-11999"  # one device, prepared and unprepared in turn


def measure(b: Bench, *, scale: float) -> dict[str, float]:
    """Every figure but the flatness; returns the p50s the goals are stated on."""
    for c in b.claims([SPARE] * 50):
        b.prepare([c]); b.unprepare([c])  # noqa: E702  warm-up

    floor = b.kubelet.floor(int(2000 * scale))
    n = int(1000 * scale)
    fresh, again, unprepare, cycle = [], [], [], []
    before = stage_sums()
    for _ in range(0, n, 100):
        for c in b.claims([SPARE] * 100):
            t = time.perf_counter()
            fresh.append(b.prepare([c]))
            cycle.append(time.perf_counter() - t)
            again.append(b.prepare([c]))
            t = time.perf_counter()
            unprepare.append(b.unprepare([c]))
            cycle[-1] += time.perf_counter() - t
    spent = {key: value - before[key] for key, value in stage_sums().items()}
    # what the repeated prepares added to the handler and answer sums, measured alone
    held = b.claims([f"gpu-{11900 + i}" for i in range(50)])
    b.prepare(held)
    before = stage_sums()
    for c in held * 4:
        b.prepare([c])
    alone = {key: (value - before[key]) / (len(held) * 4) for key, value in stage_sums().items()}
    b.unprepare(held)
    for key in ("handler", "answer"):
        spent[key] -= alone[key] * len(again)

    batches: dict[int, list[float]] = {8: [], 64: []}
    for size, rounds in ((8, int(100 * scale) or 10), (64, int(50 * scale) or 5)):
        for _ in range(rounds):
            batch = b.claims([f"gpu-{11000 + i}" for i in range(size)])
            batches[size].append(b.prepare(batch))
            b.unprepare(batch)

    p50 = {"floor": pct(floor, .5), "fresh": pct(fresh, .5), "again": pct(again, .5),
           "unprepare": pct(unprepare, .5), "8": pct(batches[8], .5),
           "64": pct(batches[64], .5)}
    print(f"  floor: bare gRPC unary call     p50 {pct(floor, .5):6.3f} ms  "
          f"p99 {pct(floor, .99):6.3f} ms  (n={len(floor)})")
    for label, samples, key in (("fresh prepare, 1 claim", fresh, "fresh"),
                                ("prepare of a prepared claim", again, "again"),
                                ("unprepare, 1 claim", unprepare, "unprepare")):
        print(f"  {label:<31} p50 {pct(samples, .5):6.3f} ms  p99 {pct(samples, .99):6.3f} ms"
              f"  (floor + {p50[key] - p50['floor']:.3f} ms, n={len(samples)})")
    for size in (8, 64):
        print(f"  {size} claims in one call{'':<11}p50 {pct(batches[size], .5):6.3f} ms  "
              f"p99 {pct(batches[size], .99):6.3f} ms  ({p50[str(size)] / p50['fresh']:.1f}x "
              f"one claim, n={len(batches[size])})")
    print(f"  prepare+unprepare cycles        {1 / statistics.mean(cycle):7.0f} /s")

    print(f"  where a fresh prepare's time goes (mean µs per call, n={len(fresh)}):")
    for stage in STAGES:
        print(f"    {stage:<10} {spent[stage] / len(fresh) * 1e6:8.1f}")
    handler = spent["handler"] / len(fresh) * 1e6
    staged = sum(spent[stage] for stage in STAGES) / len(fresh) * 1e6
    print(f"    {'other':<10} {handler - staged:8.1f}  (the rest of the gRPC handler)")
    print(f"    {'handler':<10} {handler:8.1f}  (all of the above)")
    transport = statistics.mean(fresh) * 1e6 - handler
    print(f"    {'transport':<10} {transport:8.1f}  (the stand-in's view of the call, less the "
          f"handler; the floor's mean is {statistics.mean(floor) * 1e6:.1f})")
    return p50


def flatness(b: Bench, *, scale: float) -> list[float]:
    """Fresh prepare p50 with 10, 1,000 and 10,000 claims already prepared."""
    prepared, p50s = 0, []
    for target in (10, 1000, 10000):
        while prepared < target:
            count = min(64, target - prepared)
            b.prepare(b.claims([f"gpu-{prepared + k}" for k in range(count)]))
            prepared += count
        samples = []
        for c in b.claims([SPARE] * int(300 * scale)):
            samples.append(b.prepare([c]))
            b.unprepare([c])
        p50s.append(pct(samples, .5))
        print(f"  with {target:>6} prepared          p50 {pct(samples, .5):6.3f} ms  "
              f"p99 {pct(samples, .99):6.3f} ms")
    return p50s


def goals(p50: dict[str, float], flat: list[float]) -> None:
    floor = p50["floor"]
    checks = [
        ("fresh prepare <= floor + 0.6 ms", p50["fresh"] <= floor + 0.6),
        ("prepared claim <= floor + 0.3 ms", p50["again"] <= floor + 0.3),
        ("unprepare <= floor + 0.5 ms", p50["unprepare"] <= floor + 0.5),
        ("8 claims <= 3x one claim", p50["8"] <= 3 * p50["fresh"]),
        ("64 claims <= 20x one claim", p50["64"] <= 20 * p50["fresh"]),
        ("flat from 10 to 10,000 prepared (within 25%)", max(flat) <= 1.25 * min(flat)),
    ]
    for label, ok in checks:
        print(f"  goal {label:<46} {'met' if ok else 'MISSED'}")


def run(args: argparse.Namespace) -> None:
    scale = 0.2 if args.quick else 1.0
    Path(args.state_root).mkdir(parents=True, exist_ok=True)
    state_root = Path(tempfile.mkdtemp(prefix="dra-bench-", dir=args.state_root))
    cdi = Path(tempfile.mkdtemp(prefix="dra-bench-cdi-", dir="/dev/shm")) if (
        Path("/dev/shm").is_dir() and not args.cdi_on_disk) else state_root / "cdi"
    # the example backend's simulated device setup lives where a device's state would, in
    # memory (tmpfs), unless --setup-on-disk puts it beside the checkpoint
    setup = {} if args.setup_on_disk else {
        "setup_dir": tempfile.mkdtemp(prefix="dra-bench-setup-", dir=cdi.parent)}
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus; API server in "
          + ("this process" if args.api_in_process else "its own process")
          + f"; claim source {args.claim_source}; state {state_root}; cdi {cdi}; example "
          f"device setup {setup.get('setup_dir', 'on disk beside the state')}")
    api_context = FakeApiServer() if args.api_in_process else remote_api()
    with api_context as api, PluginHarness(
        root=state_root, api=api,  # type: ignore[arg-type]
        backend_options={"example": {"devices": "12000", **setup}}, cdi_root=cdi,
        claim_source=args.claim_source, publish=False,
    ) as h:
        kubelet = Kubelet(h.registry_dir, DRIVER)
        try:
            b = Bench(h, kubelet, args.claim_source)
            p50 = measure(b, scale=scale)
            flat = flatness(b, scale=scale) if not args.no_flatness else [1.0]
            goals(p50, flat)
        finally:
            kubelet.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--claim-source", choices=("pods", "cluster", "get"), default="pods")
    parser.add_argument("--no-flatness", action="store_true",
                        help="skip the 10 / 1,000 / 10,000 prepared claims runs")
    parser.add_argument("--state-root", default=str(REPO / ".bench-work"),
                        help="where the checkpoint lives (a disk, as /var/lib/kubelet is)")
    parser.add_argument("--cdi-on-disk", action="store_true")
    parser.add_argument("--setup-on-disk", action="store_true",
                        help="keep the example backend's device setup files on disk too")
    parser.add_argument("--api-in-process", action="store_true")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
