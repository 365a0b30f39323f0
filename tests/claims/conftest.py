"""Fixtures: a fake API server per test, a claim cache on it, a plugin reading through it."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dra_framework.api.claimcache import ClaimCache
from dra_framework.api.kubeconfig import load_api_client
from dra_framework.api.rest import Backoff, KubeApi
from dra_framework.commands.serve import Node
from dra_framework.testing.fakeapi import FakeApiServer
from dra_framework.testing.harness import PluginHarness

DRIVER = "gpu.example.com"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-v1.35"


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=None) as s:
        yield s


@pytest.fixture
def kube(server: FakeApiServer) -> KubeApi:
    return KubeApi(api_client=server.api_client(), timeout=5.0)


@pytest.fixture
def make_cache(kube: KubeApi) -> Iterator[Callable[..., ClaimCache]]:
    made: list[ClaimCache] = []

    def make(**kw: object) -> ClaimCache:
        options: dict[str, object] = {"driver": DRIVER, "node_name": "node-1",
                                      "backoff": Backoff(initial=0.02, maximum=0.1)}
        options.update(kw)
        cache = ClaimCache(api=kube, **options)  # type: ignore[arg-type]
        made.append(cache.start())
        assert cache.wait_synced(5)
        return cache

    yield make
    for cache in made:
        cache.stop(timeout=1)


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
        assert self.cache.wait_synced(10)
        self.node = Node(self.config, claims=self.cache)
        self.node.start()

    def stop(self) -> None:
        super().stop()
        if self.cache is not None:
            self.cache.stop(timeout=1)
            self.cache = None


@pytest.fixture
def node(server: FakeApiServer) -> Iterator[CachedHarness]:
    base = os.environ.get("DRA_TEST_TMP", "/tmp")
    with tempfile.TemporaryDirectory(prefix="dra-", dir=base) as d:
        harness = CachedHarness(root=Path(d), api=server)
        with harness:
            yield harness
