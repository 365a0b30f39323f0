"""Claim reads against a hung API server end at the caller's deadline, in one request."""

from __future__ import annotations

import time

import pytest

from dra_framework.api.claimreader import ClaimReader
from dra_framework.api.rest import KubeApi
from dra_framework.errors import TransientApiError
from dra_framework.models import ClaimRef
from dra_framework.testing.fakeapi import FakeApiServer

from .test_cache import MakeCache, claim_gets, gpu_claim, ref


def test_a_live_read_gives_up_at_its_timeout_after_one_request(server: FakeApiServer,
                                                               kube: KubeApi) -> None:
    claim = ref(server.seed(gpu_claim("hung")))
    server.hang_next(method="get", resource="resourceclaims")
    started = time.monotonic()
    try:
        with pytest.raises(TransientApiError) as err:
            ClaimReader(api=kube).get(claim, timeout=2)
        elapsed = time.monotonic() - started
    finally:
        server.release()
    assert "ResourceClaim default/hung" in str(err.value)
    assert "the API server did not answer within 2 s" in str(err.value)
    assert elapsed < 5  # retried reads would take 8 s or more
    assert len(claim_gets(server, "hung")) == 1


def test_a_live_read_without_a_timeout_uses_the_api_default(server: FakeApiServer) -> None:
    claim = ref(server.seed(gpu_claim("default-limit")))
    server.hang_next(method="get", resource="resourceclaims")
    try:
        with pytest.raises(TransientApiError, match="did not answer within 1 s"):
            ClaimReader(api=KubeApi(api_client=server.api_client(), timeout=1)).get(claim)
    finally:
        server.release()


def test_a_cache_hit_ignores_the_timeout_and_a_miss_reads_live_with_it(
        server: FakeApiServer, make_cache: MakeCache) -> None:
    cached = ref(server.seed(gpu_claim("cached")))
    cache = make_cache()
    server.hang_next(method="get", resource="resourceclaims", count=10)
    try:
        assert cache.get(cached, timeout=0.001)["metadata"]["name"] == "cached"
        assert server.hanging == 0
        missing = ClaimRef(namespace="default", name="elsewhere", uid="u-1")
        started = time.monotonic()
        with pytest.raises(TransientApiError, match="did not answer within 1 s"):
            cache.get(missing, timeout=1)
        assert time.monotonic() - started < 4
    finally:
        server.release()
    assert len(claim_gets(server, "elsewhere")) == 1
