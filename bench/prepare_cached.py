"""Benchmark: prepare latency through the real kubelet socket, claims from the watch cache.

Like ``bench/prepare.py``, but the plugin's ``ClaimSource`` is a ``ClaimCache``: the claim is
created, the benchmark waits until the cache's watch has delivered it, and then times one
NodePrepareResources (1 claim, 1 device) through the socket, so no API call is on the timed
path (the run checks that every read was a cache hit).  Prints p50/p99 of that, and for
comparison the same prepare when the cache misses (live GET).

The API server runs in a process of its own (``bench/apiserver.py``) unless
``--api-in-process``; the checkpoint lives on disk (``--state-root``), CDI specs on tmpfs.

    .venv/bin/python bench/prepare_cached.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from prepare import REPO, Bench, pct, remote_api  # bench/prepare.py

from dra_framework.claimcache import ClaimCache
from dra_framework.kube import load_api_client
from dra_framework.models import ClaimRef
from dra_framework.rest import KubeApi
from dra_framework.serve import Node
from dra_framework.testing.fakeapi import FakeApiServer
from dra_framework.testing.harness import PluginHarness

DRIVER = "gpu.example.com"


class CachedHarness(PluginHarness):
    """``PluginHarness`` whose plugin reads claims through a ``ClaimCache``."""

    cache: ClaimCache | None = None

    def start(self, *, boot_id: str | None = None) -> None:
        if boot_id is not None:
            self.boot_id = boot_id
        self.boot_id_file.write_text(self.boot_id + "\n")
        api = KubeApi(api_client=load_api_client(kubeconfig=str(self.kubeconfig)))
        self.cache = ClaimCache(api=api, driver=DRIVER, node_name=self.config.node_name)
        self.cache.start()
        if not self.cache.wait_synced(30):
            raise RuntimeError("the claim cache did not sync")
        self.node = Node(self.config, claims=self.cache)
        self.node.start()

    def stop(self) -> None:
        super().stop()
        if self.cache is not None:
            self.cache.stop()
            self.cache = None


def wait_cached(cache: ClaimCache, claims: list[ClaimRef], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for c in claims:
        while (obj := cache.cached(c.namespace, c.name)) is None or (
                obj["metadata"]["uid"] != c.uid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"claim {c.name} did not reach the cache")
            time.sleep(0.001)


def run(args: argparse.Namespace) -> None:
    scale = 0.2 if args.quick else 1.0
    Path(args.state_root).mkdir(parents=True, exist_ok=True)
    state_root = Path(tempfile.mkdtemp(prefix="dra-bench-", dir=args.state_root))
    cdi = Path(tempfile.mkdtemp(prefix="dra-bench-cdi-", dir="/dev/shm")) if (
        Path("/dev/shm").is_dir() and not args.cdi_on_disk) else state_root / "cdi"
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, state {state_root}, "
          f"cdi {cdi}")
    api_context: Any = FakeApiServer(bookmark_interval=None) if args.api_in_process \
        else remote_api()
    print("API server in " + ("this process" if args.api_in_process else "its own process"))
    with api_context as api:
        h = CachedHarness(root=state_root, api=api, cdi_root=cdi,
                          backend_options={"example": {"devices": "64"}})
        with h:
            measure(h, scale)


def measure(h: CachedHarness, scale: float) -> None:
    """Time prepares of claims already in the cache, then of claims it does not answer for."""
    assert h.cache is not None
    cache = h.cache
    b = Bench(h, h.connect())
    spare = lambda n: "gpu-63"  # noqa: E731  one device, prepared and unprepared in turn

    warm = b.claims(50, device=spare)
    wait_cached(cache, warm)
    for c in warm:
        b.prepare([c]); b.unprepare([c])  # noqa: E702

    n = int(2000 * scale)
    claims = b.claims(n, device=spare)
    wait_cached(cache, claims)
    hits, misses = cache.hits, cache.misses
    cached = []
    for c in claims:
        cached.append(b.prepare([c]))
        b.unprepare([c])
    assert (cache.hits - hits, cache.misses - misses) == (n, 0), "not all reads were hits"
    print(f"prepare 1 claim/1 device, claim in the cache   p50 {pct(cached, .5):6.3f} ms  "
          f"p99 {pct(cached, .99):6.3f} ms  (n={n}, every read a cache hit)")

    m = int(500 * scale)
    live = []
    misses = cache.misses
    for c in b.claims(m, device=spare):
        wait_cached(cache, [c])
        cache.forget(c)  # the cache no longer answers for this UID: a live GET
        live.append(b.prepare([c]))
        b.unprepare([c])
    assert cache.misses - misses == m
    print(f"prepare 1 claim/1 device, cache miss (live GET) p50 {pct(live, .5):6.3f} ms  "
          f"p99 {pct(live, .99):6.3f} ms  (n={m})")


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
