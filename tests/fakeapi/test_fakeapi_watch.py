"""Watch streams: event sequences compared with captured ones, bookmarks, 410, selectors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, watch

from dra_framework.testing.fakeapi import FakeApiServer

from .helpers import fixture, fixture_lines, raw_request

SLICES = "/apis/resource.k8s.io/v1/resourceslices"
CLAIMS = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims"


def watch_raw(server: FakeApiServer, path: str, query: str,
              during: Callable[[], None] | None = None) -> tuple[int, list[bytes]]:
    """Run a raw watch (it must carry timeoutSeconds); ``during`` runs while it is open."""
    result: dict[str, Any] = {}

    def run() -> None:
        result["status"], result["body"] = raw_request(server, "GET", f"{path}?{query}")

    thread = threading.Thread(target=run)
    thread.start()
    if during is not None:
        deadline = time.monotonic() + 5
        while not any("watch=1" in r.query for r in server.requests):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.05)
        during()
    thread.join(timeout=15)
    return result["status"], result["body"].splitlines()


def expected_line(captured: bytes, ours: bytes, *extra: str) -> bytes:
    """The captured event with uid, versions and timestamps taken from ours."""
    want, got = json.loads(captured), json.loads(ours)
    meta, got_meta = want["object"]["metadata"], got["object"]["metadata"]
    meta.pop("managedFields", None)
    for key in ("uid", "resourceVersion", "creationTimestamp", *extra):
        if key in meta:
            meta[key] = got_meta[key]
    return json.dumps(want, separators=(",", ":")).encode()


def test_slice_watch_matches_capture(server: FakeApiServer,
                                     resource_api: client.ResourceV1Api) -> None:
    captured = fixture_lines("watch-resourceslices.ndjson")
    events = [json.loads(line)["object"] for line in captured]
    start = server.resource_version
    first = {k: events[0][k] for k in ("apiVersion", "kind", "spec")}
    first["metadata"] = {"name": events[0]["metadata"]["name"]}
    resource_api.create_resource_slice(first)
    resource_api.patch_resource_slice(first["metadata"]["name"], {"spec": events[1]["spec"]},
                                      _content_type="application/merge-patch+json")
    resource_api.delete_resource_slice(first["metadata"]["name"])
    status, lines = watch_raw(server, SLICES, f"watch=1&resourceVersion={start}"
                              "&allowWatchBookmarks=true&timeoutSeconds=1",
                              during=server.send_bookmarks)
    assert status == 200
    assert len(lines) == len(captured)
    for want, got in zip(captured, lines, strict=True):
        assert got == expected_line(want, got)


def test_claim_watch_matches_capture(server: FakeApiServer,
                                     resource_api: client.ResourceV1Api) -> None:
    captured = fixture_lines("watch-resourceclaims.ndjson")
    objects = [json.loads(line)["object"] for line in captured]
    start = server.resource_version
    name, ns = "watch-claim", "default"
    resource_api.create_namespaced_resource_claim(ns, {
        "metadata": {"name": name}, "spec": objects[0]["spec"]})
    resource_api.patch_namespaced_resource_claim(
        name, ns, {"metadata": {"finalizers": objects[1]["metadata"]["finalizers"]}})
    resource_api.patch_namespaced_resource_claim_status(
        name, ns, {"status": objects[2]["status"]}, _content_type="application/merge-patch+json")
    resource_api.patch_namespaced_resource_claim(name, ns, {"metadata": {"labels": {
        "updated": "true"}}})
    resource_api.delete_namespaced_resource_claim(name, ns)
    resource_api.patch_namespaced_resource_claim_status(
        name, ns, {"status": {"allocation": None, "reservedFor": None}},
        _content_type="application/merge-patch+json")
    resource_api.patch_namespaced_resource_claim(name, ns, {"metadata": {"finalizers": None}})
    status, lines = watch_raw(server, CLAIMS, f"watch=1&resourceVersion={start}"
                              "&allowWatchBookmarks=true&timeoutSeconds=1",
                              during=server.send_bookmarks)
    assert [json.loads(line)["type"] for line in lines] == [
        json.loads(line)["type"] for line in captured]
    for want, got in zip(captured, lines, strict=True):
        assert got == expected_line(want, got, "deletionTimestamp")


def test_too_old_resource_version(server: FakeApiServer,
                                  resource_api: client.ResourceV1Api) -> None:
    resource_api.create_namespaced_resource_claim("default", {
        "metadata": {"name": "c"}, "spec": {"devices": {"requests": []}}})
    server.compact()
    status, lines = watch_raw(server, CLAIMS, "watch=1&resourceVersion=1")
    assert status == 200
    want = fixture("error-watch-gone.json")
    want["object"]["message"] = f"too old resource version: 1 ({server.resource_version})"
    assert lines == [json.dumps(want, separators=(",", ":")).encode()]
    # the current version is still fine
    status, lines = watch_raw(server, CLAIMS, f"watch=1&resourceVersion="
                              f"{server.resource_version}&timeoutSeconds=0.2")
    assert (status, lines) == (200, [])


def test_client_watch_raises_410(server: FakeApiServer,
                                 resource_api: client.ResourceV1Api) -> None:
    server.compact()
    # Client 37 guesses the claim model name wrongly (V1ResourceClaim), so name it.
    stream = watch.Watch(return_type=client.ResourceV1ResourceClaim).stream(
        resource_api.list_namespaced_resource_claim, "default", resource_version="1")
    with pytest.raises(client.ApiException) as err:
        next(stream)
    assert err.value.status == 410


def test_client_watch_with_bookmarks(resource_api: client.ResourceV1Api) -> None:
    with FakeApiServer(bookmark_interval=0.1) as srv, srv.api_client() as api:
        slices = client.ResourceV1Api(api)
        start = slices.list_resource_slice().metadata.resource_version
        w = watch.Watch()
        seen: list[tuple[str, Any]] = []

        def writes() -> None:
            time.sleep(0.3)
            slices.create_resource_slice({
                "metadata": {"name": "s"}, "spec": {
                    "driver": "gpu.example.com", "nodeName": "node-1",
                    "pool": {"name": "node-1", "generation": 1, "resourceSliceCount": 1},
                    "devices": [{"name": "gpu-0"}]}})
            slices.patch_resource_slice("s", {"metadata": {"labels": {"a": "b"}}})
            slices.delete_resource_slice("s")

        writer = threading.Thread(target=writes)
        writer.start()
        for event in w.stream(slices.list_resource_slice, resource_version=start,
                              allow_watch_bookmarks=True, timeout_seconds=2):
            seen.append((event["type"], event["object"]))
            if event["type"] == "DELETED":
                w.stop()
        writer.join()
        kinds = [kind for kind, _ in seen]
        assert [k for k in kinds if k != "BOOKMARK"] == ["ADDED", "MODIFIED", "DELETED"]
        assert "BOOKMARK" in kinds
        assert isinstance(seen[-1][1], client.V1ResourceSlice)
        assert seen[-1][1].metadata.labels == {"a": "b"}


def test_watch_without_version_starts_with_current_state(server: FakeApiServer) -> None:
    server.seed(fixture("resourceslice-created.json"))
    for query in ("watch=1&timeoutSeconds=0.2", "watch=true&resourceVersion=0&timeoutSeconds=0.2"):
        status, lines = watch_raw(server, SLICES, query)
        events = [json.loads(line) for line in lines]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "node-1-gpu.example.com-abcde")]


def test_no_bookmarks_unless_asked(server: FakeApiServer) -> None:
    status, lines = watch_raw(server, SLICES, "watch=1&timeoutSeconds=0.3",
                              during=server.send_bookmarks)
    assert lines == []


def test_selector_transitions(server: FakeApiServer, resource_api: client.ResourceV1Api) -> None:
    start = server.resource_version
    resource_api.create_namespaced_resource_claim("default", {
        "metadata": {"name": "c", "labels": {"app": "a"}}, "spec": {"devices": {"requests": []}}})
    for value in ("b", "a"):
        resource_api.patch_namespaced_resource_claim("c", "default",
                                                     {"metadata": {"labels": {"app": value}}})
    resource_api.create_namespaced_resource_claim("other", {
        "metadata": {"name": "c", "labels": {"app": "a"}}, "spec": {"devices": {"requests": []}}})
    status, lines = watch_raw(server, CLAIMS, f"watch=1&resourceVersion={start}"
                              "&labelSelector=app%3Da&timeoutSeconds=0.3")
    events = [json.loads(line) for line in lines]
    assert [e["type"] for e in events] == ["ADDED", "DELETED", "ADDED"]
    # leaving the selector: the previous content, at the version of the change
    assert events[1]["object"]["metadata"]["labels"] == {"app": "a"}
    assert events[1]["object"]["metadata"]["resourceVersion"] == str(int(start) + 2)
    status, lines = watch_raw(server, "/apis/resource.k8s.io/v1/resourceclaims",
                              f"watch=1&resourceVersion={start}&fieldSelector="
                              "metadata.namespace%3Dother&timeoutSeconds=0.3")
    assert [json.loads(line)["type"] for line in lines] == ["ADDED"]


def test_watch_ends_on_stop() -> None:
    srv = FakeApiServer(bookmark_interval=None).start()
    result: dict[str, Any] = {}

    def run() -> None:
        result["status"], result["body"] = raw_request(srv, "GET", f"{SLICES}?watch=1")

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.2)
    srv.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()
