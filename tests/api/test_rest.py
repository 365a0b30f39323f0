"""The raw JSON layer against the fake API server: bodies, errors, watches, retries."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dra_framework.api.rest import ApiError, Backoff, KubeApi, dumps, path, with_retries
from dra_framework.testing.claims import Result, allocated_claim
from dra_framework.testing.fakeapi import FakeApiServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-v1.35"
SLICES = path(group_version="resource.k8s.io/v1", resource="resourceslices")
CLAIMS = path(group_version="resource.k8s.io/v1", resource="resourceclaims",
              namespace="default")


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as s:
        yield s


@pytest.fixture
def api(server: FakeApiServer) -> KubeApi:
    return KubeApi(api_client=server.api_client(), timeout=5)


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def test_paths() -> None:
    assert path(group_version="v1", resource="nodes", name="n1") == "/api/v1/nodes/n1"
    assert path(group_version="resource.k8s.io/v1", resource="resourceclaims", namespace="ns",
                name="c", subresource="status") == (
        "/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c/status")


def test_bodies_are_compact_sorted_json() -> None:
    assert dumps({"b": 1, "a": {"d": [1, 2], "c": None}}) == b'{"a":{"c":null,"d":[1,2]},"b":1}'


def test_create_get_list_with_field_selector(api: KubeApi) -> None:
    body = fixture("resourceslice-created.json")
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"):
        body["metadata"].pop(key, None)
    created = api.create(SLICES, body)
    assert created["metadata"]["uid"]
    got = api.get(f"{SLICES}/{created['metadata']['name']}")
    assert got["spec"]["pool"] == body["spec"]["pool"]
    mine = api.list(SLICES, field_selector="spec.nodeName=node-1,spec.driver=gpu.example.com")
    assert [i["metadata"]["name"] for i in mine["items"]] == [created["metadata"]["name"]]
    other = api.list(SLICES, field_selector="spec.nodeName=node-2")
    assert other["items"] == [] and other["metadata"]["resourceVersion"]


def test_not_found_error_carries_the_status(api: KubeApi) -> None:
    with pytest.raises(ApiError) as err:
        api.get(f"{CLAIMS}/no-such-claim")
    assert err.value.code == 404 and err.value.reason == "NotFound"
    assert err.value.status == fixture("error-claim-not-found.json")
    assert not err.value.transient


def test_conflict_on_stale_resource_version(api: KubeApi) -> None:
    body = fixture("resourceslice-created.json")
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"):
        body["metadata"].pop(key, None)
    created = api.create(SLICES, body)
    url = f"{SLICES}/{created['metadata']['name']}"
    changed = {**created, "metadata": {**created["metadata"], "labels": {"a": "b"}}}
    api.replace(url, changed)
    with pytest.raises(ApiError) as err:
        api.replace(url, created)  # its resourceVersion is stale now
    assert err.value.code == 409 and err.value.reason == "Conflict"


def test_transient_errors_are_retried(server: FakeApiServer, api: KubeApi) -> None:
    server.fail_next(method="GET", resource="resourceclaims", status=503, count=2)
    delays: list[float] = []
    server.seed(allocated_claim(name="retry", results=[Result(request="gpu", device="gpu-0")]))
    got = with_retries(lambda: api.get(f"{CLAIMS}/retry"), what="get claim",
                       sleep=delays.append)
    assert got["metadata"]["name"] == "retry" and len(delays) == 2


def test_permanent_errors_are_not_retried(api: KubeApi) -> None:
    delays: list[float] = []
    with pytest.raises(ApiError):
        with_retries(lambda: api.get(f"{CLAIMS}/missing"), what="get", sleep=delays.append)
    assert delays == []


def test_unreachable_is_transient(server: FakeApiServer, api: KubeApi) -> None:
    server.pause(refuse=True)
    try:
        with pytest.raises(ApiError) as err:
            api.get(f"{CLAIMS}/x")
        assert err.value.code == 0 and err.value.transient
    finally:
        server.resume()


def test_backoff_grows_to_the_cap() -> None:
    import random

    b = Backoff(initial=1, maximum=4, rng=random.Random(1))
    delays = [b.next() for _ in range(5)]
    assert 0.5 <= delays[0] <= 1 and 1 <= delays[1] <= 2 and all(d <= 4 for d in delays)
    b.reset()
    assert b.next() <= 1


def test_watch_events_and_bookmarks(server: FakeApiServer, api: KubeApi) -> None:
    listed = api.list(CLAIMS)
    rv = listed["metadata"]["resourceVersion"]
    events: list[tuple[str, str]] = []

    def consume() -> None:
        for event in api.watch(CLAIMS, resource_version=rv, timeout_seconds=3):
            obj = event["object"]
            events.append((event["type"], obj["metadata"].get("name", "")))
            if event["type"] == "BOOKMARK" and len(events) > 1:
                return

    t = threading.Thread(target=consume)
    t.start()
    server.seed(allocated_claim(name="watched", results=[Result(request="gpu", device="g")]))
    t.join(timeout=10)
    assert events[0] == ("ADDED", "watched")
    assert events[-1][0] == "BOOKMARK"


def test_watch_too_old_is_410(server: FakeApiServer, api: KubeApi) -> None:
    server.seed(allocated_claim(name="old", results=[Result(request="gpu", device="g")]))
    rv = api.list(CLAIMS)["metadata"]["resourceVersion"]
    server.seed(allocated_claim(name="newer", results=[Result(request="gpu", device="g")]))
    server.compact()
    with pytest.raises(ApiError) as err:
        list(api.watch(CLAIMS, resource_version=rv, timeout_seconds=2))
    assert err.value.code == 410 and err.value.reason == "Expired"


# -- one request, one deadline -----------------------------------------------------------------

def claim_gets(server: FakeApiServer) -> int:
    return sum(1 for r in server.requests if r.method == "GET" and "/resourceclaims/" in r.path)


def test_a_request_is_sent_once_without_hidden_retries(server: FakeApiServer,
                                                       api: KubeApi) -> None:
    server.seed(allocated_claim(name="once", results=[Result(request="gpu", device="gpu-0")]))
    server.fail_next(method="get", resource="resourceclaims", status=0)  # connection reset
    with pytest.raises(ApiError) as err:
        api.get(f"{CLAIMS}/once")
    assert err.value.code == 0 and err.value.transient
    assert claim_gets(server) == 1


def test_with_retries_is_the_one_retry_loop(server: FakeApiServer, api: KubeApi) -> None:
    server.seed(allocated_claim(name="again", results=[Result(request="gpu", device="gpu-0")]))
    server.fail_next(method="get", resource="resourceclaims", status=0, count=2)
    delays: list[float] = []
    got = with_retries(lambda: api.get(f"{CLAIMS}/again"), what="get", sleep=delays.append)
    assert got["metadata"]["name"] == "again"
    assert len(delays) == 2 and claim_gets(server) == 3


def test_a_hung_server_fails_a_request_at_its_deadline(server: FakeApiServer,
                                                       api: KubeApi) -> None:
    server.seed(allocated_claim(name="hung", results=[Result(request="gpu", device="gpu-0")]))
    server.hang_next(method="get", resource="resourceclaims")
    started = time.monotonic()
    try:
        with pytest.raises(ApiError) as err:
            api.get(f"{CLAIMS}/hung", timeout=1)
        elapsed = time.monotonic() - started
    finally:
        server.release()
    assert err.value.code == 0 and err.value.reason == "Timeout" and err.value.transient
    assert "the API server did not answer within 1 s" in str(err.value)
    assert elapsed < 3  # one try: four (urllib3's default) would take 4 s
    assert claim_gets(server) == 1


def test_a_slow_answer_within_the_deadline_comes_through(server: FakeApiServer,
                                                         api: KubeApi) -> None:
    server.seed(allocated_claim(name="slow", results=[Result(request="gpu", device="gpu-0")]))
    server.hang_next(method="get", resource="resourceclaims", delay=0.2)
    assert api.get(f"{CLAIMS}/slow", timeout=5)["metadata"]["name"] == "slow"
    assert api.get(f"{CLAIMS}/slow", timeout=5)["metadata"]["name"] == "slow"  # conn reused


def test_a_watch_skips_lines_it_cannot_decode(server: FakeApiServer, api: KubeApi) -> None:
    rv = api.list(CLAIMS)["metadata"]["resourceVersion"]
    events: list[tuple[str, str]] = []

    def consume() -> None:
        for event in api.watch(CLAIMS, resource_version=rv, timeout_seconds=5):
            if event["type"] != "BOOKMARK":
                events.append((event["type"], event["object"]["metadata"].get("name", "")))
            if len(events) == 2:
                return

    watcher = threading.Thread(target=consume)
    watcher.start()
    server.seed(allocated_claim(name="first", results=[Result(request="gpu", device="g")]))
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        time.sleep(0.01)
    server.send_raw_event(b'{"type": "ADDED", "object": {', resource="resourceclaims")
    server.send_raw_event(b'"a string"', resource="resourceclaims")
    server.seed(allocated_claim(name="second", results=[Result(request="gpu", device="g")]))
    watcher.join(timeout=10)
    assert events == [("ADDED", "first"), ("ADDED", "second")]
