"""API failures: an unreachable server, 5xx, 409 races, leases left by dead holders."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dra_framework.testing.fakeapi import FakeApiServer

from .conftest import LEASE, RENEW, RETRY, FlakyApi, MakeElector, api_for, wait_until
from .tcpproxy import TcpProxy


def lease(name: str, *, holder: str, renew: str, transitions: int = 0,
          duration: int = 1) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": renew, "renewTime": renew, "leaseTransitions": transitions}}


def test_leader_that_loses_the_api_steps_down_before_the_standby_takes_over(
        fake: FakeApiServer, lease_name: str, make_elector: MakeElector) -> None:
    proxy = TcpProxy(("127.0.0.1", int(fake.url.rsplit(":", 1)[1])))
    try:
        a, a_events = make_elector("a", api=api_for(proxy.url))
        wait_until(lambda: a.is_leader, what="a to lead")
        b, b_events = make_elector("b")
        wait_until(lambda: b.holder == "a", what="b to see a")
        time.sleep(3 * RETRY)

        cut = time.monotonic()
        proxy.close()
        wait_until(lambda: a_events.stopped, timeout=2 * LEASE, what="a to step down")
        assert a_events.stopped[0] - cut < RETRY + RENEW + 0.3
        assert not a.is_leader and a_events.stop_events[0].is_set()
        wait_until(lambda: b_events.started, timeout=3 * LEASE, what="b to take over")
        assert a_events.work_ended[0] < b_events.started[0]
        assert b_events.started[0] - cut > LEASE - 3 * RETRY
        time.sleep(3 * RETRY)  # a keeps trying against a closed port without crashing
        assert a._thread is not None and a._thread.is_alive() and not a.is_leader
    finally:
        proxy.close()


@pytest.mark.parametrize("status", [500, 503, 0], ids=["500", "503", "connection-reset"])
def test_failed_renewals_within_the_deadline_are_retried(
        fake: FakeApiServer, lease_name: str, make_elector: MakeElector, status: int) -> None:
    a, events = make_elector("a")
    wait_until(lambda: a.is_leader, what="a to lead")
    fake.fail_next(method="PUT", resource="leases", status=status, count=3)
    fake.clear_requests()
    wait_until(lambda: sum(r.method == "PUT" for r in fake.requests) >= 6, timeout=2.0,
               what="renewals after the failures")
    assert a.is_leader and events.stopped == [] and len(events.started) == 1


def test_leader_steps_down_after_the_renew_deadline_and_leads_again_later(
        fake: FakeApiServer, lease_name: str, make_elector: MakeElector) -> None:
    api = FlakyApi(url=fake.url)
    a, events = make_elector("a", api=api)
    wait_until(lambda: a.is_leader, what="a to lead")
    broken = time.monotonic()
    api.broken = True
    wait_until(lambda: events.stopped, timeout=2 * LEASE, what="a to step down")
    assert RENEW <= events.stopped[0] - broken < RETRY + RENEW + 0.3
    assert events.stop_events[0].is_set() and not a.is_leader
    time.sleep(2 * RETRY)
    api.broken = False
    wait_until(lambda: len(events.started) == 2, timeout=2 * LEASE, what="a to lead again")
    assert len(events.started) == 2 and not events.stop_events[1].is_set()
    assert fake.get("leases", lease_name)["spec"]["holderIdentity"] == "a"  # type: ignore[index]


def test_conflict_on_create_is_retried(fake: FakeApiServer, lease_name: str,
                                       make_elector: MakeElector) -> None:
    fake.fail_next(method="POST", resource="leases", status=409)
    a, _ = make_elector("a")
    wait_until(lambda: a.is_leader, timeout=1.0, what="a to lead")
    assert sum(r.method == "POST" for r in fake.requests) == 2


def test_stale_write_loses_to_the_contender_that_wrote_first(
        fake: FakeApiServer, lease_name: str, make_elector: MakeElector) -> None:
    fake.seed(lease(lease_name, holder="", renew="2024-01-01T00:00:00.000000Z", transitions=4))
    api = FlakyApi(url=fake.url)
    raced: list[float] = []

    def rival_writes_first() -> None:  # after our read, before our write: ours gets 409
        fake.seed(lease(lease_name, holder="rival", renew="2024-01-01T00:00:01.000000Z",
                        transitions=5))
        raced.append(time.monotonic())

    api.before_write = rival_writes_first
    a, events = make_elector("a", api=api)
    wait_until(lambda: raced and a.holder == "rival", what="a to see the rival")
    time.sleep(0.5 * LEASE)
    assert not a.is_leader and events.started == []
    wait_until(lambda: events.started, timeout=2 * LEASE, what="a to take over")
    assert events.started[0] - raced[0] > LEASE - 2 * RETRY
    spec = fake.get("leases", lease_name)["spec"]  # type: ignore[index]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("a", 6)


def test_lease_of_a_dead_holder_is_taken_one_lease_duration_after_seeing_it(
        fake: FakeApiServer, lease_name: str, make_elector: MakeElector) -> None:
    """The holder's renewTime is years old; only our own observation counts."""
    fake.seed(lease(lease_name, holder="ghost", renew="2000-01-01T00:00:00.000000Z"))
    started = time.monotonic()
    a, events = make_elector("a")
    wait_until(lambda: a.holder == "ghost", what="a to see the ghost")
    wait_until(lambda: events.started, timeout=2 * LEASE, what="a to take over")
    assert LEASE <= events.started[0] - started < LEASE + 0.6
