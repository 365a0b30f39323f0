"""The on-disk checkpoint: format, checksum, boot id, corruption, device index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dra_framework.errors import ConfigError
from dra_framework.models import ContainerEdits, PreparedDevice
from dra_framework.node.checkpoint import API_VERSION, Checkpoint, ClaimRecord, RecordedDevice


def record(uid: str = "uid-1", phase: str = "prepared", device: str = "gpu-0",
           admin: bool = False) -> ClaimRecord:
    return ClaimRecord(
        uid=uid, namespace="default", name=f"claim-{uid}", phase=phase,  # type: ignore[arg-type]
        devices=(RecordedDevice(
            request="gpu", pool="node-1", device=device, admin_access=admin,
            cdi_ids=(f"k8s.gpu.example.com/gpu={uid}-{device}",),
            prepared=PreparedDevice(pool="node-1", device=device,
                                    edits=ContainerEdits(env=("A=1",)), state={"k": [1, 2]}),
        ),),
        cdi_spec="/var/run/cdi/x.json",
    )


@pytest.fixture
def cp(tmp_path: Path) -> Checkpoint:
    c = Checkpoint(directory=tmp_path / "state")
    c.open(boot_id="boot-a")
    return c


def test_round_trip_keeps_every_field(cp: Checkpoint) -> None:
    r = record()
    cp.put(r)
    assert cp.get("uid-1") == r


def test_file_is_versioned_and_checksummed(cp: Checkpoint) -> None:
    cp.put(record())
    doc = json.loads((cp.claims_dir / "uid-1.json").read_text())
    assert doc["apiVersion"] == API_VERSION
    assert doc["kind"] == "PreparedClaim"
    assert doc["checksum"].startswith("sha256:")
    assert doc["data"]["phase"] == "prepared"


def test_missing_record_is_none(cp: Checkpoint) -> None:
    assert cp.get("nope") is None


def test_put_writes_only_its_own_file(cp: Checkpoint) -> None:
    for i in range(50):
        cp.put(record(uid=f"u{i}", device=f"gpu-{i}"))
    before = {p.name: p.stat().st_mtime_ns for p in cp.claims_dir.iterdir()}
    cp.put(record(uid="new", device="gpu-99"))
    after = {p.name: p.stat().st_mtime_ns for p in cp.claims_dir.iterdir()}
    assert {k: v for k, v in after.items() if k != "new.json"} == before


@pytest.mark.parametrize("damage", [
    pytest.param(lambda p: p.write_text("{not json"), id="not-json"),
    pytest.param(lambda p: p.write_text(p.read_text().replace('"gpu-0"', '"gpu-1"')),
                 id="checksum-mismatch"),
    pytest.param(lambda p: p.write_text(p.read_text().replace(API_VERSION, "checkpoint/v0")),
                 id="unknown-version"),
    pytest.param(lambda p: p.write_bytes(b""), id="empty"),
])
def test_corrupt_record_is_moved_aside_at_open(tmp_path: Path, damage: object) -> None:
    cp = Checkpoint(directory=tmp_path)
    cp.open(boot_id="b")
    for r in (record(uid="bad"), record(uid="good", device="gpu-1")):
        cp.put(r)
        cp.mark_devices(r)
    damage(cp.claims_dir / "bad.json")  # type: ignore[operator]
    opened = Checkpoint(directory=tmp_path).open(boot_id="b")
    assert [r.uid for r in opened.prepared] == ["good"]
    assert len(opened.corrupt) == 1 and "bad.json" in opened.corrupt[0]
    assert Path(opened.corrupt[0]).exists()
    # in its place, what the device markers still say: a claim to roll back
    salvaged = RecordedDevice(request="", pool="node-1", device="gpu-0")
    assert opened.interrupted == (ClaimRecord(uid="bad", namespace="", name="",
                                              phase="preparing", devices=(salvaged,)),)
    assert cp.peek("bad") == opened.interrupted[0]


def test_corrupt_record_read_later_is_moved_aside_and_salvaged(cp: Checkpoint) -> None:
    cp.put(record())
    cp.mark_devices(record())
    (cp.claims_dir / "uid-1.json").write_text("garbage")
    salvaged = cp.get("uid-1")
    assert salvaged == ClaimRecord(
        uid="uid-1", namespace="", name="", phase="preparing",
        devices=(RecordedDevice(request="", pool="node-1", device="gpu-0"),))
    assert list(cp.corrupt_dir.iterdir())
    assert cp.get("uid-1") == salvaged  # stored: a failed roll-back is tried again
    assert cp.device_owner("node-1", "gpu-0") == "uid-1"


def test_corrupt_meta_file_does_not_stop_open(tmp_path: Path) -> None:
    cp = Checkpoint(directory=tmp_path)
    cp.open(boot_id="b")
    cp.put(record())
    cp.meta_path.write_text("\x00\x01")
    opened = Checkpoint(directory=tmp_path).open(boot_id="b")
    assert [r.uid for r in opened.prepared] == ["uid-1"]
    assert len(opened.corrupt) == 1
    assert json.loads(cp.meta_path.read_text())["data"]["bootID"] == "b"


def test_boot_id_change_discards_records(tmp_path: Path) -> None:
    cp = Checkpoint(directory=tmp_path)
    cp.open(boot_id="boot-a")
    cp.put(record())
    cp.mark_devices(record())
    opened = Checkpoint(directory=tmp_path).open(boot_id="boot-b")
    assert opened.rebooted
    assert opened.prepared == () and opened.interrupted == ()
    assert Checkpoint(directory=tmp_path).get("uid-1") is None
    assert cp.device_owner("node-1", "gpu-0") is None


def test_same_boot_keeps_records_and_sorts_phases(tmp_path: Path) -> None:
    cp = Checkpoint(directory=tmp_path)
    cp.open(boot_id="a")
    cp.put(record(uid="p"))
    cp.put(record(uid="i", phase="preparing", device="gpu-1"))
    opened = Checkpoint(directory=tmp_path).open(boot_id="a")
    assert not opened.rebooted
    assert [r.uid for r in opened.prepared] == ["p"]
    assert [r.uid for r in opened.interrupted] == ["i"]


def test_device_index_is_rebuilt_at_open(tmp_path: Path) -> None:
    cp = Checkpoint(directory=tmp_path)
    cp.open(boot_id="a")
    cp.put(record(uid="u1"))
    # markers lost (they are written without fsync): open rebuilds them from the records
    for m in cp.devices_dir.iterdir():
        m.unlink()
    Checkpoint(directory=tmp_path).open(boot_id="a")
    assert cp.device_owner("node-1", "gpu-0") == "u1"


def test_admin_access_devices_are_not_marked(cp: Checkpoint) -> None:
    cp.mark_devices(record(admin=True))
    assert cp.device_owner("node-1", "gpu-0") is None


def test_release_only_drops_own_markers(cp: Checkpoint) -> None:
    cp.mark_devices(record(uid="owner"))
    cp.release_devices(record(uid="other"))
    assert cp.device_owner("node-1", "gpu-0") == "owner"
    cp.release_devices(record(uid="owner"))
    assert cp.device_owner("node-1", "gpu-0") is None


def test_leftover_temp_files_are_removed_at_open(tmp_path: Path) -> None:
    cp = Checkpoint(directory=tmp_path)
    cp.open(boot_id="a")
    (cp.claims_dir / ".tmp-abc.part").write_text("half")
    Checkpoint(directory=tmp_path).open(boot_id="a")
    assert not (cp.claims_dir / ".tmp-abc.part").exists()


@pytest.mark.parametrize("uid", ["", "../x", ".hidden", "a/b"])
def test_unsafe_uids_are_refused(cp: Checkpoint, uid: str) -> None:
    with pytest.raises(ConfigError, match="invalid claim UID"):
        cp.get(uid)
