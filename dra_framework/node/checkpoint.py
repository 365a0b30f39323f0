"""Durable prepared-claim state of one driver on one node.

The kubelet never re-sends NodePrepareResources for a running pod, so what a plugin prepared must
survive plugin restarts, and what a crash interrupted must be undone.  This module owns the
on-disk format; it knows nothing of gRPC, the API server or backends.

Layout under the driver's state directory::

    checkpoint.json        {"apiVersion", "kind": "Checkpoint", "bootID", "checksum"}
    claims/<uid>.json      one ClaimRecord per claim, written atomically
    devices/<sha256>       "device in use" markers: {"claim", "pool", "device"}
    corrupt/               files that are not what they should be are moved here, never deleted

One file per claim keeps the cost of a prepare independent of how many claims are already
prepared: a prepare writes its own record twice (``preparing``, then ``prepared``) and never
rewrites the others.  Every record carries a versioned ``apiVersion`` and a SHA-256 checksum of
its canonical JSON.  Every write is atomic (temp file in the same directory, renamed over the
target), so a reader sees the old or the new record, never a mix.

Durability is spent where it buys something.  A committed (``prepared``) record and the boot-id
file are fsynced, and their directory too, before the kubelet hears of the result.  The
``preparing`` intent record, deletions and the device markers are not: they guard against a
crash of the *process*, after which everything it wrote is still in the page cache, while a crash
of the *machine* reboots the node, and the boot-id check then discards all state anyway.  That
halves the fsyncs of a prepare (each costs 0.1–1 ms).  The device markers are an index derived
from the records and are rebuilt from them at every start.

Hostile or unlucky state: files are read and written without following links (``durable``).
A file that cannot be *read* (no descriptors left, permissions) is not corrupt: the error goes
to the caller, whose call fails and is retried.  A record that is not what we wrote (garbage,
truncated, a link or a directory in its place) is moved to ``corrupt/`` and replaced by what is
known without it: the claim's UID (its file name), its CDI spec (named by the UID) and the
devices marked for it.  That ``preparing`` record makes the claim roll back completely, so
nothing it held stays set up, specified or blocked.  A damaged device marker is rebuilt from the
records.

Callers hold the driver's cross-process lock (``dra_framework.node.locking``) around every method
that writes; reads are safe without it because every write is an atomic rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import attrs

from ..convert import structure, unstructure
from ..durable import NotRegularFileError, atomic_write, fsync_dir, read_regular
from ..errors import ConfigError
from ..models import PreparedDevice

API_VERSION = "checkpoint.dra-framework.io/v1"
"""Version of the on-disk format; a file of any other version is moved aside as unreadable."""

log = logging.getLogger(__name__)

Phase = Literal["preparing", "prepared"]


@attrs.frozen
class RecordedDevice:
    """One allocation result of a claim, as prepared (or being prepared).

    A result is *exclusive* unless it has admin access or a ``share_id`` (a device that
    allows multiple allocations, whose capacity the scheduler divides among claims).
    """

    request: str
    pool: str
    device: str
    admin_access: bool = False
    share_id: str | None = None
    cdi_ids: tuple[str, ...] = ()
    prepared: PreparedDevice | None = None

    @property
    def exclusive(self) -> bool:
        return not self.admin_access and not self.share_id


@attrs.frozen
class ClaimRecord:
    """What the plugin knows about one claim it prepared, or began to prepare."""

    uid: str
    namespace: str
    name: str
    phase: Phase
    devices: tuple[RecordedDevice, ...] = ()
    cdi_spec: str = ""


class CorruptStateError(Exception):
    """A state file could not be read, parsed or verified."""


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _checksum(data: Any) -> str:
    return "sha256:" + hashlib.sha256(_canonical(data)).hexdigest()


def _read_envelope(path: Path, kind: str) -> dict[str, Any]:
    """Read and verify a versioned, checksummed file.

    ``CorruptStateError`` when what is there is not such a file (garbage, truncated, another
    format, a link, a directory); ``FileNotFoundError`` when nothing is; any other ``OSError``
    (no file descriptors left, permissions) is raised as is: the file may be fine.
    """
    try:
        raw = read_regular(path)
    except NotRegularFileError as exc:
        raise CorruptStateError(f"{path}: {exc.strerror}") from exc
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CorruptStateError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CorruptStateError(f"{path}: not a JSON object")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != kind:
        raise CorruptStateError(
            f"{path}: unsupported format {doc.get('apiVersion')!r}/{doc.get('kind')!r}, "
            f"expected {API_VERSION}/{kind}"
        )
    body = doc.get("data")
    if doc.get("checksum") != _checksum(body):
        raise CorruptStateError(f"{path}: checksum mismatch")
    if not isinstance(body, dict):
        raise CorruptStateError(f"{path}: data is not an object")
    return body


def _envelope(kind: str, body: dict[str, Any]) -> bytes:
    doc = {"apiVersion": API_VERSION, "kind": kind, "checksum": _checksum(body), "data": body}
    return _canonical(doc) + b"\n"


def device_key(pool: str, device: str) -> str:
    return hashlib.sha256(f"{pool}\0{device}".encode()).hexdigest()


_UID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_uid(uid: str) -> str:
    """A claim UID usable as a file name: ASCII letters, digits, ``.``, ``_``, ``-``; ≤ 128.

    Kubernetes UIDs are UUIDs; anything else (empty, a path, a name of more than 255 bytes) is
    refused for that claim before it reaches a file system call.
    """
    if not isinstance(uid, str) or not _UID_RE.fullmatch(uid):
        raise ConfigError(f"invalid claim UID {uid[:140]!r}" if isinstance(uid, str)
                          else "invalid claim UID")
    return uid


def _remove_entry(path: Path) -> None:
    """Remove whatever is at ``path`` in a directory of ours (a directory too), never following
    a link."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


@attrs.frozen
class OpenResult:
    """What ``Checkpoint.open`` found: records to keep, to roll back, and what it set aside."""

    prepared: tuple[ClaimRecord, ...]
    interrupted: tuple[ClaimRecord, ...]
    corrupt: tuple[str, ...]
    rebooted: bool


class Checkpoint:
    """The prepared-claim state of one driver, stored under ``directory``."""

    def __init__(self, *, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.claims_dir = self.directory / "claims"
        self.devices_dir = self.directory / "devices"
        self.corrupt_dir = self.directory / "corrupt"
        self.meta_path = self.directory / "checkpoint.json"

    # -- start-up ---------------------------------------------------------------------------

    def open(self, *, boot_id: str) -> OpenResult:
        """Prepare the directory and load every record.  Call once at start, under the lock.

        A different ``boot_id`` than the stored one means the node rebooted: every record is
        discarded (the devices and CDI specs they describe are gone).  Unreadable files are
        moved to ``corrupt/``.  Records still ``preparing`` are returned for roll-back.
        """
        for d in (self.directory, self.claims_dir, self.devices_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        corrupt: list[str] = []
        stored_boot: str | None = None
        try:
            stored_boot = str(_read_envelope(self.meta_path, "Checkpoint").get("bootID", ""))
        except FileNotFoundError:
            pass
        except CorruptStateError as exc:
            corrupt.append(self._set_aside(self.meta_path, str(exc)))
        rebooted = stored_boot is not None and stored_boot != boot_id
        if rebooted:
            log.warning(
                "node rebooted since the checkpoint was written; discarding prepared claims",
                extra={"stored_boot_id": stored_boot, "boot_id": boot_id},
            )
            for path in self.claims_dir.iterdir():
                if path.name.endswith(".json"):
                    _remove_entry(path)
        prepared: list[ClaimRecord] = []
        interrupted: list[ClaimRecord] = []
        salvage: list[str] = []
        for path in sorted(self.claims_dir.iterdir()):
            if not path.name.endswith(".json"):
                _remove_entry(path)  # temp file of a write interrupted by a crash
                continue
            try:
                record = self._load(path)
            except CorruptStateError as exc:
                corrupt.append(self._set_aside(path, str(exc)))
                uid = path.name[: -len(".json")]
                if _UID_RE.fullmatch(uid):
                    salvage.append(uid)
                continue
            (prepared if record.phase == "prepared" else interrupted).append(record)
        # what a corrupt record held is known from its device markers (still on disk)
        for uid in salvage:
            interrupted.append(self._salvage(uid))
            self.put(interrupted[-1])
        self._rebuild_device_index(prepared + interrupted)
        if stored_boot != boot_id:
            body = {"bootID": boot_id, "created": time.time()}
            atomic_write(self.meta_path, _envelope("Checkpoint", body))
        return OpenResult(tuple(prepared), tuple(interrupted), tuple(corrupt), rebooted)

    def _set_aside(self, path: Path, reason: str) -> str:
        self.corrupt_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = os.fsencode(path.name)[:200].decode(errors="ignore")  # room for the suffix
        target = self.corrupt_dir / f"{name}.{time.time_ns()}"
        os.replace(path, target)
        log.error("state file is corrupt; moved aside", extra={"path": str(path),
                  "moved_to": str(target), "reason": reason[:1000]})
        return str(target)

    def _salvage(self, uid: str) -> ClaimRecord:
        """What is known of claim ``uid`` without its (corrupt) record: the devices marked for
        it.  The result is a ``preparing`` record, so that the claim is rolled back (backend
        unprepare of those devices, CDI spec removal) like an interrupted prepare."""
        devices = tuple(RecordedDevice(request="", pool=pool, device=device)
                        for pool, device in self._marked_by(uid))
        return ClaimRecord(uid=uid, namespace="", name="", phase="preparing", devices=devices)

    def _rebuild_device_index(self, records: list[ClaimRecord]) -> None:
        for marker in self.devices_dir.iterdir():
            _remove_entry(marker)
        for record in records:
            self.mark_devices(record)

    # -- records ----------------------------------------------------------------------------

    def _path(self, uid: str) -> Path:
        return self.claims_dir / f"{check_uid(uid)}.json"

    def _load(self, path: Path) -> ClaimRecord:
        body = _read_envelope(path, "PreparedClaim")
        try:
            return structure(body, ClaimRecord)
        except Exception as exc:
            raise CorruptStateError(f"{path}: invalid record: {exc}") from exc

    def peek(self, uid: str) -> ClaimRecord | None:
        """The record of claim ``uid`` as it is, changing nothing; safe without the lock.

        None when there is none, or when it is corrupt (``get``, under the lock, deals with
        that).  An ``OSError`` (the file could not be read) is raised."""
        try:
            return self._load(self._path(uid))
        except (FileNotFoundError, CorruptStateError):
            return None

    def get(self, uid: str) -> ClaimRecord | None:
        """The record of claim ``uid``, or None.  Call it under the lock.

        A corrupt record is moved aside and replaced by what is known without it (see
        ``_salvage``): a ``preparing`` record of the devices marked for ``uid``, stored, so that
        the claim is rolled back completely, now or after a restart.  An ``OSError`` (the file
        could not be read, not that it is wrong) is raised: the caller fails this call only.
        """
        path = self._path(uid)
        try:
            return self._load(path)
        except FileNotFoundError:
            return None
        except CorruptStateError as exc:
            self._set_aside(path, str(exc))
            record = self._salvage(uid)
            self.put(record)
            return record

    def put(self, record: ClaimRecord, *, sync_dir: bool = True) -> None:
        """Store ``record`` atomically, replacing an earlier one of the same claim.

        A ``prepared`` record is fsynced before this returns; a ``preparing`` one is not (see
        the module docstring).  With ``sync_dir=False`` the caller owes a ``sync()`` before it
        reports the claim as prepared (one directory fsync for a whole batch).
        """
        atomic_write(self._path(record.uid), _envelope("PreparedClaim", unstructure(record)),
                     sync=record.phase == "prepared", sync_dir=sync_dir)

    def sync(self) -> None:
        """Make every earlier ``put`` durable (fsync of the claims directory)."""
        fsync_dir(self.claims_dir)

    def delete(self, uid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(uid).unlink()

    def records(self) -> Iterator[ClaimRecord]:
        """Every readable record (used by tools and tests; not on the prepare path)."""
        for path in sorted(self.claims_dir.glob("*.json")):
            with contextlib.suppress(FileNotFoundError, CorruptStateError):
                yield self._load(path)

    # -- device-in-use index ----------------------------------------------------------------

    def _read_marker(self, path: Path) -> dict[str, str] | None:
        """A marker's content, or None when nothing is there.  Anything that is not a marker
        we wrote (a link, a directory, garbage) is removed and reported as ``CorruptStateError``."""
        try:
            data = json.loads(read_regular(path))
            if isinstance(data, dict) and all(
                    isinstance(data.get(k), str) for k in ("claim", "pool", "device")):
                return data
            problem = "not a device marker"
        except FileNotFoundError:
            return None
        except NotRegularFileError as exc:
            problem = str(exc.strerror)
        except (ValueError, RecursionError) as exc:
            problem = f"not JSON: {exc}"
        _remove_entry(path)
        raise CorruptStateError(f"{path}: {problem}")

    def device_owner(self, pool: str, device: str) -> str | None:
        """UID of the claim holding ``pool/device`` exclusively, if any.

        A damaged marker is rebuilt from the records (the truth it indexes)."""
        marker = self.devices_dir / device_key(pool, device)
        try:
            data = self._read_marker(marker)
        except CorruptStateError as exc:
            log.error("device marker is damaged; rebuilding it from the records",
                      extra={"pool": pool, "device": device, "reason": str(exc)[:1000]})
            for record in self.records():
                if any(d.exclusive and (d.pool, d.device) == (pool, device)
                       for d in record.devices):
                    self.mark_devices(record)
                    return record.uid
            return None
        return data["claim"] if data is not None else None

    def _marked_by(self, uid: str) -> list[tuple[str, str]]:
        """``(pool, device)`` of every marker held by claim ``uid`` (a scan: for recovery)."""
        found = []
        for path in sorted(self.devices_dir.iterdir()):
            with contextlib.suppress(CorruptStateError):
                data = self._read_marker(path)
                if data is not None and data["claim"] == uid:
                    found.append((data["pool"], data["device"]))
        return found

    def mark_devices(self, record: ClaimRecord) -> None:
        """Record that ``record``'s exclusive devices are in use by it."""
        for dev in record.devices:
            if dev.exclusive:
                body = {"claim": record.uid, "pool": dev.pool, "device": dev.device}
                atomic_write(self.devices_dir / device_key(dev.pool, dev.device),
                             _canonical(body), sync=False)

    def release_devices(self, record: ClaimRecord) -> None:
        """Drop the in-use markers that ``record`` holds."""
        for dev in record.devices:
            if not dev.exclusive:
                continue
            marker = self.devices_dir / device_key(dev.pool, dev.device)
            if self.device_owner(dev.pool, dev.device) == record.uid:
                with contextlib.suppress(FileNotFoundError):
                    marker.unlink()
