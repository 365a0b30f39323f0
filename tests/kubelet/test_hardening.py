"""Faults and hostile peers at the sockets of a running plugin.

Through the real sockets, in-process (``PluginHarness``) or as a real ``dra-framework serve``
process where shutdown or start-up is what is tested.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dra_framework.kubelet._proto.pluginregistration.v1 import api_pb2 as reg_pb2
from dra_framework.kubelet._proto.pluginregistration.v1 import api_pb2_grpc as reg_grpc
from dra_framework.node.calls import MAX_ERROR_CHARS
from dra_framework.testing.claims import Config, Result, allocated_claim
from dra_framework.testing.fakeapi import FakeApiServer
from dra_framework.testing.harness import PluginHarness

from .serveproc import ServeProcess


@pytest.fixture
def kubeconfig(short_tmp: Path, api: FakeApiServer) -> Iterator[Path]:
    path = short_tmp / "kubeconfig"
    api.write_kubeconfig(path)
    yield path


def add_claim(api: FakeApiServer, name: str, *devices: str, **kw: Any) -> Any:
    from dra_framework.models import ClaimRef

    obj = allocated_claim(name=name, results=[Result("gpu", d) for d in devices], **kw)
    api.seed(obj)
    return ClaimRef(namespace="default", name=name, uid=obj["metadata"]["uid"])


# -- threads and memory a peer can take ---------------------------------------------------------


def test_open_health_streams_do_not_take_the_threads_prepares_need(
        node: PluginHarness) -> None:
    conn = node.connect()
    streams = [conn.watch_health(timeout=30) for _ in range(8)]
    for stream in streams:  # each started (a stream ended for a newer one gives None)
        next(stream, None)
    claim = node.add_claim(allocated_claim(name="while-watched", results=[Result("gpu", "gpu-0")]))
    answer: dict[str, Any] = {}
    call = threading.Thread(target=lambda: answer.update(conn.prepare([claim], timeout=10)))
    call.start()
    call.join(15)
    assert answer and answer[claim.uid].error == ""
    conn.close()


def test_only_the_last_registration_status_is_kept_and_bounded(node: PluginHarness) -> None:
    plugin = node.node.plugins[0] if node.node else None
    assert plugin is not None
    with grpc.insecure_channel(f"unix://{plugin.registration_socket}") as channel:
        stub = reg_grpc.RegistrationStub(channel)
        for i in range(20):
            stub.NotifyRegistrationStatus(reg_pb2.RegistrationStatus(
                plugin_registered=False, error=f"{i}:" + "x" * 1_000_000), timeout=5)
    registered, error = plugin.registration.status or (True, "")
    assert not registered and error.startswith("19:")
    assert len(error) <= MAX_ERROR_CHARS


def test_a_huge_config_value_is_not_echoed_into_the_answer(node: PluginHarness) -> None:
    claim = node.add_claim(allocated_claim(
        name="huge", results=[Result("gpu", "gpu-0")],
        configs=[Config(parameters={"apiVersion": "gpu.example.com/v1", "kind": "GpuConfig",
                                    "sharing": {"strategy": "y" * 1_000_000}})]))
    error = node.connect().prepare([claim])[claim.uid].error
    assert error and len(error) <= MAX_ERROR_CHARS


def test_a_preparer_that_raises_still_answers_every_claim(
        node: PluginHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    assert node.node is not None
    preparer = node.node.preparers[0]

    def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(preparer, "prepare", broken)
    monkeypatch.setattr(preparer, "unprepare", broken)
    claims = [node.add_claim(allocated_claim(name=f"c{i}", results=[Result("gpu", f"gpu-{i}")]))
              for i in range(2)]
    conn = node.connect()
    assert all("internal error" in r.error for r in conn.prepare(claims).values())
    assert all("internal error" in e for e in conn.unprepare(claims).values())


# -- state files are never written through links ------------------------------------------------


def test_a_link_planted_at_the_backends_state_file_is_not_written_through(
        node: PluginHarness) -> None:
    victim = node.root / "victim"
    victim.write_text("keep me")
    state = node.backend_state_dir() / "prepared" / "gpu-2.json"
    state.symlink_to(victim)
    claim = node.add_claim(allocated_claim(name="linked", results=[Result("gpu", "gpu-2")]))
    conn = node.connect()
    assert conn.prepare([claim])[claim.uid].error == ""
    assert victim.read_text() == "keep me" and not state.is_symlink()
    assert conn.unprepare([claim]) == {claim.uid: ""}
    assert not state.exists() and victim.read_text() == "keep me"


# -- a hung API server ---------------------------------------------------------------------------


@pytest.fixture
def uncached(short_tmp: Path, api: FakeApiServer) -> Iterator[PluginHarness]:
    with PluginHarness(root=short_tmp, api=api, claim_cache=False, publish=False) as harness:
        yield harness


def test_a_hung_api_server_gets_an_answer_before_the_kubelets_deadline(
        uncached: PluginHarness, api: FakeApiServer) -> None:
    first = [uncached.add_claim(allocated_claim(name=f"hung-{i}",
                                                results=[Result("gpu", f"gpu-{i}")]))
             for i in range(2)]
    second = uncached.add_claim(allocated_claim(name="next-pod", results=[Result("gpu", "gpu-5")]))
    conn = uncached.connect()
    api.hang_next(method="get", resource="resourceclaims", count=2)
    answers: dict[str, Any] = {}
    call = threading.Thread(target=lambda: answers.update(conn.prepare(first, timeout=6)))
    call.start()
    while api.hanging < 2:
        time.sleep(0.01)
    # another pod's call is not queued behind the hung reads (its own read is answered)
    assert conn.prepare([second], timeout=6)[second.uid].error == ""
    call.join(10)
    try:
        for claim in first:  # answered (no DEADLINE_EXCEEDED), each with its own error
            assert "did not answer" in answers[claim.uid].error
    finally:
        api.release()


# -- start-up and shutdown of a real serve process ----------------------------------------------


pytest_slow = pytest.mark.slow


@pytest_slow
def test_stop_keeps_the_lock_until_the_prepare_in_flight_is_done(
        short_tmp: Path, api: FakeApiServer, kubeconfig: Path) -> None:
    devices = [f"gpu-{i}" for i in range(4)]
    claim = add_claim(api, "slow-stop", *devices)
    old = ServeProcess(short_tmp, kubeconfig=kubeconfig, rolling_update_uid="old",
                       options=("example.prepare_delay=2",))  # 8 s: past the 5 s grace
    conn = old.connect()
    answer: dict[str, Any] = {}

    def prepare() -> None:
        try:
            answer.update(conn.prepare([claim], timeout=30))
        except Exception as exc:  # cancelled by the stopping server: the kubelet retries
            answer["error"] = exc

    call = threading.Thread(target=prepare)
    call.start()
    time.sleep(0.7)
    old.proc.send_signal(signal.SIGTERM)
    new = ServeProcess(short_tmp, kubeconfig=kubeconfig, rolling_update_uid="new")
    try:
        new_conn = new.connect(timeout=60)
        assert old.wait(timeout=30) == 0
        call.join(30)
        # the successor found the prepare finished, not half done: the kubelet's retry is
        # answered from the checkpoint with every device, each set up and held
        retry = new_conn.prepare([claim])[claim.uid]
        assert retry.error == "" and sorted(d.device_name for d in retry.devices) == devices
        prepared = short_tmp / "plugins" / "dra-framework" / "example" / "prepared"
        assert sorted(p.stem for p in prepared.iterdir()) == devices
        rival = add_claim(api, "rival", "gpu-3")
        assert "already prepared" in new_conn.prepare([rival])[rival.uid].error
        assert new_conn.unprepare([claim]) == {claim.uid: ""}
        assert not list(prepared.iterdir())
        assert list((short_tmp / "cdi").glob("*.json")) == []
    finally:
        new.stop()
        if old.proc.poll() is None:
            old.proc.kill()
    assert "Bad file descriptor" not in old.log.read_text()


@pytest_slow
@pytest.mark.parametrize("blocker", ["file", "directory"])
def test_a_taken_registration_path_leaves_no_dra_socket_behind(
        short_tmp: Path, kubeconfig: Path, blocker: str) -> None:
    registry = short_tmp / "plugins_registry"
    registry.mkdir(parents=True)
    taken = registry / "gpu.example.com-reg.sock"
    if blocker == "file":
        taken.write_text("not a socket")
    else:
        taken.mkdir()
    serve = ServeProcess(short_tmp, kubeconfig=kubeconfig)
    assert serve.wait(timeout=30) == 1
    assert "is not a socket" in serve.log.read_text()
    assert list((short_tmp / "plugins" / "gpu.example.com").glob("*.sock")) == []
