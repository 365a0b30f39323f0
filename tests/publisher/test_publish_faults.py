"""The running publisher: watch, triggers, conflicts, outages and refusals by the server."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import attrs
import pytest
from prometheus_client import REGISTRY

from dra_framework.api.apiversions import V1
from dra_framework.api.rest import KubeApi
from dra_framework.api.slices import NodePool
from dra_framework.testing.fakeapi import FakeApiServer

from .helpers import (
    DRIVER,
    NODE,
    device_names,
    fixture,
    gpus,
    kube_api,
    make_publisher,
    node_inventory,
    pool_numbers,
    running,
    slices,
    wait_for,
)

SLICES = V1.path("resourceslices")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"driver": DRIVER, **labels}) or 0.0


def converged(server: FakeApiServer, count: int) -> bool:
    stored = slices(server)
    return (sorted(device_names(stored)) == sorted(f"gpu-{i}" for i in range(count))
            and len(pool_numbers(stored)) == 1
            and next(iter(pool_numbers(stored)))[1] == len(stored))


def test_kubelet_wipe_is_undone_by_the_watch(server: FakeApiServer) -> None:
    publisher = make_publisher(server, node_inventory(gpus(300)))
    with running(publisher):
        wait_for(lambda: converged(server, 300), what="first publish")
        api = kube_api(server)
        api.request("DELETE", SLICES, query=[("fieldSelector", f"spec.nodeName={NODE}")])
        assert slices(server) == []
        wait_for(lambda: converged(server, 300), what="slices recreated")
        assert len(slices(server)) == 3


def test_slice_changed_by_someone_else_is_restored(server: FakeApiServer) -> None:
    publisher = make_publisher(server, node_inventory(gpus(4)))
    with running(publisher):
        wait_for(lambda: converged(server, 4))
        [stored] = slices(server)
        stored["spec"]["devices"] = stored["spec"]["devices"][:1]
        kube_api(server).replace(V1.path("resourceslices", name=stored["metadata"]["name"]),
                                 stored)
        wait_for(lambda: converged(server, 4), what="slice restored")


def test_own_writes_do_not_trigger_more_reconciles(server: FakeApiServer) -> None:
    publisher = make_publisher(server, node_inventory(gpus(300)))
    with running(publisher):
        wait_for(lambda: converged(server, 300))
        time.sleep(0.5)
        server.clear_requests()
        time.sleep(0.6)  # bookmarks arrive; nothing else happens
    assert server.write_count() == 0
    assert not [r for r in server.requests if r.method == "GET" and "watch" not in r.query]


class RacingApi(KubeApi):
    """Someone else updates the slice right before the publisher's first PUT."""

    def __init__(self, server: FakeApiServer) -> None:
        super().__init__(api_client=server.api_client(), timeout=5)
        self.other = kube_api(server)
        self.raced = 0

    def replace(self, url_path: str, obj: Any, **kw: Any) -> dict[str, Any]:
        if not self.raced:
            self.raced += 1
            current = self.other.get(url_path)
            current["metadata"].setdefault("labels", {})["touched-by"] = "someone-else"
            self.other.replace(url_path, current)
        return super().replace(url_path, obj, **kw)


def test_conflict_is_reread_and_converges(server: FakeApiServer) -> None:
    inventory = node_inventory(gpus(4))
    api = RacingApi(server)
    publisher = make_publisher(server, inventory, api=api)
    publisher.reconcile_once()
    devices = list(gpus(4))
    devices[1] = attrs.evolve(devices[1], attributes={"index": 99})
    inventory.value = NodePool(tuple(devices))
    before = metric("dra_framework_publish_errors_total", kind="conflict")
    result = publisher.reconcile_once()
    assert api.raced == 1 and result.updated == 1
    assert metric("dra_framework_publish_errors_total", kind="conflict") == before + 1
    [stored] = slices(server)
    assert stored["spec"]["devices"][1]["attributes"] == {"index": {"int": 99}}
    assert stored["metadata"]["labels"] == {"touched-by": "someone-else"}
    assert publisher.reconcile_once().writes == 0


def test_outage_then_recovery_converges(server: FakeApiServer,
                                        caplog: pytest.LogCaptureFixture) -> None:
    inventory = node_inventory(gpus(4))
    publisher = make_publisher(server, inventory, resync_interval=0.5)
    with caplog.at_level(logging.WARNING), running(publisher):
        wait_for(lambda: converged(server, 4))
        server.pause()
        inventory.value = NodePool(gpus(200))
        publisher.trigger()
        time.sleep(2.5)
        assert publisher.running
        server.resume()
        wait_for(lambda: converged(server, 200), what="convergence after the outage")
    assert "publishing ResourceSlices failed" in caplog.text


def test_outage_before_the_first_publish(server: FakeApiServer) -> None:
    server.pause(refuse=True)
    publisher = make_publisher(server, node_inventory(gpus(4)), resync_interval=0.5)
    with running(publisher):
        time.sleep(2.0)
        server.resume()
        wait_for(lambda: converged(server, 4), what="first publish after the outage")


def watch_requests(server: FakeApiServer) -> int:
    return sum(1 for r in list(server.requests) if r.method == "GET" and "watch=1" in r.query)


def test_watch_gone_relists_and_keeps_watching(server: FakeApiServer) -> None:
    publisher = make_publisher(server, node_inventory(gpus(4)), watch_timeout=1)
    with running(publisher):
        wait_for(lambda: converged(server, 4))
        server.clear_requests()
        server.fail_next(method="watch", resource="resourceslices", status=410)

        def relisted() -> bool:
            queries = [r.query for r in list(server.requests) if r.method == "GET"]
            watches = [i for i, q in enumerate(queries) if "watch=1" in q]
            lists = [i for i, q in enumerate(queries) if "watch" not in q]
            return bool(watches) and any(i > watches[0] for i in lists)

        wait_for(relisted, timeout=5, what="a list after 410 Gone")
        kube_api(server).request("DELETE", SLICES,
                                 query=[("fieldSelector", f"spec.nodeName={NODE}")])
        wait_for(lambda: converged(server, 4), what="slices back after the re-list")


def test_changes_missed_while_the_watch_was_down_are_reconciled(
        server: FakeApiServer) -> None:
    publisher = make_publisher(server, node_inventory(gpus(4)), watch_timeout=1)
    with running(publisher):
        wait_for(lambda: converged(server, 4))
        server.clear_requests()
        server.fail_next(method="watch", resource="resourceslices", status=503, count=6)
        wait_for(lambda: watch_requests(server) >= 2, what="failing watches")
        kube_api(server).request("DELETE", SLICES,
                                 query=[("fieldSelector", f"spec.nodeName={NODE}")])
        wait_for(lambda: converged(server, 4), what="slices back after the watch recovered")


def test_server_refusal_is_logged_as_is_without_a_hot_loop(
        server: FakeApiServer, caplog: pytest.LogCaptureFixture) -> None:
    refusal = fixture("error-slice-string-value-too-long.json")
    server.fail_next(method="create", resource="resourceslices", status=422, body=refusal,
                     count=1000)
    publisher = make_publisher(server, node_inventory(gpus(4)), resync_interval=0.6)
    with caplog.at_level(logging.ERROR, logger="dra_framework.api.publisher"):
        result = publisher.reconcile_once()
        assert result.errors == [refusal["message"]] and not result.ok
        server.clear_requests()
        with running(publisher):
            time.sleep(1.5)
    posts = [r for r in server.requests if r.method == "POST"]
    assert 1 <= len(posts) <= 3, f"{len(posts)} creates in 1.5 s with a 0.6 s resync"
    assert refusal["message"] in caplog.text


def test_transient_errors_are_retried_within_a_reconcile(server: FakeApiServer) -> None:
    server.fail_next(method="create", resource="resourceslices", status=503, count=2)
    server.fail_next(method="list", resource="resourceslices", status=0, count=1)
    result = make_publisher(server, node_inventory(gpus(4))).reconcile_once()
    assert result.created == 1 and converged(server, 4)


def test_trigger_publishes_the_new_inventory_and_counts_writes(server: FakeApiServer) -> None:
    inventory = node_inventory(gpus(4))
    publisher = make_publisher(server, inventory)
    creates = metric("dra_framework_slice_writes_total", verb="create")
    updates = metric("dra_framework_slice_writes_total", verb="update")
    with running(publisher):
        wait_for(lambda: converged(server, 4))
        inventory.value = NodePool(gpus(5))
        threading.Thread(target=publisher.trigger).start()
        wait_for(lambda: converged(server, 5), what="triggered publish")
    assert metric("dra_framework_slice_writes_total", verb="create") == creates + 1
    assert metric("dra_framework_slice_writes_total", verb="update") == updates + 1
    assert metric("dra_framework_published_slices") == 1


def test_stop_leaves_the_slices(server: FakeApiServer) -> None:
    publisher = make_publisher(server, node_inventory(gpus(4)))
    with running(publisher):
        wait_for(lambda: converged(server, 4))
    assert not publisher.running
    writes = server.write_count()
    time.sleep(0.3)
    assert len(slices(server)) == 1 and server.write_count() == writes


def test_backend_failure_is_retried(server: FakeApiServer) -> None:
    calls = []

    def flaky() -> NodePool:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("device scan failed")
        return NodePool(gpus(2))

    with running(make_publisher(server, flaky)):
        wait_for(lambda: converged(server, 2), what="publish after the backend recovered")
    assert metric("dra_framework_publish_errors_total", kind="backend") >= 1
