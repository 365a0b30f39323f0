"""The prepare/unprepare state machine, in-process, with the example backend.

The claims come from an in-memory source here; the same paths through the real gRPC socket and
the real Kubernetes client are covered in tests/kubelet/.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from dra_framework.models import ClaimRef
from dra_framework.node.checkpoint import ClaimRecord, RecordedDevice
from dra_framework.testing.claims import Config, Result, allocated_claim

from .env import Env


def test_prepare_writes_cdi_spec_and_answers(env: Env) -> None:
    c = env.claim("a", "gpu-0", "gpu-1")
    result = env.preparer.prepare([c])[c.uid]
    assert result.error == ""
    assert [(d.request_names, d.pool, d.device) for d in result.devices] == [
        (("gpu",), "node-1", "gpu-0"), (("gpu",), "node-1", "gpu-1")]
    spec_file = env.cdi / f"k8s.gpu.example.com-gpu_{c.uid}.json"
    spec = json.loads(spec_file.read_text())
    assert spec["kind"] == "k8s.gpu.example.com/gpu"
    assert spec["cdiVersion"] == "0.5.0"
    names = [d["name"] for d in spec["devices"]]
    assert names == [f"{c.uid}-gpu-0", f"{c.uid}-gpu-1"]
    assert [d.cdi_ids for d in result.devices] == [
        (f"k8s.gpu.example.com/gpu={n}",) for n in names]
    assert env.markers() == ["gpu-0", "gpu-1"]


def test_request_names_strip_subrequest(env: Env) -> None:
    c = env.claims.add(allocated_claim(name="s", results=[
        Result(request="flex/large", device="gpu-3")]))
    (dev,) = env.preparer.prepare([c])[c.uid].devices
    assert dev.request_names == ("flex",)


def test_share_id_is_returned(env: Env) -> None:
    sid = "7f9c3b0e-4d5a-4b8e-9c1f-2a3b4c5d6e7f"
    c = env.claims.add(allocated_claim(name="s", results=[
        Result(request="gpu", device="gpu-3", share_id=sid)]))
    assert env.preparer.prepare([c])[c.uid].devices[0].share_id == sid


def test_prepare_is_idempotent_without_backend_or_api(env: Env) -> None:
    c = env.claim("a", "gpu-0")
    first = env.preparer.prepare([c])
    reads = env.claims.reads
    (env.backend_state / "prepared" / "gpu-0.json").unlink()  # would be recreated if called
    assert env.preparer.prepare([c]) == first
    assert env.claims.reads == reads
    assert env.markers() == []


def test_batch_with_mixed_claims(env: Env) -> None:
    good = env.claim("good", "gpu-0")
    other_driver = env.claims.add(allocated_claim(
        name="nic", results=[Result(request="nic", device="eth0", driver="nic.example.com")]))
    missing = ClaimRef(namespace="default", name="gone", uid="u-gone")
    bad_cfg = env.claims.add(allocated_claim(name="cfg", results=[
        Result(request="gpu", device="gpu-1")], configs=[Config(parameters={
            "apiVersion": "gpu.example.com/v1", "kind": "GpuConfig",
            "sharing": {"strategy": "Sometimes"}})]))
    results = env.preparer.prepare([good, other_driver, missing, bad_cfg])
    assert set(results) == {good.uid, other_driver.uid, missing.uid, bad_cfg.uid}
    assert results[good.uid].error == "" and results[good.uid].devices
    assert "no devices allocated by driver gpu.example.com" in results[other_driver.uid].error
    assert "not found" in results[missing.uid].error
    assert "$.sharing.strategy" in results[bad_cfg.uid].error
    assert "config[0] (FromClaim)" in results[bad_cfg.uid].error
    assert env.markers() == ["gpu-0"]


def test_device_held_by_another_claim_is_refused(env: Env) -> None:
    a, b = env.claim("a", "gpu-0"), env.claim("b", "gpu-0")
    assert env.preparer.prepare([a])[a.uid].error == ""
    err = env.preparer.prepare([b])[b.uid].error
    assert err == f"device node-1/gpu-0 is already prepared for claim {a.uid}"
    assert env.preparer.checkpoint.get(b.uid) is None
    env.preparer.unprepare([a])
    assert env.preparer.prepare([b])[b.uid].error == ""


def test_admin_access_may_share_an_in_use_device(env: Env) -> None:
    a, admin = env.claim("a", "gpu-0"), env.claim("admin", "gpu-0", admin=True)
    env.preparer.prepare([a])
    assert env.preparer.prepare([admin])[admin.uid].error == ""
    env.preparer.unprepare([admin])
    other = env.claim("b", "gpu-0")
    assert "already prepared for claim" in env.preparer.prepare([other])[other.uid].error


def test_backend_failure_rolls_back(env: Env) -> None:
    c = env.claim("a", "gpu-0", "gpu-99")  # gpu-99 does not exist: backend fails midway
    err = env.preparer.prepare([c])[c.uid].error
    assert "gpu-99 does not exist" in err
    assert env.markers() == []  # gpu-0 was set up, then undone
    assert env.preparer.checkpoint.get(c.uid) is None
    assert env.specs() == []
    ok = env.claim("b", "gpu-0")
    assert env.preparer.prepare([ok])[ok.uid].error == ""


def test_unprepare_removes_everything_and_is_idempotent(env: Env) -> None:
    c = env.claim("a", "gpu-0")
    env.preparer.prepare([c])
    del env.claims.objects[("default", "a")]  # claim deleted from the API
    assert env.preparer.unprepare([c]) == {c.uid: ""}
    assert env.specs() == [] and env.markers() == []
    assert env.preparer.checkpoint.get(c.uid) is None
    assert env.preparer.unprepare([c]) == {c.uid: ""}
    unknown = ClaimRef(namespace="x", name="y", uid="never")
    assert env.preparer.unprepare([unknown]) == {"never": ""}


def test_restart_keeps_prepared_claims(env: Env) -> None:
    c = env.claim("a", "gpu-0")
    before = env.preparer.prepare([c])
    p = env.restart()
    assert p.prepare([c]) == before
    assert env.specs() == [f"k8s.gpu.example.com-gpu_{c.uid}.json"]
    other = env.claim("b", "gpu-0")
    assert "already prepared" in p.prepare([other])[other.uid].error


def test_interrupted_prepare_is_rolled_back_at_start(env: Env) -> None:
    c = env.claim("a", "gpu-2")
    env.preparer.prepare([c])
    record = env.preparer.checkpoint.get(c.uid)
    assert record is not None
    env.preparer.checkpoint.put(ClaimRecord(  # as if killed before the commit
        uid=record.uid, namespace=record.namespace, name=record.name, phase="preparing",
        devices=tuple(RecordedDevice(request=d.request, pool=d.pool, device=d.device)
                      for d in record.devices), cdi_spec=record.cdi_spec))
    env.restart()
    assert env.preparer.checkpoint.get(c.uid) is None
    assert env.specs() == [] and env.markers() == []


def test_boot_id_change_forgets_prepared_claims(env: Env) -> None:
    c = env.claim("a", "gpu-0")
    env.preparer.prepare([c])
    env.boot_id = "boot-2"
    env.restart()
    assert env.preparer.checkpoint.get(c.uid) is None
    assert env.specs() == []  # orphaned spec of the old boot removed
    reads = env.claims.reads
    assert env.preparer.prepare([c])[c.uid].error == ""
    assert env.claims.reads == reads + 1  # really prepared again


def test_corrupt_state_file_does_not_stop_start(env: Env) -> None:
    c = env.claim("a", "gpu-0")
    env.preparer.prepare([c])
    with sqlite3.connect(env.preparer.checkpoint.path) as db:
        db.execute("UPDATE claims SET body='{\"truncated' WHERE uid=?", (c.uid,))
    env.restart()
    with sqlite3.connect(env.preparer.checkpoint.path) as db:
        assert db.execute("SELECT uid FROM corrupt").fetchall() == [(c.uid,)]
    assert env.preparer.checkpoint.get(c.uid) is None  # rolled back


def test_orphaned_cdi_spec_is_removed_at_start(env: Env) -> None:
    env.cdi.mkdir(parents=True, exist_ok=True)
    orphan = env.cdi / "k8s.gpu.example.com-gpu_dead-beef.json"
    orphan.write_text('{"cdiVersion":"0.5.0","kind":"k8s.gpu.example.com/gpu","devices":[]}')
    foreign = env.cdi / "vendor.example-thing_dead-beef.json"
    foreign.write_text("{}")
    env.restart()
    assert not orphan.exists() and foreign.exists()


@pytest.mark.parametrize("ref,message", [
    pytest.param(ClaimRef(namespace="default", name="a", uid=""), "names no claim uid",
                 id="empty-uid"),
    pytest.param(ClaimRef(namespace="", name="", uid="u1"), "names no claim namespace or name",
                 id="empty-names"),
    pytest.param(ClaimRef(namespace="default", name="a", uid="../../etc"),
                 "invalid claim UID '../../etc'", id="path-in-uid"),
])
def test_malformed_claim_reference_fails_only_that_claim(env: Env, ref: ClaimRef,
                                                         message: str) -> None:
    good = env.claim("fine", "gpu-0")
    results = env.preparer.prepare([ref, good])
    assert message in results[ref.uid].error
    assert results[good.uid].error == ""
    assert message in env.preparer.unprepare([ref])[ref.uid]


def test_results_with_a_share_id_may_share_a_device(env: Env) -> None:
    """Devices that allow multiple allocations: the scheduler divides their capacity."""
    share = ["11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"]
    a, b = (env.claims.add(allocated_claim(name=f"s{i}", results=[
        Result(request="gpu", device="gpu-5", share_id=share[i])])) for i in range(2))
    assert env.preparer.prepare([a])[a.uid].error == ""
    assert env.preparer.prepare([b])[b.uid].error == ""
    exclusive = env.claim("x", "gpu-5")
    assert env.preparer.prepare([exclusive])[exclusive.uid].error == ""  # shares do not mark
