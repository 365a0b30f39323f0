"""Request log, injected failures, outages."""

from __future__ import annotations

import json
import threading
import time

import pytest
import urllib3
from kubernetes import client

from dra_framework.testing.fakeapi import FakeApiServer, Request

from .helpers import body_of, raw_request, slice_body


def test_request_log_and_write_count(server: FakeApiServer,
                                     resource_api: client.ResourceV1Api) -> None:
    resource_api.create_resource_slice(slice_body("s"))
    resource_api.read_resource_slice("s")
    resource_api.list_resource_slice(field_selector="spec.nodeName=node-1")
    resource_api.patch_resource_slice("s", {"metadata": {"labels": {"a": "b"}}})
    resource_api.delete_resource_slice("s")
    assert server.requests[0] == Request("POST", "/apis/resource.k8s.io/v1/resourceslices", "")
    assert server.requests[2].query == "fieldSelector=spec.nodeName%3Dnode-1"
    assert [r.method for r in server.requests] == ["POST", "GET", "GET", "PATCH", "DELETE"]
    assert server.write_count() == 3
    assert server.write_count(resource="resourceslices") == 3
    assert server.write_count(resource="ResourceClaim") == 0
    server.clear_requests()
    assert server.requests == []


def test_fail_next_by_method_and_resource(server: FakeApiServer,
                                          resource_api: client.ResourceV1Api) -> None:
    server.seed(slice_body("s"))
    server.fail_next(method="GET", resource="resourceslices", status=503, count=2)
    for _ in range(2):
        with pytest.raises(client.ApiException) as err:
            resource_api.read_resource_slice("s")
        assert err.value.status == 503
        assert body_of(err.value)["reason"] == "ServiceUnavailable"
    assert resource_api.read_resource_slice("s").metadata.name == "s"


def test_fail_next_by_verb_with_body(server: FakeApiServer,
                                     resource_api: client.ResourceV1Api) -> None:
    server.seed(slice_body("s"))
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "etcd is sad", "reason": "InternalError", "code": 500}
    server.fail_next(method="list", body=body)
    resource_api.read_resource_slice("s")  # a get is not a list
    with pytest.raises(client.ApiException) as err:
        resource_api.list_resource_slice()
    assert body_of(err.value) == body
    assert len(resource_api.list_resource_slice().items) == 1


def test_fail_next_status_subresource_only(server: FakeApiServer,
                                           resource_api: client.ResourceV1Api) -> None:
    server.seed({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                 "metadata": {"name": "c", "namespace": "default"},
                 "spec": {"devices": {"requests": []}}})
    server.fail_next(resource="resourceclaims/status", status=409)
    resource_api.patch_namespaced_resource_claim("c", "default", {"metadata": {"labels": {
        "a": "b"}}})
    with pytest.raises(client.ApiException) as err:
        resource_api.patch_namespaced_resource_claim_status("c", "default", {"status": {}})
    assert err.value.status == 409


def test_fail_next_reset(server: FakeApiServer) -> None:
    server.fail_next(method="POST", status=0)
    with pytest.raises(ConnectionError):
        raw_request(server, "POST", "/apis/resource.k8s.io/v1/resourceslices",
                    json.dumps(slice_body("s")))
    status, _ = raw_request(server, "POST", "/apis/resource.k8s.io/v1/resourceslices",
                            json.dumps(slice_body("s")))
    assert status == 201


@pytest.mark.parametrize("refuse", [False, True], ids=["reset", "refuse"])
def test_pause_and_resume(server: FakeApiServer, refuse: bool) -> None:
    configuration = client.Configuration()
    configuration.host = server.url
    configuration.retries = urllib3.Retry(total=0)
    with client.ApiClient(configuration) as api:
        slices = client.ResourceV1Api(api)
        slices.create_resource_slice(slice_body("s"))  # a kept-alive connection now exists
        server.pause(refuse=refuse)
        with pytest.raises(urllib3.exceptions.HTTPError):
            slices.read_resource_slice("s")
        with pytest.raises(urllib3.exceptions.HTTPError):
            slices.read_resource_slice("s")
        server.resume()
        assert slices.read_resource_slice("s").metadata.name == "s"


def test_pause_drops_open_watches(server: FakeApiServer) -> None:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(raw_request(server, "GET",
                                       "/apis/resource.k8s.io/v1/resourceslices?watch=1"))
        except Exception as exc:  # noqa: BLE001 - any transport error is the point
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.2)
    server.pause()
    thread.join(timeout=5)
    server.resume()
    assert not thread.is_alive()
    assert isinstance(outcome[0], Exception)


def test_hang_next_holds_a_request_until_released(server: FakeApiServer,
                                                  resource_api: client.ResourceV1Api) -> None:
    server.seed(slice_body("s"))
    server.hang_next(method="get", resource="resourceslices")
    answers: list[str] = []
    reader = threading.Thread(
        target=lambda: answers.append(resource_api.read_resource_slice("s").metadata.name))
    reader.start()
    deadline = time.monotonic() + 5
    while server.hanging == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.hanging == 1
    assert len(resource_api.list_resource_slice().items) == 1  # only the get is held
    assert answers == [] and reader.is_alive()
    server.release()
    reader.join(timeout=5)
    assert answers == ["s"] and server.hanging == 0
    assert resource_api.read_resource_slice("s").metadata.name == "s"  # count=1: used up


def test_hang_next_with_a_delay_answers_after_it(server: FakeApiServer,
                                                 resource_api: client.ResourceV1Api) -> None:
    server.seed(slice_body("s"))
    server.hang_next(resource="resourceslices", delay=0.2)
    started = time.monotonic()
    assert resource_api.read_resource_slice("s").metadata.name == "s"
    assert time.monotonic() - started >= 0.2


def test_a_held_request_is_answered_by_the_next_fault(server: FakeApiServer,
                                                      resource_api: client.ResourceV1Api) -> None:
    server.seed(slice_body("s"))
    server.hang_next(resource="resourceslices", delay=0.01)
    server.fail_next(resource="resourceslices", status=503)
    with pytest.raises(client.ApiException) as err:
        resource_api.read_resource_slice("s")
    assert err.value.status == 503


def test_stop_releases_held_requests() -> None:
    server = FakeApiServer(bookmark_interval=None).start()
    server.hang_next()
    result: list[object] = []

    def call() -> None:
        try:
            raw_request(server, "GET", "/api/v1/nodes")
        except Exception as exc:  # a dropped connection, however http.client words it
            result.append(exc)
        else:
            result.append("answered")

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5
    while server.hanging == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.stop()
    caller.join(timeout=5)
    assert not caller.is_alive() and result  # answered, or its connection dropped
    while server.hanging and time.monotonic() < deadline + 5:
        time.sleep(0.01)  # the released handler thread may not have run yet
    assert server.hanging == 0


def test_send_raw_event_writes_into_open_watches(server: FakeApiServer) -> None:
    pool = urllib3.PoolManager()
    resp = pool.request("GET", f"{server.url}/apis/resource.k8s.io/v1/resourceslices?watch=1",
                        preload_content=False, timeout=5)
    deadline = time.monotonic() + 5
    while server.send_raw_event(b"not JSON", resource="resourceslices") == 0:
        assert time.monotonic() < deadline, "the watch did not open"
        time.sleep(0.01)
    assert server.send_raw_event(b"not JSON", resource="deviceclasses") == 0
    assert resp.readline() == b"not JSON\n"
    resp.release_conn()
