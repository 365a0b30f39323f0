"""The Lease as client-go writes it: field names, whole seconds, MicroTime, transitions."""

from __future__ import annotations

import datetime
import itertools
import socket
from typing import Any

import pytest

from dra_framework.api.leader import Clock, LeaderElector, default_identity, microtime
from dra_framework.testing.fakeapi import FakeApiServer

from .conftest import FlakyApi, MakeElector, api_for, wait_until

BASE = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.timezone.utc)


class TickingClock(Clock):
    """Each read of the wall clock is 250 ms after the previous one, from ``BASE``."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def now(self) -> datetime.datetime:
        return BASE + datetime.timedelta(milliseconds=250 * next(self._ticks))


def test_lease_is_written_as_client_go_writes_it(fake: FakeApiServer, lease_name: str,
                                                 make_elector: MakeElector) -> None:
    api = FlakyApi(url=fake.url)
    a, _ = make_elector("a", api=api, clock=TickingClock(), lease_duration=2.0)
    wait_until(lambda: a.is_leader, what="a to lead")
    wait_until(lambda: any(m == "PUT" for m, _, _ in api.bodies), what="a renewal")
    a.stop(timeout=5)

    writes = [(m, p, b) for m, p, b in api.bodies if m in ("POST", "PUT")]
    method, where, created = writes[0]
    assert (method, where) == ("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases")
    assert created == {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": lease_name, "namespace": "default"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 2,
                 "acquireTime": "2024-05-06T07:08:09.123456Z",
                 "renewTime": "2024-05-06T07:08:09.123456Z", "leaseTransitions": 0}}
    renewed = writes[1][2]["spec"]
    assert writes[1][1] == f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{lease_name}"
    assert writes[1][2]["metadata"]["resourceVersion"]
    assert renewed == {"holderIdentity": "a", "leaseDurationSeconds": 2,
                       "acquireTime": "2024-05-06T07:08:09.123456Z",
                       "renewTime": "2024-05-06T07:08:09.373456Z", "leaseTransitions": 0}
    released = writes[-1][2]["spec"]
    assert released["holderIdentity"] == ""
    assert released["leaseDurationSeconds"] == 1
    assert released["acquireTime"] == released["renewTime"] > renewed["renewTime"]
    assert released["leaseTransitions"] == 0
    stored = fake.get("leases", lease_name)
    assert stored is not None and stored["spec"] == released


def test_takeover_counts_a_transition_and_keeps_foreign_spec_fields(
        fake: FakeApiServer, lease_name: str, make_elector: MakeElector) -> None:
    fake.seed({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": lease_name, "namespace": "default"},
               "spec": {"holderIdentity": "", "leaseDurationSeconds": 1,
                        "acquireTime": "2024-01-01T00:00:00.000000Z",
                        "renewTime": "2024-01-01T00:00:00.000000Z", "leaseTransitions": 7,
                        "preferredHolder": "a"}})
    a, _ = make_elector("a")
    wait_until(lambda: a.is_leader, what="a to lead")
    stored = fake.get("leases", lease_name)
    assert stored is not None
    assert stored["spec"]["leaseTransitions"] == 8
    assert stored["spec"]["preferredHolder"] == "a"
    assert stored["spec"]["acquireTime"] != "2024-01-01T00:00:00.000000Z"


@pytest.mark.parametrize(("when", "text"), [
    (BASE, "2024-05-06T07:08:09.123456Z"),
    (BASE.replace(microsecond=0), "2024-05-06T07:08:09.000000Z"),
    (datetime.datetime(2024, 5, 6, 9, 8, 9, 5, tzinfo=datetime.timezone(
        datetime.timedelta(hours=2))), "2024-05-06T07:08:09.000005Z"),
], ids=["utc", "whole-second", "other-zone"])
def test_microtime(when: datetime.datetime, text: str) -> None:
    assert microtime(when) == text


def test_default_identity_is_unique_per_elector(fake: FakeApiServer) -> None:
    api = api_for(fake.url)
    first = LeaderElector(api=api, namespace="default", name="x")
    second = LeaderElector(api=api, namespace="default", name="x")
    assert first.identity.startswith(socket.gethostname() + "_")
    assert first.identity != second.identity != default_identity()


@pytest.mark.parametrize("options", [
    {"lease_duration": 0.5, "renew_deadline": 0.3, "retry_period": 0.1},
    {"lease_duration": 1.0, "renew_deadline": 1.0, "retry_period": 0.1},
    {"lease_duration": 1.9, "renew_deadline": 1.5, "retry_period": 0.1},
    {"lease_duration": 15.0, "renew_deadline": 2.0, "retry_period": 2.0},
    {"lease_duration": 15.0, "renew_deadline": 10.0, "retry_period": 0.0},
    {"identity": ""},
], ids=["lease-under-a-second", "deadline-not-below-lease", "lease-truncated-to-seconds",
        "deadline-not-above-jittered-retry", "no-retry-period", "empty-identity"])
def test_invalid_timings_are_refused(fake: FakeApiServer, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LeaderElector(api=api_for(fake.url), namespace="default", name="x", **options)
