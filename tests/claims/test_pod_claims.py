"""PodClaimCache: this node's pods watched, the claims they name read ahead of the kubelet."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from dra_framework.api.podclaims import PodClaimCache, claim_names
from dra_framework.api.rest import Backoff, KubeApi
from dra_framework.errors import ClaimMismatchError
from dra_framework.models import ClaimRef
from dra_framework.node.allocation import allocated_devices
from dra_framework.testing.claims import POD, Result, allocated_claim, bound_pod
from dra_framework.testing.fakeapi import FakeApiServer

from .conftest import DRIVER, FIXTURES, wait_until
from .test_cache import claim_gets, gpu_claim, ref

MakePods = Callable[..., PodClaimCache]
OTHER = "nic.example.com"


@pytest.fixture
def make_pods(kube: KubeApi) -> Iterator[MakePods]:
    made: list[PodClaimCache] = []

    def make(**kw: Any) -> PodClaimCache:
        options: dict[str, Any] = {
            "node_name": "node-1", "drivers": [DRIVER, OTHER],
            "backoff": Backoff(initial=0.02, maximum=0.1),
            "read_backoff": Backoff(initial=0.02, maximum=0.1)}
        options.update(kw)
        cache = PodClaimCache(api=kube, **options)
        made.append(cache.start())
        assert cache.wait_synced(5)
        return cache

    yield make
    for cache in made:
        cache.stop(timeout=1)


def reserved(name: str, pod: tuple[str, str]) -> dict[str, Any]:
    """A claim of this driver on node-1, reserved for ``pod`` (name, UID)."""
    return allocated_claim(name=name, results=[Result("gpu", "gpu-0")], pod=pod)


def settled(server: FakeApiServer, cache: PodClaimCache) -> Callable[[], bool]:
    """The pod watch has seen everything up to now (bookmarks carry it past other objects)."""
    target = int(server.resource_version)

    def check() -> bool:
        server.send_bookmarks()
        return int(cache.resource_version or 0) >= target

    return check


def pod_status(server: FakeApiServer, name: str, status: dict[str, Any]) -> None:
    client.CoreV1Api(server.api_client()).patch_namespaced_pod_status(
        name, "default", {"status": status})


# -- what a pod names -------------------------------------------------------------------------

def test_a_pod_names_its_direct_and_template_claims() -> None:
    pod = json.loads((FIXTURES / "pod-with-claims.json").read_text())
    assert claim_names(pod) == ["gpu-claim", "pod-1-scratch-wlcqd"]


@pytest.mark.parametrize("pod", [
    pytest.param({"spec": {"resourceClaims": "gpu"}}, id="claims-not-a-list"),
    pytest.param({"spec": {"resourceClaims": ["gpu", 7, None]}}, id="entries-not-objects"),
    pytest.param({"spec": {"resourceClaims": [{"resourceClaimName": 7}]}}, id="name-not-text"),
    pytest.param({"spec": {"resourceClaims": [{"resourceClaimName": "x" * 254}]}},
                 id="name-too-long"),
    pytest.param({"status": {"resourceClaimStatuses": [{"resourceClaimName": None}]}},
                 id="no-claim-needed"),
    pytest.param({"spec": [], "status": "Running"}, id="spec-and-status-not-objects"),
])
def test_entries_of_the_wrong_shape_name_nothing(pod: dict[str, Any]) -> None:
    assert claim_names(pod) == []


# -- read ahead -------------------------------------------------------------------------------

def test_the_claim_is_in_memory_before_it_is_asked_for(server: FakeApiServer,
                                                        make_pods: MakePods) -> None:
    c = ref(server.seed(gpu_claim("ahead")))
    cache = make_pods()
    server.seed(bound_pod(claims=["ahead"]))
    wait_until(lambda: cache.holds(c))
    assert not cache.holds(ClaimRef(namespace="default", name="ahead", uid="another-uid"))
    server.clear_requests()
    obj = cache.for_driver(DRIVER).get(c, timeout=0.001)
    assert [d.device for d in allocated_devices(obj, claim=c, driver=DRIVER, decode=None)] == [
        "gpu-0"]
    assert server.requests == []
    assert (cache.hits, cache.misses, cache.reads) == (1, 0, 1)


def test_pods_listed_at_start_have_their_claims_read(server: FakeApiServer,
                                                     make_pods: MakePods) -> None:
    c = ref(server.seed(gpu_claim("early")))
    server.seed(bound_pod(claims=["early"]))
    cache = make_pods()
    wait_until(lambda: cache.cached("default", "early") is not None)
    assert cache.for_driver(DRIVER).get(c)["metadata"]["uid"] == c.uid
    assert cache.hits == 1
    (listed,) = [r for r in server.requests if r.path == "/api/v1/pods" and "watch" not in r.query]
    assert listed.query == "fieldSelector=spec.nodeName%3Dnode-1"


def test_a_claim_made_from_a_template_is_read_from_the_pod_status(
        server: FakeApiServer, make_pods: MakePods) -> None:
    c = ref(server.seed(gpu_claim("pod-1-gpu-x7k2p")))
    cache = make_pods()
    server.seed(bound_pod(from_templates={"gpu": "pod-1-gpu-x7k2p"}))
    wait_until(lambda: cache.cached("default", "pod-1-gpu-x7k2p") is not None)
    server.clear_requests()
    assert cache.for_driver(DRIVER).get(c)["metadata"]["uid"] == c.uid
    assert server.requests == []


def test_a_pod_whose_claim_status_comes_later(server: FakeApiServer,
                                              make_pods: MakePods) -> None:
    pod = bound_pod(from_templates={"gpu": "later"})
    del pod["status"]["resourceClaimStatuses"]
    server.seed(pod)
    cache = make_pods()
    c = ref(server.seed(gpu_claim("later")))
    wait_until(settled(server, cache))
    assert claim_gets(server, "later") == []  # the pod does not name it yet
    pod_status(server, "pod-1", {"resourceClaimStatuses": [
        {"name": "gpu", "resourceClaimName": "later"}]})
    wait_until(lambda: cache.cached("default", "later") is not None)
    assert cache.for_driver(DRIVER).get(c)["metadata"]["uid"] == c.uid and cache.hits == 1


def test_a_claim_read_before_its_allocation_is_read_again(server: FakeApiServer,
                                                          make_pods: MakePods) -> None:
    claim = gpu_claim("slow")
    allocated = dict(claim["status"])
    claim["status"] = {}
    c = ref(server.seed(claim))
    cache = make_pods()
    server.seed(bound_pod(claims=["slow"]))
    wait_until(lambda: cache.reads == 1)
    assert cache.cached("default", "slow") is None  # not allocated: not kept
    claim["status"] = allocated
    server.seed(claim)
    server.clear_requests()
    obj = cache.for_driver(DRIVER).get(c)  # asked: read live, and right
    assert obj["status"]["allocation"] and len(claim_gets(server, "slow")) == 1
    pod_status(server, "pod-1", {"phase": "Running"})  # the pod changes: read again
    wait_until(lambda: cache.cached("default", "slow") is not None)
    assert cache.reads == 2


def test_pods_of_other_nodes_are_ignored(server: FakeApiServer, make_pods: MakePods) -> None:
    cache = make_pods()
    server.seed(gpu_claim("theirs", node="node-2"))
    server.seed(bound_pod(name="elsewhere", uid="u-2", claims=["theirs"], node_name="node-2"))
    server.seed(bound_pod(claims=["mine"]))
    wait_until(lambda: cache.reads == 1)
    assert claim_gets(server, "theirs") == [] and len(claim_gets(server, "mine")) == 1


@pytest.mark.parametrize("end", ["deleted", "succeeded", "being-deleted"])
def test_the_claims_of_a_pod_that_is_gone_are_forgotten(server: FakeApiServer,
                                                        make_pods: MakePods, end: str) -> None:
    c = ref(server.seed(gpu_claim("done")))
    cache = make_pods()
    server.seed(bound_pod(claims=["done"]))
    wait_until(lambda: cache.cached("default", "done") is not None)
    core = client.CoreV1Api(server.api_client())
    if end == "deleted":
        core.delete_namespaced_pod("pod-1", "default")
    elif end == "succeeded":
        pod_status(server, "pod-1", {"phase": "Succeeded"})
    else:
        core.patch_namespaced_pod("pod-1", "default", {"metadata": {"finalizers": ["x/y"]}})
        core.delete_namespaced_pod("pod-1", "default")
    wait_until(lambda: cache.cached("default", "done") is None)
    server.clear_requests()
    assert cache.for_driver(DRIVER).get(c)["metadata"]["uid"] == c.uid
    assert len(claim_gets(server, "done")) == 1 and cache.misses == 1


def test_a_shared_claim_stays_while_another_pod_it_is_reserved_for_uses_it(
        server: FakeApiServer, make_pods: MakePods) -> None:
    claim = gpu_claim("shared")
    claim["status"]["reservedFor"].append({"resource": "pods", "name": "pod-2", "uid": "u-2"})
    c = ref(server.seed(claim))
    cache = make_pods()
    server.seed(bound_pod(claims=["shared"]))
    server.seed(bound_pod(name="pod-2", uid="u-2", claims=["shared"]))
    wait_until(lambda: cache.cached("default", "shared") is not None)
    client.CoreV1Api(server.api_client()).delete_namespaced_pod("pod-1", "default")
    wait_until(settled(server, cache))
    server.clear_requests()
    assert cache.for_driver(DRIVER).get(c)["metadata"]["uid"] == c.uid
    assert server.requests == [] and cache.hits == 1


def test_a_claim_not_reserved_for_a_pod_of_the_node_is_not_kept(
        server: FakeApiServer, make_pods: MakePods) -> None:
    server.seed(reserved("foreign-reservation", ("pod-9", "u-9")))
    cache = make_pods()
    server.seed(bound_pod(claims=["foreign-reservation"]))
    wait_until(lambda: cache.reads == 1)
    assert cache.cached("default", "foreign-reservation") is None


# -- answers that are not from memory ---------------------------------------------------------

def test_uid_mismatch_reads_live_and_reports_replaced(server: FakeApiServer,
                                                       make_pods: MakePods) -> None:
    server.seed(gpu_claim("swapped"))
    cache = make_pods()
    server.seed(bound_pod(claims=["swapped"]))
    wait_until(lambda: cache.cached("default", "swapped") is not None)
    asked = ClaimRef(namespace="default", name="swapped", uid="another-uid")
    server.clear_requests()
    obj = cache.for_driver(DRIVER).get(asked)
    assert len(claim_gets(server, "swapped")) == 1
    assert (cache.hits, cache.misses, cache.uid_mismatches) == (0, 1, 1)
    with pytest.raises(ClaimMismatchError, match="got replaced"):
        allocated_devices(obj, claim=asked, driver=DRIVER, decode=None)


def test_a_claim_of_another_driver_is_read_live(server: FakeApiServer,
                                                make_pods: MakePods) -> None:
    c = ref(server.seed(gpu_claim("nic", driver=OTHER)))
    cache = make_pods()
    server.seed(bound_pod(claims=["nic"]))
    wait_until(lambda: cache.cached("default", "nic") is not None)
    server.clear_requests()
    cache.for_driver(DRIVER).get(c)
    cache.for_driver(OTHER).get(c)
    assert len(claim_gets(server, "nic")) == 1 and (cache.hits, cache.misses) == (1, 1)
    with pytest.raises(ValueError, match="not one of"):
        cache.for_driver("unknown.example.com")


def test_forget_keeps_no_read_reserved_for_the_same_pods(server: FakeApiServer,
                                                         make_pods: MakePods) -> None:
    obj = server.seed(gpu_claim("reused"))
    c = ref(obj)
    cache = make_pods()
    server.seed(bound_pod(claims=["reused"]))
    wait_until(lambda: cache.cached("default", "reused") is not None)
    source = cache.for_driver(DRIVER)
    source.forget(c)  # unprepared: the pod no longer needs it, the watch has not seen it yet
    assert cache.cached("default", "reused") is None and not cache.holds(c)
    pod_status(server, "pod-1", {"phase": "Running"})  # a late change: read again ...
    wait_until(lambda: cache.reads == 2)
    assert cache.cached("default", "reused") is None  # ... but not kept for the same pod
    server.seed(bound_pod(name="pod-2", uid="u-2", claims=["reused"]))
    obj["status"]["reservedFor"] = [{"resource": "pods", "name": "pod-2", "uid": "u-2"}]
    server.seed(obj)  # allocated anew, reserved for the new pod
    pod_status(server, "pod-2", {"phase": "Running"})
    wait_until(lambda: cache.cached("default", "reused") is not None)
    server.clear_requests()
    assert source.get(c)["metadata"]["uid"] == c.uid and server.requests == []


def test_a_read_in_progress_is_waited_for(server: FakeApiServer, make_pods: MakePods) -> None:
    c = ref(server.seed(gpu_claim("racing")))
    cache = make_pods()
    server.hang_next(method="get", resource="resourceclaims")
    server.seed(bound_pod(claims=["racing"]))
    wait_until(lambda: server.hanging == 1)
    answers: list[Any] = []
    asking = threading.Thread(target=lambda: answers.append(
        cache.for_driver(DRIVER).get(c, timeout=10)))
    asking.start()
    server.release()
    asking.join(10)
    assert answers and answers[0]["metadata"]["uid"] == c.uid
    assert len(claim_gets(server, "racing")) == 1 and cache.hits == 1


def test_at_most_max_claims_are_followed(server: FakeApiServer, make_pods: MakePods) -> None:
    first, second = ref(server.seed(gpu_claim("first"))), ref(server.seed(gpu_claim("second")))
    cache = make_pods(max_claims=1)
    server.seed(bound_pod(claims=["first", "second"]))
    wait_until(lambda: cache.cached("default", "first") is not None)
    source = cache.for_driver(DRIVER)
    server.clear_requests()
    source.get(first)
    source.get(second)
    assert claim_gets(server, "first") == [] and len(claim_gets(server, "second")) == 1
    assert len(cache) == 1


# -- the watch --------------------------------------------------------------------------------

def test_gone_watch_lists_again(server: FakeApiServer, make_pods: MakePods) -> None:
    server.seed(gpu_claim("while-away"))
    cache = make_pods()
    server.pause()
    server.seed(bound_pod(claims=["while-away"]))
    server.compact()  # the watch's resourceVersion is now too old: 410 Gone
    server.resume()
    wait_until(lambda: cache.cached("default", "while-away") is not None)
    assert cache.lists == 2


def test_bookmarks_spare_a_list_after_compaction(server: FakeApiServer,
                                                 make_pods: MakePods) -> None:
    cache = make_pods()
    server.seed(reserved("quiet", ("pod-3", "u-3")))  # a claim changes, no pod does
    wait_until(settled(server, cache))  # carried there by a bookmark
    server.compact()
    server.pause()
    server.resume()
    server.seed(bound_pod(name="pod-3", uid="u-3", claims=["quiet"]))
    wait_until(lambda: cache.cached("default", "quiet") is not None)
    assert cache.lists == 1  # resumed from the bookmark: no 410, no list


def test_an_api_outage_then_recovery(server: FakeApiServer, make_pods: MakePods) -> None:
    c = ref(server.seed(gpu_claim("patient")))
    cache = make_pods()
    server.fail_next(method="get", resource="resourceclaims", status=503, count=2)
    server.seed(bound_pod(claims=["patient"]))
    wait_until(lambda: cache.cached("default", "patient") is not None)  # retried
    assert len(claim_gets(server, "patient")) == 3
    server.pause()
    later = ref(server.seed(reserved("after-outage", ("pod-2", "u-2"))))
    server.seed(bound_pod(name="pod-2", uid="u-2", claims=["after-outage"]))
    server.resume()
    wait_until(lambda: cache.cached("default", "after-outage") is not None)
    assert cache.lists == 1
    for claim in (c, later):
        assert cache.for_driver(DRIVER).get(claim)["metadata"]["uid"] == claim.uid


def test_hostile_pods_are_skipped_and_the_watch_goes_on(server: FakeApiServer,
                                                        make_pods: MakePods) -> None:
    cache = make_pods()
    server.seed(bound_pod(name="before", uid="u-0", claims=["before"]))
    wait_until(lambda: cache.reads == 1)  # the watch is open
    for line in (b'{"type":"ADDED","object":{"metadata":"pod"}}',
                 b'{"type":"ADDED","object":{"metadata":{"name":"p"},"spec":7,"status":[]}}',
                 b'{"type":"MODIFIED","object":{"metadata":{"name":"q","namespace":[1]},'
                 b'"spec":{"nodeName":"node-1","resourceClaims":[{"resourceClaimName":{}}]}}}',
                 b"\xff\xfe not JSON", b"[1, 2]"):
        assert server.send_raw_event(line, resource="pods") == 1
    server.seed(reserved("after", ("after", "u-1")))
    server.seed(bound_pod(name="after", uid="u-1", claims=["after"]))
    wait_until(lambda: cache.cached("default", "after") is not None)
    assert cache.lists == 1
    assert sum(1 for r in server.requests if r.path == "/api/v1/pods" and "watch=1" in r.query
               ) == 1


@pytest.mark.parametrize("status", [
    pytest.param({"allocation": "yes", "reservedFor": [{"resource": "pods", "uid": POD[1]}]},
                 id="allocation-not-an-object"),
    pytest.param({"allocation": {"devices": {"results": [{"driver": DRIVER}]}},
                  "reservedFor": "pod-1"}, id="reserved-for-not-a-list"),
    pytest.param({"allocation": {"devices": {"results": [{"driver": DRIVER}]}},
                  "reservedFor": [7, {"uid": POD[1]}]}, id="reservations-of-the-wrong-shape"),
])
def test_a_hostile_claim_is_not_kept_and_is_read_live(server: FakeApiServer,
                                                      make_pods: MakePods,
                                                      status: dict[str, Any]) -> None:
    claim = gpu_claim("odd")
    claim["status"] = status
    c = ref(server.seed(claim))
    cache = make_pods()
    server.seed(bound_pod(claims=["odd"]))
    wait_until(lambda: cache.reads == 1)
    assert cache.cached("default", "odd") is None
    assert cache.for_driver(DRIVER).get(c)["status"] == status
