"""Several backends in one process: each its own driver name, sockets, state and CDI kind."""

from __future__ import annotations

import json
from pathlib import Path

from dra_framework.node.checkpoint import recorded_phases
from dra_framework.testing.claims import Result, allocated_claim
from dra_framework.testing.fakeapi import FakeApiServer
from dra_framework.testing.harness import PluginHarness


def test_two_backends_in_one_process(short_tmp: Path, api: FakeApiServer,
                                     acme_distribution: Path) -> None:
    options = {"acme": {"driver_name": "acme.example.org", "devices": "2"}}
    with PluginHarness(root=short_tmp, api=api, backends=("example", "acme"),
                       backend_options=options) as node:
        assert sorted(p.name for p in node.registry_dir.iterdir()) == [
            "acme.example.org-reg.sock", "gpu.example.com-reg.sock"]
        gpu, acme = node.connect("gpu.example.com"), node.connect("acme.example.org")
        assert acme.endpoint == str(node.plugins_dir / "acme.example.org" / "dra.sock")

        # one claim with devices of both drivers: each plugin prepares only its own
        both = node.add_claim(allocated_claim(name="both", results=[
            Result(request="gpu", device="gpu-0"),
            Result(request="acc", device="gpu-1", driver="acme.example.org")]))
        from_gpu = gpu.prepare([both])[both.uid]
        from_acme = acme.prepare([both])[both.uid]
        assert [(d.request_names, d.device_name) for d in from_gpu.devices] == [
            (("gpu",), "gpu-0")]
        assert [(d.request_names, d.device_name) for d in from_acme.devices] == [
            (("acc",), "gpu-1")]
        assert from_acme.devices[0].cdi_device_ids == (
            f"k8s.acme.example.org/gpu={both.uid}-gpu-1",)
        kinds = sorted(json.loads(p.read_text())["kind"] for p in node.cdi_specs())
        assert kinds == ["k8s.acme.example.org/gpu", "k8s.gpu.example.com/gpu"]

        # separate state: the same device name is free in the other driver's pool
        for driver in ("gpu.example.com", "acme.example.org"):
            assert list(recorded_phases(node.state_dir(driver))) == [both.uid]
        assert gpu.unprepare([both]) == {both.uid: ""}
        assert list(recorded_phases(node.state_dir("acme.example.org"))) == [both.uid]
        assert acme.unprepare([both]) == {both.uid: ""}
        assert node.cdi_specs() == []
