"""The checkpoint database: format, checksums, boot id, corruption, held devices, batches, and
the import of the one-file-per-claim state of earlier releases."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from dra_framework.errors import ConfigError
from dra_framework.models import ContainerEdits, PreparedDevice
from dra_framework.node.checkpoint import (
    API_VERSION,
    LEGACY_API_VERSION,
    Checkpoint,
    ClaimRecord,
    RecordedDevice,
    database_path,
)


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


def store(cp: Checkpoint, *records: ClaimRecord) -> None:
    with cp.batch():
        for r in records:
            cp.put(r)
            cp.mark_devices(r)


def sql(directory: Path, statement: str, *params: object) -> list[tuple[object, ...]]:
    """A statement from outside the plugin, as another writer or a damaged disk would."""
    path = database_path(directory)
    assert path is not None
    with sqlite3.connect(path) as db:
        return db.execute(statement, params).fetchall()


@pytest.fixture
def cp(tmp_path: Path) -> Checkpoint:
    c = Checkpoint(directory=tmp_path / "state")
    c.open(boot_id="boot-a")
    return c


def test_round_trip_keeps_every_field(cp: Checkpoint) -> None:
    r = record()
    cp.put(r)
    assert cp.get("uid-1") == r == cp.peek("uid-1")


def test_rows_are_versioned_and_checksummed(cp: Checkpoint) -> None:
    cp.put(record())
    assert sql(cp.directory, "SELECT value FROM meta WHERE key='apiVersion'") == [(API_VERSION,)]
    ((body, checksum),) = sql(cp.directory, "SELECT body, checksum FROM claims")
    assert checksum == "sha256:" + hashlib.sha256(str(body).encode()).hexdigest()
    assert json.loads(str(body))["phase"] == "prepared"


def test_missing_record_is_none(cp: Checkpoint) -> None:
    assert cp.get("nope") is None and cp.peek("nope") is None


def test_a_batch_is_one_transaction(cp: Checkpoint) -> None:
    with pytest.raises(RuntimeError), cp.batch():
        cp.put(record(uid="a"))
        cp.mark_devices(record(uid="a"))
        raise RuntimeError("half way")
    assert cp.get("a") is None and cp.device_owner("node-1", "gpu-0") is None
    store(cp, record(uid="a"), record(uid="b", device="gpu-1"))
    assert [r.uid for r in cp.records()] == ["a", "b"]


def test_a_committed_record_is_seen_by_another_process_view(cp: Checkpoint) -> None:
    cp.put(record())
    assert sql(cp.directory, "SELECT uid FROM claims") == [("uid-1",)]


CORRUPT: list[object] = [
    pytest.param("garbage", id="not-json"),
    pytest.param("", id="empty"),
    pytest.param(None, id="checksum-mismatch"),
]


@pytest.mark.parametrize("body", CORRUPT)
def test_corrupt_record_is_set_aside_and_salvaged_at_open(tmp_path: Path,
                                                          body: str | None) -> None:
    cp = Checkpoint(directory=tmp_path)
    cp.open(boot_id="b")
    store(cp, record(uid="bad"), record(uid="good", device="gpu-1"))
    if body is None:
        sql(tmp_path, "UPDATE claims SET body=replace(body, 'gpu-0', 'gpu-9') WHERE uid='bad'")
    else:
        sql(tmp_path, "UPDATE claims SET body=? WHERE uid='bad'", body)
    cp.close()
    opened = Checkpoint(directory=tmp_path).open(boot_id="b")
    assert [r.uid for r in opened.prepared] == ["good"]
    assert opened.corrupt == ("record of claim bad",)
    # in its place, what the held devices still say: a claim to roll back
    salvaged = ClaimRecord(uid="bad", namespace="", name="", phase="preparing",
                           devices=(RecordedDevice(request="", pool="node-1", device="gpu-0"),))
    assert opened.interrupted == (salvaged,)
    assert sql(tmp_path, "SELECT uid FROM corrupt") == [("bad",)]


def test_corrupt_record_read_later_is_set_aside_and_salvaged(cp: Checkpoint) -> None:
    store(cp, record())
    sql(cp.directory, "UPDATE claims SET body='garbage'")
    salvaged = cp.get("uid-1")
    assert salvaged == ClaimRecord(
        uid="uid-1", namespace="", name="", phase="preparing",
        devices=(RecordedDevice(request="", pool="node-1", device="gpu-0"),))
    assert cp.peek("uid-1") == salvaged  # stored: a failed roll-back is tried again
    assert cp.device_owner("node-1", "gpu-0") == "uid-1"


def test_an_unusable_database_is_moved_aside(tmp_path: Path) -> None:
    cp = Checkpoint(directory=tmp_path)
    cp.open(boot_id="b")
    cp.put(record())
    cp.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{cp.path}{suffix}").unlink(missing_ok=True)
    cp.path.write_bytes(b"\x00\x01" * 4096)
    opened = Checkpoint(directory=tmp_path).open(boot_id="b")
    assert opened.prepared == () and len(opened.corrupt) == 1
    assert Path(opened.corrupt[0]).read_bytes().startswith(b"\x00\x01")


def test_boot_id_change_discards_records(tmp_path: Path) -> None:
    cp = Checkpoint(directory=tmp_path)
    cp.open(boot_id="boot-a")
    store(cp, record())
    cp.close()
    again = Checkpoint(directory=tmp_path)
    opened = again.open(boot_id="boot-b")
    assert opened.rebooted
    assert opened.prepared == () and opened.interrupted == ()
    assert again.get("uid-1") is None and again.device_owner("node-1", "gpu-0") is None
    # the earlier boot's database is gone: nothing of it is ever read again
    assert [p.name for p in tmp_path.glob("checkpoint-*.db")] == [again.path.name]


def test_same_boot_keeps_records_and_sorts_phases(tmp_path: Path) -> None:
    cp = Checkpoint(directory=tmp_path)
    cp.open(boot_id="a")
    store(cp, record(uid="p"), record(uid="i", phase="preparing", device="gpu-1"))
    cp.close()
    opened = Checkpoint(directory=tmp_path).open(boot_id="a")
    assert not opened.rebooted
    assert [r.uid for r in opened.prepared] == ["p"]
    assert [r.uid for r in opened.interrupted] == ["i"]


def test_held_devices_are_rebuilt_at_open(tmp_path: Path) -> None:
    cp = Checkpoint(directory=tmp_path)
    cp.open(boot_id="a")
    cp.put(record(uid="u1"))  # the held index is derived: open rebuilds it from the records
    cp.close()
    again = Checkpoint(directory=tmp_path)
    again.open(boot_id="a")
    assert again.device_owner("node-1", "gpu-0") == "u1"


def test_admin_access_devices_are_not_held(cp: Checkpoint) -> None:
    cp.mark_devices(record(admin=True))
    assert cp.device_owner("node-1", "gpu-0") is None


def test_release_only_drops_own_devices(cp: Checkpoint) -> None:
    cp.mark_devices(record(uid="owner"))
    cp.release_devices(record(uid="other"))
    assert cp.device_owner("node-1", "gpu-0") == "owner"
    cp.release_devices(record(uid="owner"))
    assert cp.device_owner("node-1", "gpu-0") is None


@pytest.mark.parametrize("uid", ["", "../x", ".hidden", "a/b", "ü" * 128])
def test_unsafe_uids_are_refused(cp: Checkpoint, uid: str) -> None:
    with pytest.raises(ConfigError, match="invalid claim UID"):
        cp.get(uid)


# -- the state of earlier releases -------------------------------------------------------------


def _canonical(data: object) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _envelope(kind: str, body: dict[str, object]) -> str:
    digest = "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()
    return json.dumps({"apiVersion": LEGACY_API_VERSION, "kind": kind, "checksum": digest,
                       "data": body})


def legacy_tree(directory: Path, *, boot_id: str,
                damage: Callable[[Path], None] | None = None) -> None:
    """What an earlier release left: checkpoint.json, claims/<uid>.json, devices/<sha256>."""
    from dra_framework.convert import unstructure

    (directory / "claims").mkdir(parents=True)
    (directory / "devices").mkdir()
    (directory / "checkpoint.json").write_text(_envelope("Checkpoint", {"bootID": boot_id}))
    for r in (record(uid="kept"), record(uid="broken", device="gpu-1")):
        (directory / "claims" / f"{r.uid}.json").write_text(
            _envelope("PreparedClaim", unstructure(r)))
        key = hashlib.sha256(f"node-1\0{r.devices[0].device}".encode()).hexdigest()
        (directory / "devices" / key).write_text(json.dumps(
            {"claim": r.uid, "pool": "node-1", "device": r.devices[0].device}))
    (directory / "claims" / "broken.json").write_text("{\"truncat")


def test_the_state_of_an_earlier_release_is_imported(tmp_path: Path) -> None:
    legacy_tree(tmp_path, boot_id="b")
    cp = Checkpoint(directory=tmp_path)
    opened = cp.open(boot_id="b")
    assert opened.prepared == (record(uid="kept"),)
    assert [(r.uid, r.phase, r.devices[0].device) for r in opened.interrupted] == [
        ("broken", "preparing", "gpu-1")]  # rolled back from its held device
    assert cp.device_owner("node-1", "gpu-0") == "kept"
    # a plugin of the earlier release, still running, can no longer act on that tree
    assert (tmp_path / "claims").is_file() and not (tmp_path / "devices").exists()


def test_the_state_of_an_earlier_release_before_a_reboot_is_discarded(tmp_path: Path) -> None:
    legacy_tree(tmp_path, boot_id="before")
    opened = Checkpoint(directory=tmp_path).open(boot_id="after")
    assert opened.rebooted and opened.prepared == () and opened.interrupted == ()
    assert (tmp_path / "claims").is_file()
