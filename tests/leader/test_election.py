"""One leader at a time: acquiring, renewing, standing by and handing over."""

from __future__ import annotations

import datetime
import time

import pytest
from prometheus_client import REGISTRY

from dra_framework.api.leader import Clock
from dra_framework.testing.fakeapi import FakeApiServer

from .conftest import LEASE, RETRY, MakeElector, wait_until


def spec(fake: FakeApiServer, name: str) -> dict[str, object]:
    lease = fake.get("leases", name)
    assert lease is not None
    result: dict[str, object] = lease["spec"]
    return result


def gauge(lease: str, identity: str) -> float | None:
    return REGISTRY.get_sample_value("dra_framework_leader",
                                     {"lease": f"default/{lease}", "identity": identity})


def test_single_elector_acquires_and_renews(fake: FakeApiServer, lease_name: str,
                                            make_elector: MakeElector) -> None:
    a, events = make_elector("a")
    wait_until(lambda: a.is_leader, what="a to lead")
    first = spec(fake, lease_name)
    assert first["holderIdentity"] == "a"
    assert gauge(lease_name, "a") == 1
    wait_until(lambda: spec(fake, lease_name)["renewTime"] != first["renewTime"],
               timeout=1.0, what="a renewal")
    time.sleep(3 * RETRY)
    later = spec(fake, lease_name)
    assert str(later["renewTime"]) > str(first["renewTime"])
    assert later["acquireTime"] == first["acquireTime"]
    assert later["leaseTransitions"] == 0
    assert len(events.started) == 1 and not events.stop_events[0].is_set()
    assert events.stopped == []

    a.stop(timeout=5)
    assert not a.is_leader
    assert events.stop_events[0].is_set() and len(events.stopped) == 1
    assert gauge(lease_name, "a") == 0
    assert spec(fake, lease_name)["holderIdentity"] == ""


class SkewedClock(Clock):
    """A wall clock an hour behind: what this elector writes is far in the past."""

    def now(self) -> datetime.datetime:
        return super().now() - datetime.timedelta(hours=1)


def test_second_elector_waits_while_first_renews(fake: FakeApiServer, lease_name: str,
                                                 make_elector: MakeElector) -> None:
    a, a_events = make_elector("a", clock=SkewedClock())
    wait_until(lambda: a.is_leader, what="a to lead")
    b, b_events = make_elector("b")
    wait_until(lambda: b.holder == "a", what="b to see a")
    time.sleep(2.5 * LEASE)  # a's renewTime is an hour old, but it keeps changing
    assert a.is_leader and not b.is_leader
    assert b_events.started == [] and a_events.stopped == []
    assert spec(fake, lease_name)["holderIdentity"] == "a"
    assert gauge(lease_name, "b") == 0


@pytest.mark.parametrize("release", [True, False], ids=["released", "left-to-expire"])
def test_handover_when_the_leader_stops(fake: FakeApiServer, lease_name: str,
                                        make_elector: MakeElector, release: bool) -> None:
    a, a_events = make_elector("a", release_on_cancel=release)
    wait_until(lambda: a.is_leader, what="a to lead")
    b, b_events = make_elector("b")
    wait_until(lambda: b.holder == "a", what="b to see a")
    time.sleep(3 * RETRY)

    stopped_at = time.monotonic()
    a.stop(timeout=5)
    assert not a.is_leader and len(a_events.stopped) == 1
    if not release:
        assert spec(fake, lease_name)["holderIdentity"] == "a"
    wait_until(lambda: b_events.started, timeout=3 * LEASE, what="b to take over")
    took = b_events.started[0] - stopped_at
    if release:
        assert took < 0.5
    else:  # b must see a's record unchanged for a whole lease duration
        assert LEASE - 3 * RETRY < took < LEASE + 0.8
    assert a_events.work_ended[0] < b_events.started[0]
    after = spec(fake, lease_name)
    assert after["holderIdentity"] == "b"
    assert after["leaseTransitions"] == 1


def test_a_released_lease_is_acquired_again_by_anyone(fake: FakeApiServer, lease_name: str,
                                                      make_elector: MakeElector) -> None:
    a, _ = make_elector("a")
    wait_until(lambda: a.is_leader, what="a to lead")
    a.stop(timeout=5)
    started = time.monotonic()
    b, _ = make_elector("b")
    wait_until(lambda: b.is_leader, timeout=3 * LEASE, what="b to lead")
    assert time.monotonic() - started < 0.5
