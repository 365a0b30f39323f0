"""ClaimCache: list+watch against the fake API server through the real client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from dra_framework.api.claimcache import ClaimCache, relevant
from dra_framework.errors import ClaimMismatchError
from dra_framework.models import ClaimRef
from dra_framework.node.allocation import allocated_devices
from dra_framework.testing.claims import Result, allocated_claim, unallocated_claim
from dra_framework.testing.fakeapi import FakeApiServer

from .conftest import DRIVER, FIXTURES, CachedHarness, wait_until

MakeCache = Callable[..., ClaimCache]


def ref(obj: dict[str, Any]) -> ClaimRef:
    meta = obj["metadata"]
    return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def gpu_claim(name: str, *, namespace: str = "default", node: str = "node-1",
              driver: str = DRIVER, device: str = "gpu-0") -> dict[str, Any]:
    return allocated_claim(name=name, namespace=namespace, node_name=node,
                           results=[Result(request="gpu", device=device, driver=driver)])


def claim_gets(server: FakeApiServer, name: str) -> list[str]:
    return [r.path for r in server.requests
            if r.method == "GET" and r.path.endswith(f"/resourceclaims/{name}")]


def delete(server: FakeApiServer, namespace: str, name: str) -> None:
    api = client.ResourceV1Api(server.api_client())
    api.patch_namespaced_resource_claim(name, namespace, {"metadata": {"finalizers": None}})
    api.delete_namespaced_resource_claim(name, namespace)


# -- the relevance rule ---------------------------------------------------------------------

def _with_selector(selector: Any) -> dict[str, Any]:
    claim = gpu_claim("c")
    if selector is None:
        del claim["status"]["allocation"]["nodeSelector"]
    else:
        claim["status"]["allocation"]["nodeSelector"] = selector
    return claim


def _fields(*reqs: tuple[str, str, list[str]]) -> dict[str, Any]:
    return {"matchFields": [{"key": k, "operator": op, "values": v} for k, op, v in reqs]}


@pytest.mark.parametrize(("claim", "expected"), [
    pytest.param(gpu_claim("c"), True, id="this-driver-this-node"),
    pytest.param(gpu_claim("c", node="node-2"), False, id="other-node"),
    pytest.param(gpu_claim("c", driver="nic.example.com"), False, id="other-driver"),
    pytest.param(unallocated_claim(name="c"), False, id="not-allocated"),
    pytest.param(_with_selector(None), True, id="no-node-selector"),
    pytest.param(_with_selector({"nodeSelectorTerms": [
        _fields(("metadata.name", "In", ["node-2"])),
        _fields(("metadata.name", "In", ["node-1", "node-3"]))]}), True, id="second-term"),
    pytest.param(_with_selector({"nodeSelectorTerms": [
        _fields(("metadata.name", "NotIn", ["node-2"]))]}), True, id="not-in-other-node"),
    pytest.param(_with_selector({"nodeSelectorTerms": [
        _fields(("metadata.name", "NotIn", ["node-1"]))]}), False, id="not-in-this-node"),
    pytest.param(_with_selector({"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "rack", "operator": "In", "values": ["a"]}]}]}), False, id="label-selector"),
    pytest.param(json.loads((FIXTURES / "resourceclaim-allocated.json").read_text()), True,
                 id="captured-allocated-claim"),
    pytest.param(json.loads((FIXTURES / "resourceclaim-after-pod-deleted.json").read_text()),
                 False, id="captured-deallocated-claim"),
])
def test_relevance_rule(claim: dict[str, Any], expected: bool) -> None:
    assert relevant(claim, driver=DRIVER, node_name="node-1") is expected


# -- reads ------------------------------------------------------------------------------------

def test_hit_answers_from_memory(server: FakeApiServer, make_cache: MakeCache) -> None:
    c = ref(server.seed(gpu_claim("hit")))
    cache = make_cache()
    server.clear_requests()
    obj = cache.get(c)
    assert obj["metadata"]["uid"] == c.uid
    assert [d.device for d in allocated_devices(obj, claim=c, driver=DRIVER, decode=None)] == [
        "gpu-0"]
    assert server.requests == []
    assert (cache.hits, cache.misses) == (1, 0)


def test_miss_reads_the_claim_live(server: FakeApiServer, make_cache: MakeCache) -> None:
    cache = make_cache()
    c = ref(server.seed(gpu_claim("elsewhere", node="node-2")))  # not kept by the rule
    wait_until(lambda: cache.resource_version == server.resource_version)
    server.clear_requests()
    assert cache.get(c)["metadata"]["uid"] == c.uid
    assert claim_gets(server, "elsewhere") == [
        "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/elsewhere"]
    assert (cache.hits, cache.misses) == (0, 1)
    with pytest.raises(ClaimMismatchError, match="not found"):
        cache.get(ClaimRef(namespace="default", name="no-such-claim", uid="u"))


def test_uid_mismatch_reads_live_and_reports_replaced(server: FakeApiServer,
                                                       make_cache: MakeCache) -> None:
    old = ref(server.seed(gpu_claim("swapped")))
    cache = make_cache()
    asked = ClaimRef(namespace="default", name="swapped", uid="another-uid")
    server.clear_requests()
    obj = cache.get(asked)
    assert len(claim_gets(server, "swapped")) == 1
    assert obj["metadata"]["uid"] == old.uid
    assert (cache.hits, cache.misses, cache.uid_mismatches) == (0, 1, 1)
    with pytest.raises(ClaimMismatchError, match="got replaced"):
        allocated_devices(obj, claim=asked, driver=DRIVER, decode=None)


def test_claims_of_other_drivers_and_nodes_are_not_cached(server: FakeApiServer,
                                                           make_cache: MakeCache) -> None:
    cache = make_cache()
    server.seed(gpu_claim("nic", driver="nic.example.com"))
    server.seed(gpu_claim("node2", node="node-2"))
    server.seed(unallocated_claim(name="pending"))
    server.seed(gpu_claim("mine", namespace="team-a"))
    wait_until(lambda: cache.cached("team-a", "mine") is not None)
    assert [cache.cached("default", n) for n in ("nic", "node2", "pending")] == [None] * 3
    assert len(cache) == 1


def test_all_namespaces_are_listed(server: FakeApiServer, make_cache: MakeCache) -> None:
    server.seed(gpu_claim("a", namespace="ns-1"))
    server.seed(gpu_claim("b", namespace="ns-2"))
    cache = make_cache()
    assert cache.cached("ns-1", "a") is not None and cache.cached("ns-2", "b") is not None
    (listed,) = [r for r in server.requests if r.method == "GET" and "watch" not in r.query]
    assert listed.path == "/apis/resource.k8s.io/v1/resourceclaims"
    wait_until(lambda: any("watch=1" in r.query for r in server.requests))
    watches = [r for r in server.requests if "watch=1" in r.query]
    assert "allowWatchBookmarks=true" in watches[0].query


def test_captured_claim_lifecycle(server: FakeApiServer, make_cache: MakeCache) -> None:
    """The objects of a real watch, replayed: cached while allocated, gone when deallocated."""
    cache = make_cache()
    lines = (FIXTURES / "watch-resourceclaims.ndjson").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    seen = []
    for event in events:
        if event["type"] in ("ADDED", "MODIFIED"):
            obj = event["object"]
            obj["metadata"].pop("resourceVersion")
            server.seed(obj)
            wait_until(lambda: cache.resource_version == server.resource_version)
            seen.append(cache.cached("default", "watch-claim") is not None)
    # created, finalizer, allocated, labelled, deletion requested, deallocated
    assert seen == [False, False, True, True, True, False]


def test_deleted_claim_leaves_the_cache(server: FakeApiServer, make_cache: MakeCache) -> None:
    c = ref(server.seed(gpu_claim("doomed")))
    cache = make_cache()
    assert cache.cached("default", "doomed") is not None
    delete(server, "default", "doomed")
    wait_until(lambda: cache.cached("default", "doomed") is None)
    server.clear_requests()
    with pytest.raises(ClaimMismatchError, match="not found"):
        cache.get(c)
    assert len(claim_gets(server, "doomed")) == 1


def test_forget_serves_live_until_the_claim_is_released(server: FakeApiServer,
                                                        make_cache: MakeCache) -> None:
    obj = server.seed(gpu_claim("reused"))
    c = ref(obj)
    cache = make_cache()
    assert cache.holds(c)
    cache.forget(c)  # unprepared: the allocation may be stale from now on
    assert not cache.holds(c)
    server.clear_requests()
    cache.get(c)
    assert len(claim_gets(server, "reused")) == 1
    obj["status"] = {}  # deallocated ...
    server.seed(obj)
    wait_until(lambda: cache.cached("default", "reused") is None)
    server.seed(gpu_claim("reused", device="gpu-1") | {"metadata": obj["metadata"]})
    wait_until(lambda: cache.cached("default", "reused") is not None)
    server.clear_requests()
    devices = allocated_devices(cache.get(c), claim=c, driver=DRIVER, decode=None)
    assert [d.device for d in devices] == ["gpu-1"]  # ... and allocated anew: served again
    assert claim_gets(server, "reused") == []


# -- watch robustness -------------------------------------------------------------------------

def test_gone_watch_lists_again(server: FakeApiServer, make_cache: MakeCache) -> None:
    cache = make_cache()
    server.pause()  # the watch drops; the cache keeps retrying from its resourceVersion
    server.seed(gpu_claim("while-away"))
    server.compact()  # ... which is now too old: 410 Gone
    server.resume()
    wait_until(lambda: cache.cached("default", "while-away") is not None)
    assert cache.lists == 2
    server.seed(gpu_claim("after"))  # the new watch delivers events again
    wait_until(lambda: cache.cached("default", "after") is not None)
    assert cache.lists == 2


def test_connection_errors_are_retried(server: FakeApiServer, make_cache: MakeCache) -> None:
    cache = make_cache()
    server.fail_next(method="watch", resource="resourceclaims", status=0, count=2)
    server.pause()
    server.resume()
    server.seed(gpu_claim("later"))
    wait_until(lambda: cache.cached("default", "later") is not None)
    assert cache.lists == 1  # no re-list needed: the history was still there


def test_bookmarks_advance_the_resource_version(server: FakeApiServer,
                                                make_cache: MakeCache) -> None:
    cache = make_cache()
    server.seed(json.loads((FIXTURES / "resourceslice-created.json").read_text()))
    stale = cache.resource_version
    assert stale != server.resource_version  # a slice changed, no claim event came
    # (bookmarks go to open watches only: repeat until the cache's watch got one)

    def bookmarked() -> bool:
        server.send_bookmarks()
        return cache.resource_version != stale

    wait_until(bookmarked)
    assert cache.resource_version == server.resource_version
    server.compact()
    server.pause()
    server.resume()
    server.seed(gpu_claim("after-bookmark"))
    wait_until(lambda: cache.cached("default", "after-bookmark") is not None)
    assert cache.lists == 1  # resumed from the bookmark: no 410, no re-list


def test_without_bookmark_compaction_forces_a_relist(server: FakeApiServer,
                                                     make_cache: MakeCache) -> None:
    cache = make_cache()
    server.seed(json.loads((FIXTURES / "resourceslice-created.json").read_text()))
    server.compact()
    server.pause()
    server.resume()
    server.seed(gpu_claim("after"))
    wait_until(lambda: cache.cached("default", "after") is not None)
    assert cache.lists == 2


# -- through the plugin -----------------------------------------------------------------------

def test_prepare_through_the_socket_uses_the_cache(server: FakeApiServer,
                                                   node: CachedHarness) -> None:
    conn = node.connect()
    c = node.add_claim(gpu_claim("e2e"))
    assert node.cache is not None
    wait_until(lambda: node.cache is not None and node.cache.cached("default", "e2e"))
    server.clear_requests()
    result = conn.prepare([c])[c.uid]
    assert result.error == ""
    assert [d.device_name for d in result.devices] == ["gpu-0"]
    assert claim_gets(server, "e2e") == []
    assert node.cache.hits == 1


def test_replaced_claim_through_the_socket(server: FakeApiServer, node: CachedHarness) -> None:
    conn = node.connect()
    node.add_claim(gpu_claim("replaced"))
    wait_until(lambda: node.cache is not None and node.cache.cached("default", "replaced"))
    server.clear_requests()
    asked = ClaimRef(namespace="default", name="replaced", uid="0000-not-the-cached-uid")
    result = conn.prepare([asked])[asked.uid]
    assert "got replaced" in result.error
    assert len(claim_gets(server, "replaced")) == 1


def test_repeated_expiry_backs_off_instead_of_spinning(server: FakeApiServer,
                                                       make_cache: MakeCache) -> None:
    server.fail_next(method="watch", resource="resourceclaims", status=410, count=3)
    started = time.monotonic()
    cache = make_cache()
    wait_until(lambda: cache.lists == 4)
    assert time.monotonic() - started >= 0.05  # three pauses of at least 10, 20, 40 ms
    server.seed(gpu_claim("finally"))
    wait_until(lambda: cache.cached("default", "finally") is not None)
