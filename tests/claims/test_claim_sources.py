"""The claim source a plugin prepares from, chosen as ``--claim-source`` chooses it, through the
kubelet socket: what each costs the API server at prepare time."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dra_framework.api.claimcache import ClaimCache
from dra_framework.api.podclaims import PodClaimCache
from dra_framework.testing.claims import bound_pod
from dra_framework.testing.fakeapi import FakeApiServer
from dra_framework.testing.harness import PluginHarness, wait_for

from .test_cache import claim_gets, gpu_claim


@pytest.fixture
def root() -> Iterator[Path]:
    base = os.environ.get("DRA_TEST_TMP", "/tmp")  # unix socket paths must stay short
    with tempfile.TemporaryDirectory(prefix="dra-", dir=base) as d:
        yield Path(d)


def harness(root: Path, server: FakeApiServer, **kw: Any) -> PluginHarness:
    return PluginHarness(root=root, api=server, publish=False, **kw)


def test_by_default_the_claims_of_the_nodes_pods_are_read_ahead(
        root: Path, server: FakeApiServer) -> None:
    with harness(root, server) as h:
        assert h.node is not None
        (cache,) = h.node.claim_sources
        assert isinstance(cache, PodClaimCache) and cache.synced  # wait_ready waited for it
        conn = h.connect()
        claim = h.add_claim(gpu_claim("ahead"))
        h.add_pod(bound_pod(claims=["ahead"]))
        wait_for("the claim to be read ahead", lambda: cache.holds(claim))
        server.clear_requests()
        result = conn.prepare([claim])[claim.uid]
        assert result.error == "" and [d.device_name for d in result.devices] == ["gpu-0"]
        assert claim_gets(server, "ahead") == [] and cache.hits == 1


def test_a_claim_whose_pod_is_not_seen_is_read_at_prepare(root: Path,
                                                          server: FakeApiServer) -> None:
    with harness(root, server, claim_source="pods") as h:
        conn = h.connect()
        claim = h.add_claim(gpu_claim("no-pod"))
        server.clear_requests()
        assert conn.prepare([claim])[claim.uid].error == ""
        assert len(claim_gets(server, "no-pod")) == 1


def test_after_unprepare_the_same_claim_is_read_live_again(root: Path,
                                                           server: FakeApiServer) -> None:
    with harness(root, server) as h:
        assert h.node is not None and h.node.pod_claims is not None
        cache = h.node.pod_claims
        conn = h.connect()
        claim = h.add_claim(gpu_claim("again"))
        h.add_pod(bound_pod(claims=["again"]))
        wait_for("the claim to be read ahead", lambda: cache.cached("default", "again"))
        assert conn.prepare([claim])[claim.uid].error == ""
        assert conn.unprepare([claim])[claim.uid] == ""
        assert cache.cached("default", "again") is None  # forgotten at unprepare
        server.clear_requests()
        assert conn.prepare([claim])[claim.uid].error == ""
        assert len(claim_gets(server, "again")) == 1


@pytest.mark.parametrize(("options", "kind", "gets"), [
    pytest.param({"claim_source": "cluster"}, ClaimCache, 0, id="cluster"),
    pytest.param({"claim_source": "get"}, None, 1, id="get"),
    pytest.param({"claim_cache": True}, ClaimCache, 0, id="deprecated-claim-cache"),
    pytest.param({"claim_cache": False}, None, 1, id="deprecated-no-claim-cache"),
])
def test_the_other_sources(root: Path, server: FakeApiServer, options: dict[str, Any],
                           kind: type | None, gets: int) -> None:
    with harness(root, server, **options) as h:
        assert h.node is not None
        assert [type(c) for c in h.node.claim_sources] == ([kind] if kind else [])
        assert h.node.caches is h.node.claim_sources  # the former name
        conn = h.connect()
        claim = h.add_claim(gpu_claim("other"))
        if kind is ClaimCache:
            wait_for("the watch to hold the claim",
                     lambda: h.node is not None and h.node.claim_sources[0].holds(claim))
        server.clear_requests()
        assert conn.prepare([claim])[claim.uid].error == ""
        assert len(claim_gets(server, "other")) == gets
