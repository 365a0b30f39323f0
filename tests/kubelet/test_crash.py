"""``kill -9`` of a real ``serve`` process at each step of a prepare or unprepare, then restart.

After the restart there must be no leaked CDI spec, no device left set up by the backend, and
no half-prepared claim: the claim is either fully prepared (the crash came after the commit) or
not prepared at all, and preparing it again works.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from dra_framework.node import faults
from dra_framework.node.checkpoint import recorded_phases
from dra_framework.testing.claims import Result, allocated_claim
from dra_framework.testing.fakeapi import FakeApiServer
from dra_framework.testing.kubelet import PluginRpcError

from .serveproc import ServeProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def kubeconfig(short_tmp: Path, api: FakeApiServer) -> Iterator[Path]:
    path = short_tmp / "kubeconfig"
    api.write_kubeconfig(path)
    yield path


def backend_markers(root: Path) -> list[str]:
    d = root / "plugins" / "dra-framework" / "example" / "prepared"
    return sorted(p.stem for p in d.iterdir()) if d.exists() else []


def cdi_specs(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "cdi").glob("*")) if (root / "cdi").exists() else []


def records(root: Path) -> dict[str, str]:
    return recorded_phases(root / "plugins" / "gpu.example.com")


@pytest.mark.parametrize("point", faults.PREPARE_POINTS)
def test_kill_during_prepare(point: str, short_tmp: Path, api: FakeApiServer,
                             kubeconfig: Path) -> None:
    c = api_claim(api, f"crash-{point.split(':')[1]}")
    victim = ServeProcess(short_tmp, kubeconfig=kubeconfig, crash_at=point)
    with pytest.raises(PluginRpcError):
        victim.connect().prepare([c])
    assert victim.wait() == -signal.SIGKILL
    victim.kubelet.close()

    survivor = ServeProcess(short_tmp, kubeconfig=kubeconfig)
    try:
        conn = survivor.connect()
        if point == "prepare:committed":
            assert records(short_tmp) == {c.uid: "prepared"}
            assert backend_markers(short_tmp) == ["gpu-0", "gpu-1"]
            assert cdi_specs(short_tmp) == [f"k8s.gpu.example.com-gpu_{c.uid}.json"]
        else:  # rolled back at start-up
            assert records(short_tmp) == {}
            assert backend_markers(short_tmp) == []
            assert cdi_specs(short_tmp) == []
        result = conn.prepare([c])[c.uid]
        assert result.error == ""
        assert [d.device_name for d in result.devices] == ["gpu-0", "gpu-1"]
        assert cdi_specs(short_tmp) == [f"k8s.gpu.example.com-gpu_{c.uid}.json"]
        assert conn.unprepare([c]) == {c.uid: ""}
        assert backend_markers(short_tmp) == [] and cdi_specs(short_tmp) == []
        assert records(short_tmp) == {}
    finally:
        assert survivor.stop() == 0


@pytest.mark.parametrize("point", faults.UNPREPARE_POINTS)
def test_kill_during_unprepare(point: str, short_tmp: Path, api: FakeApiServer,
                               kubeconfig: Path) -> None:
    c = api_claim(api, f"crash-un-{point.split(':')[1]}")
    victim = ServeProcess(short_tmp, kubeconfig=kubeconfig, crash_at=point)
    conn = victim.connect()
    assert conn.prepare([c])[c.uid].error == ""
    with pytest.raises(PluginRpcError):
        conn.unprepare([c])
    assert victim.wait() == -signal.SIGKILL
    victim.kubelet.close()

    survivor = ServeProcess(short_tmp, kubeconfig=kubeconfig)
    try:
        conn = survivor.connect()
        assert conn.unprepare([c]) == {c.uid: ""}  # the kubelet retries the unprepare
        assert backend_markers(short_tmp) == [] and cdi_specs(short_tmp) == []
        assert records(short_tmp) == {}
    finally:
        assert survivor.stop() == 0


def api_claim(api: FakeApiServer, name: str):  # type: ignore[no-untyped-def]
    from dra_framework.models import ClaimRef

    obj = allocated_claim(name=name, results=[Result(request="gpu", device="gpu-0"),
                                              Result(request="gpu", device="gpu-1")])
    api.seed(obj)
    m = obj["metadata"]
    return ClaimRef(namespace=m["namespace"], name=m["name"], uid=m["uid"])
