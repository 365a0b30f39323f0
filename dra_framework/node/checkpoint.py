"""Durable prepared-claim state of one driver on one node, in one SQLite database.

The kubelet never re-sends NodePrepareResources for a running pod, so what a plugin prepared must
survive plugin restarts, and what a crash interrupted must be undone.  This module owns that
state; it knows nothing of gRPC, the API server or backends.

``<state dir>/checkpoint-<boot>.db`` (SQLite, write-ahead log; ``<boot>`` names the node's boot)
holds three tables: ``meta`` (format version, boot id), ``claims`` (one ``ClaimRecord`` per
claim, as checksummed canonical JSON) and ``held`` (which claim holds each exclusively prepared
device: an index derived from the records, rebuilt at every start, written in the same
transaction as the record it indexes). One file, opened once, written in transactions: a prepare
costs a few row writes instead of file creates and renames, a batch of claims can be one
transaction (``batch``), and nothing in the state directory is ever opened by a name a writer
could have replaced with a link.

Durability is spent where it buys something, and here it buys nothing beyond the process: the
database runs with ``synchronous=OFF``, so a committed transaction is in the log (the kernel's
page cache) before the call returns and survives any crash of the *process*, while a crash of
the *machine* reboots the node, and the state of an earlier boot is never read again: the
database is named after the boot, and the files of other boots are deleted at ``open`` (the
devices and CDI specs they described are gone; a database a power loss left half written is
thrown away with them).  Nothing is fsynced.

Hostile or unlucky state:

* a record that cannot be read (the database is locked for too long, an I/O error) raises
  ``sqlite3.Error``: the caller fails that call only, and it is retried;
* a record that is not what we wrote (a row whose checksum or shape is wrong) is copied to the
  ``corrupt`` table and replaced by what is known without it: the claim's UID, its CDI spec
  (named by the UID) and the devices held for it, as a ``preparing`` record, so the claim is
  rolled back completely, now or at the next start;
* a database that SQLite cannot open or that fails its integrity check is moved to ``corrupt/``
  and a new one started (what it described can no longer be known; the orphaned CDI specs are
  removed at start), a symbolic link in its place is refused.

Earlier releases kept one JSON file per claim under ``claims/``.  ``open`` imports such a tree
(records, held devices, boot id), then puts a file where the ``claims/`` directory was, so that
a plugin of an earlier release still running beside this one during a rolling update fails its
calls (and the kubelet retries them here) instead of acting on state it no longer sees.

Callers hold the driver's cross-process lock (``dra_framework.node.locking``) around every method
that writes; reads are safe without it.  One connection serves all threads of the process,
under a lock of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import attrs

from ..convert import structure, unstructure
from ..durable import NotRegularFileError, read_regular
from ..errors import ConfigError, SetupError
from ..models import PreparedDevice

API_VERSION = "checkpoint.dra-framework.io/v2"
"""Version of the database's format; a database of any other version is moved aside."""

LEGACY_API_VERSION = "checkpoint.dra-framework.io/v1"
"""The one-file-per-claim format of earlier releases, imported at ``open``."""

DB_PREFIX = "checkpoint-"
DB_SUFFIXES = ("", "-wal", "-shm")


def database_name(boot_id: str) -> str:
    """``checkpoint-<first 16 hex digits of SHA-256 of the boot id>.db``."""
    return f"{DB_PREFIX}{hashlib.sha256(boot_id.encode()).hexdigest()[:16]}.db"


def database_path(directory: str | os.PathLike[str]) -> Path | None:
    """The database of the latest boot under ``directory``, if any (for tools and tests)."""
    found = sorted(Path(directory).glob(f"{DB_PREFIX}*.db"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None

log = logging.getLogger(__name__)

Phase = Literal["preparing", "prepared"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claims (uid TEXT PRIMARY KEY, body TEXT NOT NULL,
                                   checksum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS held (pool TEXT NOT NULL, device TEXT NOT NULL, uid TEXT NOT NULL,
                                 PRIMARY KEY (pool, device));
CREATE INDEX IF NOT EXISTS held_by_uid ON held (uid);
CREATE TABLE IF NOT EXISTS corrupt (uid TEXT, body TEXT, reason TEXT, at REAL);
"""


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
    """A stored record could not be parsed or verified."""


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _checksum(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


_UID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_uid(uid: str) -> str:
    """A claim UID fit to name files: ASCII letters, digits, ``.``, ``_``, ``-``; ≤ 128.

    Kubernetes UIDs are UUIDs; anything else (empty, a path, a name of more than 255 bytes) is
    refused for that claim before it reaches the CDI directory or the database.
    """
    if not isinstance(uid, str) or not _UID_RE.fullmatch(uid):
        raise ConfigError(f"invalid claim UID {uid[:140]!r}" if isinstance(uid, str)
                          else "invalid claim UID")
    return uid


def _decode(uid: str, body: str, checksum: str) -> ClaimRecord:
    raw = body.encode()
    if checksum != _checksum(raw):
        raise CorruptStateError(f"record of claim {uid}: checksum mismatch")
    try:
        record = structure(json.loads(raw), ClaimRecord)
    except Exception as exc:
        raise CorruptStateError(f"record of claim {uid}: invalid: {exc}") from exc
    if record.uid != uid:
        raise CorruptStateError(f"record of claim {uid} names claim {record.uid}")
    return record


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
        self.path = self.directory / database_name("")  # named after the boot by ``open``
        self.corrupt_dir = self.directory / "corrupt"
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._in_batch = False

    # -- start-up ---------------------------------------------------------------------------

    def open(self, *, boot_id: str) -> OpenResult:
        """Open (or create) the database and load every record.  Call once, under the lock.

        A different ``boot_id`` than the stored one means the node rebooted: every record is
        discarded.  Corrupt records are set aside and salvaged as ``preparing`` records, which
        are returned for roll-back with the ones a crash interrupted.
        """
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.directory / database_name(boot_id)
        earlier = [p for p in self.directory.glob(f"{DB_PREFIX}*.db*")
                   if not p.name.startswith(self.path.name)]
        for stale in earlier:  # databases of earlier boots: what they describe is gone
            stale.unlink()
        corrupt: list[str] = []
        self._db = self._connect(corrupt)
        legacy = _LegacyTree(self.directory)
        legacy_boot = legacy.boot_id() if legacy.present() else None
        rebooted = any(p.name.endswith(".db") for p in earlier) or (
            legacy_boot is not None and legacy_boot != boot_id)
        if rebooted:
            log.warning("node rebooted since the checkpoint was written; discarding prepared "
                        "claims", extra={"boot_id": boot_id})
        with self.batch():
            if legacy_boot == boot_id:
                corrupt += self._import(legacy)
            self._execute("INSERT OR REPLACE INTO meta VALUES ('bootID', ?)", (boot_id,))
            prepared: list[ClaimRecord] = []
            interrupted: list[ClaimRecord] = []
            rows = self._all("SELECT uid, body, checksum FROM claims ORDER BY uid")
            for uid, body, checksum in rows:
                try:
                    record = _decode(uid, body, checksum)
                except CorruptStateError as exc:
                    corrupt.append(f"record of claim {uid}")
                    record = self._salvage(uid, body, str(exc))
                (prepared if record.phase == "prepared" else interrupted).append(record)
            self._execute("DELETE FROM held")
            for record in prepared + interrupted:
                self.mark_devices(record)
        if legacy.present():
            legacy.retire()
        return OpenResult(tuple(prepared), tuple(interrupted), tuple(corrupt), rebooted)

    def _connect(self, corrupt: list[str]) -> sqlite3.Connection:
        """The database, opened and checked; an unusable one is moved aside for a new one."""
        for attempt in (1, 2):
            try:
                mode = os.lstat(self.path).st_mode
            except FileNotFoundError:
                mode = None
            if mode is not None and not stat.S_ISREG(mode):
                raise SetupError(f"{self.path} is not a regular file; refusing to use it")
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                 timeout=5.0)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")
                if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise sqlite3.DatabaseError("the integrity check failed")
                db.executescript(_SCHEMA)
                version = db.execute("SELECT value FROM meta WHERE key='apiVersion'").fetchone()
                if version is None:
                    db.execute("INSERT INTO meta VALUES ('apiVersion', ?)", (API_VERSION,))
                elif version[0] != API_VERSION:
                    raise sqlite3.DatabaseError(f"unsupported format {version[0]!r}")
                return db
            except sqlite3.DatabaseError as exc:
                db.close()
                # not a database, malformed, another format: set aside; anything else
                # (locked, no permission, I/O) is no verdict on the file and is raised
                if attempt == 2 or isinstance(exc, sqlite3.OperationalError):
                    raise
                corrupt.append(self._set_aside_database(str(exc)))
        raise AssertionError("unreachable")

    def _set_aside_database(self, reason: str) -> str:
        self.corrupt_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.corrupt_dir / f"{self.path.name}.{time.time_ns()}"
        for suffix in DB_SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{target}{suffix}")
        log.error("the checkpoint database is unusable; moved aside, starting a new one",
                  extra={"path": str(self.path), "moved_to": str(target),
                         "reason": reason[:1000]})
        return str(target)

    def _import(self, legacy: _LegacyTree) -> list[str]:
        """Records and held devices of a one-file-per-claim tree, into this database."""
        corrupt = []
        for uid, record in legacy.records():
            if record is None:
                corrupt.append(f"legacy record of claim {uid}")
                devices = tuple(RecordedDevice(request="", pool=p, device=d)
                                for p, d in legacy.marked_by(uid))
                record = ClaimRecord(uid=uid, namespace="", name="", phase="preparing",
                                     devices=devices)
            self.put(record)
        log.info("imported the claim records of an earlier release",
                 extra={"path": str(self.directory), "corrupt": len(corrupt)})
        return corrupt

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- transactions -----------------------------------------------------------------------

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        self._all(sql, params)

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run one statement and fetch its rows, all under the connection's lock."""
        with self._lock:
            if self._db is None:
                raise sqlite3.ProgrammingError("the checkpoint is not open")
            return self._db.execute(sql, params).fetchall()

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group every write in the block into one transaction (nested blocks join it)."""
        with self._lock:
            if self._in_batch:
                yield
                return
            self._execute("BEGIN IMMEDIATE")
            self._in_batch = True
            try:
                yield
            except BaseException:
                self._in_batch = False
                with contextlib.suppress(sqlite3.Error):
                    self._execute("ROLLBACK")
                raise
            self._in_batch = False
            self._execute("COMMIT")

    # -- records ----------------------------------------------------------------------------

    def _row(self, uid: str) -> tuple[str, str] | None:
        row = self._one("SELECT body, checksum FROM claims WHERE uid=?", (check_uid(uid),))
        return None if row is None else (str(row[0]), str(row[1]))

    def peek(self, uid: str) -> ClaimRecord | None:
        """The record of claim ``uid`` as it is, changing nothing; safe without the lock.

        None when there is none, or when it is corrupt (``get``, under the lock, deals with
        that).  A failed read raises ``sqlite3.Error``."""
        row = self._row(uid)
        if row is None:
            return None
        try:
            return _decode(uid, *row)
        except CorruptStateError:
            return None

    def get(self, uid: str) -> ClaimRecord | None:
        """The record of claim ``uid``, or None.  Call it under the lock.

        A corrupt record is set aside and replaced by what is known without it: a stored
        ``preparing`` record of the devices held for ``uid`` (see the module docstring).
        """
        row = self._row(uid)
        if row is None:
            return None
        try:
            return _decode(uid, *row)
        except CorruptStateError as exc:
            with self.batch():
                return self._salvage(uid, row[0], str(exc))

    def _salvage(self, uid: str, body: str, reason: str) -> ClaimRecord:
        self._execute("INSERT INTO corrupt VALUES (?, ?, ?, ?)",
                      (uid, body[:1_000_000], reason[:1000], time.time()))
        log.error("a claim record is corrupt; set aside, the claim will be rolled back",
                  extra={"claim_uid": uid, "reason": reason[:1000]})
        devices = tuple(RecordedDevice(request="", pool=pool, device=device)
                        for pool, device in self._held_by(uid))
        record = ClaimRecord(uid=uid, namespace="", name="", phase="preparing", devices=devices)
        self.put(record)
        return record

    def put(self, record: ClaimRecord) -> None:
        """Store ``record``, replacing an earlier one of the same claim."""
        raw = _canonical(unstructure(record))
        self._execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)",
                      (check_uid(record.uid), raw.decode(), _checksum(raw)))

    def delete(self, uid: str) -> None:
        self._execute("DELETE FROM claims WHERE uid=?", (check_uid(uid),))

    def records(self) -> Iterator[ClaimRecord]:
        """Every readable record (used by tools and tests; not on the prepare path)."""
        rows = self._all("SELECT uid, body, checksum FROM claims ORDER BY uid")
        for uid, body, checksum in rows:
            with contextlib.suppress(CorruptStateError):
                yield _decode(uid, body, checksum)

    # -- device-in-use index ----------------------------------------------------------------

    def device_owner(self, pool: str, device: str) -> str | None:
        """UID of the claim holding ``pool/device`` exclusively, if any."""
        row = self._one("SELECT uid FROM held WHERE pool=? AND device=?", (pool, device))
        return None if row is None else str(row[0])

    def _held_by(self, uid: str) -> list[tuple[str, str]]:
        rows = self._all("SELECT pool, device FROM held WHERE uid=? ORDER BY pool, device",
                         (uid,))
        return [(str(p), str(d)) for p, d in rows]

    def mark_devices(self, record: ClaimRecord) -> None:
        """Record that ``record``'s exclusive devices are in use by it."""
        for dev in record.devices:
            if dev.exclusive:
                self._execute("INSERT OR REPLACE INTO held VALUES (?, ?, ?)",
                              (dev.pool, dev.device, record.uid))

    def release_devices(self, record: ClaimRecord) -> None:
        """Drop the in-use markers that ``record`` holds."""
        self._execute("DELETE FROM held WHERE uid=?", (record.uid,))


def recorded_phases(directory: str | os.PathLike[str]) -> dict[str, str]:
    """Claim UID → phase of every record under ``directory``, read without changing anything
    (for tools and tests; a plugin may be running on it)."""
    path = database_path(directory)
    if path is None:
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT uid, body FROM claims ORDER BY uid").fetchall()
    finally:
        db.close()
    phases = {}
    for uid, body in rows:
        with contextlib.suppress(ValueError, AttributeError):
            phases[str(uid)] = str(json.loads(body).get("phase"))
    return phases


class _LegacyTree:
    """The state of earlier releases: ``checkpoint.json``, ``claims/<uid>.json`` (versioned,
    checksummed envelopes) and ``devices/<sha256>`` markers."""

    def __init__(self, directory: Path) -> None:
        self.claims_dir = directory / "claims"
        self.devices_dir = directory / "devices"
        self.meta_path = directory / "checkpoint.json"

    def present(self) -> bool:
        return self.claims_dir.is_dir() and not self.claims_dir.is_symlink()

    def _envelope(self, path: Path, kind: str) -> dict[str, Any]:
        try:
            doc = json.loads(read_regular(path))
        except (NotRegularFileError, ValueError, RecursionError) as exc:
            raise CorruptStateError(f"{path}: {exc}") from exc
        body = doc.get("data") if isinstance(doc, dict) else None
        if (doc.get("apiVersion"), doc.get("kind")) != (LEGACY_API_VERSION, kind) or (
                doc.get("checksum") != _checksum(_canonical(body))) or not isinstance(body, dict):
            raise CorruptStateError(f"{path}: not a {kind} of {LEGACY_API_VERSION}")
        return body

    def boot_id(self) -> str | None:
        try:
            return str(self._envelope(self.meta_path, "Checkpoint").get("bootID", "")) or None
        except (FileNotFoundError, CorruptStateError):
            return None

    def records(self) -> Iterator[tuple[str, ClaimRecord | None]]:
        """``(uid, record)`` per file; ``None`` for a file that is not a valid record."""
        for path in sorted(self.claims_dir.iterdir()):
            uid = path.name[: -len(".json")]
            if not path.name.endswith(".json") or not _UID_RE.fullmatch(uid):
                continue
            try:
                record = structure(self._envelope(path, "PreparedClaim"), ClaimRecord)
            except Exception:  # not a record of ours, whatever is wrong with it
                yield uid, None
            else:
                yield uid, record

    def marked_by(self, uid: str) -> list[tuple[str, str]]:
        found = []
        with contextlib.suppress(FileNotFoundError):
            for path in sorted(self.devices_dir.iterdir()):
                with contextlib.suppress(OSError, ValueError, RecursionError):
                    data = json.loads(read_regular(path))
                    if isinstance(data, dict) and data.get("claim") == uid and isinstance(
                            data.get("pool"), str) and isinstance(data.get("device"), str):
                        found.append((data["pool"], data["device"]))
        return found

    def retire(self) -> None:
        """Remove the tree, leaving a file where ``claims/`` was (see the module docstring)."""
        shutil.rmtree(self.claims_dir)
        self.claims_dir.write_text("the claim records moved to the checkpoint database\n")
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.devices_dir)
        with contextlib.suppress(FileNotFoundError):
            self.meta_path.unlink()
