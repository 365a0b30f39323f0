"""NodePrepareResources / NodeUnprepareResources through the socket, claims from the API."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from dra_framework.models import ClaimRef
from dra_framework.node.checkpoint import database_path, recorded_phases
from dra_framework.testing.claims import Config, Result, allocated_claim, unallocated_claim
from dra_framework.testing.harness import PluginHarness
from dra_framework.testing.kubelet import KubeletClient, PluginConnection

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-v1.35"
SHARE_ID = "7f9c3b0e-4d5a-4b8e-9c1f-2a3b4c5d6e7f"


@pytest.fixture(params=["v1.DRAPlugin", "v1beta1.DRAPlugin"])
def conn(request: pytest.FixtureRequest, node: PluginHarness) -> PluginConnection:
    kubelet = KubeletClient(node.registry_dir, kubelet_versions=(request.param,))
    c = kubelet.register("gpu.example.com")
    assert c is not None and c.version == request.param
    return c


def claim(node: PluginHarness, name: str, *devices: str, **kw: object) -> ClaimRef:
    return node.add_claim(allocated_claim(
        name=name, results=[Result(request="gpu", device=d) for d in devices], **kw))  # type: ignore[arg-type]


def test_prepare_real_captured_claim(node: PluginHarness, conn: PluginConnection) -> None:
    obj = json.loads((FIXTURES / "resourceclaim-allocated.json").read_text())
    c = node.add_claim(obj)
    result = conn.prepare([c])[c.uid]
    assert result.error == ""
    assert [(d.request_names, d.pool_name, d.device_name) for d in result.devices] == [
        (("gpu",), "node-1", "gpu-0"), (("gpu-flex",), "node-1", "gpu-1")]
    spec = json.loads(node.cdi_specs()[0].read_text())
    env = spec["devices"][1]["containerEdits"]["env"]
    # class config (GpuClassConfig) then claim config (GpuConfig) reached the backend
    assert env == ["GPU_DEVICE_GPU_1=gpu-1", "GPU_DEVICE_GPU_1_COMPUTE_MODE=Shared",
                   "GPU_DEVICE_GPU_1_TIMESLICE_MILLIS=10",
                   "GPU_DEVICE_GPU_1_SHARING_STRATEGY=TimeSlicing"]
    ids = [i for d in result.devices for i in d.cdi_device_ids]
    assert ids == [f"k8s.gpu.example.com/gpu={c.uid}-gpu-0",
                   f"k8s.gpu.example.com/gpu={c.uid}-gpu-1"]


def test_share_id_only_on_v1(node: PluginHarness, conn: PluginConnection) -> None:
    c = node.add_claim(allocated_claim(name="shared", results=[
        Result(request="gpu", device="gpu-2", share_id=SHARE_ID)]))
    (dev,) = conn.prepare([c])[c.uid].devices
    assert dev.share_id == (SHARE_ID if conn.version == "v1.DRAPlugin" else None)


def test_batch_with_mixed_good_and_bad_claims(node: PluginHarness,
                                               conn: PluginConnection) -> None:
    good = claim(node, "good", "gpu-0")
    replaced = claim(node, "replaced", "gpu-1")
    replaced = ClaimRef(namespace=replaced.namespace, name=replaced.name, uid="old-uid")
    unallocated = node.add_claim(unallocated_claim(name="pending"))
    other = node.add_claim(allocated_claim(name="nic", results=[
        Result(request="nic", device="eth0", driver="nic.example.com")]))
    missing = ClaimRef(namespace="default", name="deleted", uid="u-deleted")
    bad_config = node.add_claim(allocated_claim(
        name="badcfg", results=[Result(request="gpu", device="gpu-3")],
        configs=[Config(parameters={"apiVersion": "gpu.example.com/v1", "kind": "GpuConfig",
                                    "sharing": {"strategy": "TimeSlicing", "intervall": 5}})]))
    good2 = claim(node, "good2", "gpu-4")
    results = conn.prepare([good, replaced, unallocated, other, missing, bad_config, good2])
    assert list(results) == [good.uid, "old-uid", unallocated.uid, other.uid, "u-deleted",
                             bad_config.uid, good2.uid]
    assert results[good.uid].error == "" and results[good2.uid].error == ""
    assert "got replaced" in results["old-uid"].error
    assert results[unallocated.uid].error == "ResourceClaim default/pending is not allocated"
    assert "no devices allocated by driver gpu.example.com" in results[other.uid].error
    assert results["u-deleted"].error == "ResourceClaim default/deleted not found in the API"
    assert "extra fields found (intervall) @ $.sharing" in results[bad_config.uid].error
    assert len(node.cdi_specs()) == 2


def test_prepare_is_idempotent(node: PluginHarness, conn: PluginConnection) -> None:
    c = claim(node, "idem", "gpu-5")
    first = conn.prepare([c])
    writes = node.api.write_count()
    requests = len(node.api.requests)
    assert conn.prepare([c]) == first
    assert len(node.api.requests) == requests  # answered from the checkpoint
    assert node.api.write_count() == writes


def test_unprepare_is_idempotent_and_survives_deleted_claim(
    node: PluginHarness, conn: PluginConnection
) -> None:
    c = claim(node, "gone", "gpu-6")
    assert conn.prepare([c])[c.uid].error == ""
    node.delete_claim(c)
    assert conn.unprepare([c]) == {c.uid: ""}
    assert node.cdi_specs() == []
    assert conn.unprepare([c]) == {c.uid: ""}
    assert conn.unprepare([ClaimRef(namespace="x", name="y", uid="unknown")]) == {"unknown": ""}


def test_device_already_prepared_for_another_claim(node: PluginHarness,
                                                    conn: PluginConnection) -> None:
    a, b = claim(node, "first", "gpu-7"), claim(node, "second", "gpu-7")
    assert conn.prepare([a])[a.uid].error == ""
    assert conn.prepare([b])[b.uid].error == (
        f"device node-1/gpu-7 is already prepared for claim {a.uid}")


def test_restart_keeps_prepared_claims(node: PluginHarness) -> None:
    c = claim(node, "durable", "gpu-0")
    before = node.connect().prepare([c])
    node.restart()
    node.delete_claim(c)
    assert node.connect().prepare([c]) == before  # no API needed: from the checkpoint
    assert len(node.cdi_specs()) == 1


def test_boot_id_change_discards_state(node: PluginHarness) -> None:
    c = claim(node, "rebooted", "gpu-0")
    node.connect().prepare([c])
    node.restart(boot_id="00000000-0000-0000-0000-000000000002")
    assert node.cdi_specs() == []
    result = node.connect().prepare([c])[c.uid]
    assert result.error == "" and len(node.cdi_specs()) == 1


def test_corrupt_state_file_is_set_aside(node: PluginHarness) -> None:
    c = claim(node, "corrupt", "gpu-0")
    node.connect().prepare([c])
    with sqlite3.connect(database_path(node.state_dir())) as db:
        db.execute("UPDATE claims SET body=? WHERE uid=?", ("\x00garbage", c.uid))
    node.restart()
    assert recorded_phases(node.state_dir()) == {}  # rolled back
    assert node.connect().prepare([c])[c.uid].error == ""


def test_api_server_error_is_a_claim_error(node: PluginHarness) -> None:
    """A claim the cache does not hold (its node selector is by label) is read live."""
    obj = allocated_claim(name="flaky", results=[Result(request="gpu", device="gpu-1")])
    obj["status"]["allocation"]["nodeSelector"] = {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-1"]}]}]}
    c = node.add_claim(obj)
    conn = node.connect()
    node.api.fail_next(method="GET", resource="resourceclaims", status=500)
    err = conn.prepare([c])[c.uid].error
    assert "reading ResourceClaim default/flaky failed: 500" in err
    assert conn.prepare([c])[c.uid].error == ""  # the kubelet's retry succeeds
