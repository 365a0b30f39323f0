"""The NVIDIA backend end to end: fake NVML from the H100 capture, the real plugin stack,
claims from the fake API server, prepare through the kubelet socket."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dra_framework.testing.claims import Config, Result, allocated_claim
from dra_framework.testing.fakeapi import FakeApiServer
from dra_framework.testing.harness import PluginHarness, wait_for

DRIVER = "gpu.nvidia.dra-framework.io"
SHARES = ["11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"]


@pytest.fixture
def node() -> Iterator[PluginHarness]:
    options = {"nvidia-gpu": {"nvml": "fake-8"}}
    with tempfile.TemporaryDirectory(prefix="dra-nv-", dir="/tmp") as d, FakeApiServer() as api, \
            PluginHarness(root=Path(d), api=api, backends=("nvidia-gpu",),
                          backend_options=options) as h:
        yield h


def gpu_claim(name: str, device: str, *, share: str | None = None,
              sharing: dict[str, object] | None = None) -> dict[str, object]:
    configs = [Config(driver=DRIVER, parameters={
        "apiVersion": f"{DRIVER}/v1", "kind": "GpuConfig", "sharing": sharing})] if sharing else []
    return allocated_claim(name=name, results=[
        Result(request="gpu", device=device, driver=DRIVER, share_id=share)], configs=configs)


def test_prepare_a_gpu_through_the_socket(node: PluginHarness) -> None:
    conn = node.connect(DRIVER)
    c = node.add_claim(gpu_claim("one-gpu", "gpu-3"))
    result = conn.prepare([c])[c.uid]
    assert result.error == ""
    (dev,) = result.devices
    assert dev.cdi_device_ids == (f"k8s.{DRIVER}/gpu={c.uid}-gpu-3",)
    (spec_file,) = node.cdi_specs()
    spec = json.loads(spec_file.read_text())
    edits = spec["devices"][0]["containerEdits"]
    nodes = {n["path"]: (n["major"], n["minor"]) for n in edits["deviceNodes"]}
    assert nodes["/dev/nvidia3"] == (195, 3)
    assert {"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"} <= set(nodes)
    mounts = {m["containerPath"] for m in edits["mounts"]}
    assert "/usr/lib/x86_64-linux-gnu/libcuda.so.1" in mounts
    assert "/usr/bin/nvidia-smi" in mounts
    assert all("ro" in m["options"] for m in edits["mounts"])
    assert "NVIDIA_VISIBLE_DEVICES=void" in edits["env"]
    assert conn.unprepare([c]) == {c.uid: ""}
    assert node.cdi_specs() == []


def test_bad_gpu_config_names_the_field(node: PluginHarness) -> None:
    conn = node.connect(DRIVER)
    c = node.add_claim(gpu_claim("bad", "gpu-1", sharing={
        "strategy": "MPS", "mps": {"defaultActiveThreadPercentage": 150}}))
    err = conn.prepare([c])[c.uid].error
    assert "$.sharing.mps.defaultActiveThreadPercentage" in err


def test_time_slicing_shared_by_two_claims(node: PluginHarness) -> None:
    """A GPU that allows multiple allocations: two claims share it; the time slice is set
    once and reset only when the last claim is unprepared."""
    conn = node.connect(DRIVER)
    sharing = {"strategy": "TimeSlicing", "timeSlicing": {"interval": "Long"}}
    a = node.add_claim(gpu_claim("share-a", "gpu-2", share=SHARES[0], sharing=sharing))
    b = node.add_claim(gpu_claim("share-b", "gpu-2", share=SHARES[1], sharing=sharing))
    results = conn.prepare([a, b])
    assert results[a.uid].error == "" and results[b.uid].error == ""
    assert node.node is not None
    backend = node.node.backends[0].plugin
    calls = backend.fake_sharing.calls  # type: ignore[attr-defined]
    assert [c[0] for c in calls] == ["set_timeslice"]
    conn.unprepare([a])
    assert [c[0] for c in calls] == ["set_timeslice"]
    conn.unprepare([b])
    assert [c[0] for c in calls] == ["set_timeslice", "reset_timeslice"]


def test_slices_carry_the_gpu_attributes(node: PluginHarness) -> None:
    (published,) = wait_for("the node's slice", lambda: [
        s for s in node.api.objects("resourceslices") if s["spec"]["driver"] == DRIVER])
    devices = {d["name"]: d for d in published["spec"]["devices"]}
    assert sorted(devices) == [f"gpu-{i}" for i in range(8)]
    attrs = devices["gpu-0"]["attributes"]
    assert attrs["productName"] == {"string": "NVIDIA H100 80GB HBM3"}
    assert attrs["architecture"] == {"string": "Hopper"}
    assert attrs["cudaComputeCapability"] == {"version": "9.0.0"}
    assert "resource.kubernetes.io/pcieRoot" in attrs
    assert os.environ.get("NVIDIA_VISIBLE_DEVICES") is None  # nothing leaked into the process


def test_xid_marks_the_gpu_unhealthy_in_stream_and_slice(tmp_path: Path) -> None:
    """A critical Xid: the health stream says UNHEALTHY, and the republished slice taints the
    device so the scheduler avoids it."""
    from dra_framework.testing.fakeapi import ALL_DRA_GATES

    options = {"nvidia-gpu": {"nvml": "fake-8"}}
    with tempfile.TemporaryDirectory(prefix="dra-nv-", dir="/tmp") as d, \
            FakeApiServer(feature_gates=ALL_DRA_GATES) as api, \
            PluginHarness(root=Path(d), api=api, backends=("nvidia-gpu",),
                          backend_options=options) as h:
        conn = h.connect(DRIVER)
        stream = conn.watch_health(timeout=20)
        assert {r.health for r in next(stream)} == {"HEALTHY"}
        assert h.node is not None
        h.node.backends[0].plugin.fake_nvml.inject_xid(5, 79)  # type: ignore[attr-defined]
        for update in stream:
            bad = [r for r in update if r.health == "UNHEALTHY"]
            if bad:
                assert [r.device_name for r in bad] == ["gpu-5"]
                assert bad[0].message.startswith("Xid 79")
                break

        def tainted() -> list[dict[str, object]]:
            for s in api.objects("resourceslices"):
                for dev in s["spec"].get("devices", []):
                    if dev["name"] == "gpu-5" and dev.get("taints"):
                        return list(dev["taints"])
            return []

        (taint,) = wait_for("the taint in the slice", tainted)
        assert taint["key"] == f"{DRIVER}/unhealthy"
        assert taint["effect"] == "NoSchedule" and taint["value"] == "79"
        conn.close()
