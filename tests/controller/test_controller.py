"""``dra-framework controller``: cluster-wide pools, published by one leader at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dra_framework.testing.fakeapi import FakeApiServer
from dra_framework.testing.harness import wait_for

pytestmark = pytest.mark.slow
LEASE = "gpu.example.com-controller"


class ControllerProcess:
    def __init__(self, root: Path, kubeconfig: Path, identity: str) -> None:
        self.identity = identity
        self.log = root / f"{identity}.log"
        args = [sys.executable, "-m", "dra_framework.commands.cli", "controller",
                "--backend", "example",
                "--backend-option", "example.seats=4", "--kubeconfig", str(kubeconfig),
                "--identity", identity, "--lease-duration", "2", "--renew-deadline", "1.5",
                "--retry-period", "0.2", "--state-dir", str(root / "state"),
                "--log-format", "json"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log,
                                         env={**os.environ, "POD_NAMESPACE": "default"})

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeApiServer, Path]]:
    with FakeApiServer() as api:
        yield api, api.write_kubeconfig(tmp_path / "kubeconfig")


def holder(api: FakeApiServer) -> str:
    lease = api.get("leases", LEASE, namespace="default")
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def seat_slices(api: FakeApiServer) -> list[dict[str, Any]]:
    return [s for s in api.objects("resourceslices") if s["spec"]["pool"]["name"] == "seats"]


def test_leader_publishes_and_standby_takes_over(cluster: tuple[FakeApiServer, Path],
                                                 tmp_path: Path) -> None:
    api, kubeconfig = cluster
    a = ControllerProcess(tmp_path, kubeconfig, "replica-a")
    leader = wait_for("a leader", lambda: holder(api), timeout=15)
    b = ControllerProcess(tmp_path, kubeconfig, "replica-b")
    try:
        assert leader == "replica-a"
        (published,) = wait_for("the seats slice", lambda: seat_slices(api))
        spec = published["spec"]
        assert spec["allNodes"] is True and "nodeName" not in spec
        assert spec["driver"] == "gpu.example.com"
        assert [d["name"] for d in spec["devices"]] == [f"seat-{i}" for i in range(4)]
        assert "ownerReferences" not in published["metadata"]
        time.sleep(1.0)
        assert holder(api) == "replica-a"  # the standby waits while the leader renews

        writes = api.write_count(resource="resourceslices")
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=10)
        wait_for("replica-b to lead", lambda: holder(api) == "replica-b", timeout=15)
        time.sleep(0.5)
        # the new leader takes the slices over as they are: nothing to write
        assert api.write_count(resource="resourceslices") == writes
        assert [s["metadata"]["name"] for s in seat_slices(api)] == [
            published["metadata"]["name"]]

        # slices deleted by someone else come back
        from kubernetes import client

        client.ResourceV1Api(api.api_client()).delete_resource_slice(
            published["metadata"]["name"])
        wait_for("the slice to come back", lambda: seat_slices(api))
    finally:
        assert b.stop() == 0
        a.stop()
    assert holder(api) == ""  # released on SIGTERM
    assert seat_slices(api)  # never deleted on shutdown


def test_backend_without_cluster_pools_is_refused(cluster: tuple[FakeApiServer, Path],
                                                  tmp_path: Path,
                                                  acme_distribution: Path) -> None:
    _, kubeconfig = cluster
    result = subprocess.run(
        [sys.executable, "-m", "dra_framework.commands.cli", "controller", "--backend", "acme-min",
         "--kubeconfig", str(kubeconfig)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(acme_distribution)})
    assert result.returncode == 1
    assert "publishes no cluster pools" in result.stderr
