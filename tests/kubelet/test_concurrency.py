"""Two plugin processes of one driver (old and new pod of a rolling update) side by side."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dra_framework.models import ClaimRef
from dra_framework.node.checkpoint import recorded_phases
from dra_framework.testing.claims import Result, allocated_claim
from dra_framework.testing.fakeapi import FakeApiServer

from .serveproc import ServeProcess

pytestmark = pytest.mark.slow


def test_two_processes_prepare_concurrently(short_tmp: Path, api: FakeApiServer) -> None:
    kubeconfig = short_tmp / "kubeconfig"
    api.write_kubeconfig(kubeconfig)
    old = ServeProcess(short_tmp, kubeconfig=kubeconfig, rolling_update_uid="old",
                       options=("example.devices=16",))
    new = ServeProcess(short_tmp, kubeconfig=kubeconfig, rolling_update_uid="new",
                       options=("example.devices=16",))
    try:
        conns = [old.connect(), new.connect()]
        claims: list[ClaimRef] = []
        for i in range(32):  # two claims for every device: only one of each pair may win
            obj = allocated_claim(name=f"race-{i}", results=[
                Result(request="gpu", device=f"gpu-{i % 16}")])
            api.seed(obj)
            m = obj["metadata"]
            claims.append(ClaimRef(namespace=m["namespace"], name=m["name"], uid=m["uid"]))

        def prepare(i: int) -> tuple[ClaimRef, str]:
            c = claims[i]
            return c, conns[i % 2].prepare([c])[c.uid].error

        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(prepare, range(32)))
        winners = [c for c, err in outcomes if not err]
        losers = [(c, err) for c, err in outcomes if err]
        assert len(winners) == 16 and len(losers) == 16
        assert all("is already prepared for claim" in err for _, err in losers)
        state = short_tmp / "plugins" / "gpu.example.com"
        assert recorded_phases(state) == {c.uid: "prepared" for c in winners}
        assert len(list((short_tmp / "cdi").glob("*.json"))) == 16

        # the kubelet may unprepare in the other pod: state is shared, not per process
        def unprepare(i: int) -> str:
            c = winners[i]
            return conns[(i + 1) % 2].unprepare([c])[c.uid]

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(unprepare, range(16))) == {""}
        assert list((state / "claims").glob("*.json")) == []
        assert list((short_tmp / "cdi").glob("*.json")) == []
    finally:
        assert old.stop() == 0
        assert new.stop() == 0
