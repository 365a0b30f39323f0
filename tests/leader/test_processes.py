"""Real child processes electing on one fake API server: one leader at a time, crash takeover."""

from __future__ import annotations

import time
from pathlib import Path

from dra_framework.testing.fakeapi import FakeApiServer

from .conftest import wait_until
from .leaderproc import LEASE, RETRY, LeaderProcess, read_markers


def leading_intervals(markers: list[tuple[float, str, str]], killed: dict[str, float]
                      ) -> list[tuple[float, float, str]]:
    """``(start, end, identity)`` per term; a killed leader's term ends when it was killed."""
    open_terms: dict[str, float] = {}
    terms = []
    for at, event, who in markers:
        if event == "start":
            assert who not in open_terms, f"{who} started twice"
            open_terms[who] = at
        else:
            terms.append((open_terms.pop(who), at, who))
    for who, at in open_terms.items():
        terms.append((at, killed.get(who, float("inf")), who))
    return sorted(terms)


def test_one_leader_among_processes_and_takeover_after_kill(
        fake: FakeApiServer, lease_name: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    procs = {who: LeaderProcess(url=fake.url, name=lease_name, identity=who, markers=markers,
                                log_dir=tmp_path) for who in ("p1", "p2", "p3")}
    killed: dict[str, float] = {}
    try:
        wait_until(lambda: read_markers(markers), timeout=20, what="a first leader")
        time.sleep(1.5 * LEASE)  # the others have seen the lease; still only one leader
        events = read_markers(markers)
        assert [e for _, e, _ in events] == ["start"], events
        first = events[0][2]

        killed[first] = time.time()
        procs[first].kill()
        wait_until(lambda: len(read_markers(markers)) == 2, timeout=3 * LEASE,
                   what="a second leader")
        at, event, second = read_markers(markers)[1]
        assert event == "start" and second != first
        assert LEASE - 3 * RETRY < at - killed[first] < LEASE + 1.0

        stopped = time.time()
        assert procs[second].terminate() == 0  # releases the lease: the last one takes over
        wait_until(lambda: len(read_markers(markers)) == 4, timeout=3 * LEASE,
                   what="a third leader")
        events = read_markers(markers)
        (_, e2, w2), (at3, e3, third) = events[2], events[3]
        assert (e2, w2, e3) == ("stop", second, "start") and third not in (first, second)
        assert at3 - stopped < 0.6

        terms = leading_intervals(read_markers(markers), killed)
        for (_, end, who), (start, _, nxt) in zip(terms, terms[1:], strict=False):
            assert end <= start, f"{who} and {nxt} led at the same time: {terms}"
        lease = fake.get("leases", lease_name)
        assert lease is not None and lease["spec"]["holderIdentity"] == third
        assert lease["spec"]["leaseTransitions"] == 2
    finally:
        for proc in procs.values():
            if proc.proc.poll() is None:
                proc.kill()
