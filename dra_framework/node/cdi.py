"""CDI spec writing: names, minimum versions, per-claim transient spec files.

A DRA driver hands devices to containers by writing a CDI spec file and returning the
fully-qualified CDI device names (``vendor/class=name``) to the kubelet.  This module owns the
whole of that contract, following ``docs/cdi.md``:

* **Names** (§3): ``validate_kind`` and ``validate_device_name`` apply the Go parser's grammar;
  ``claim_device_name`` builds the claim-unique ``<claimUID>-<device>`` name, so a CDI device name
  is never reused across claims (§8 rule 1) and runtimes never serve stale cached edits.
* **Specs** (§1, §2): ``build_spec`` turns ``ContainerEdits`` models into the JSON-ready dict,
  validating what a strict loader would reject (empty devices, duplicate names, empty edits, bad
  env/hook/device-node/mount entries) and writing the *computed minimum* ``cdiVersion`` via
  ``minimum_version``, so older runtimes still load it.  Invalid input is a ``CdiError``, a
  ``ClaimError``: one claim fails, never the plugin.
* **Files** (§5, §6): ``CdiSpecStore`` owns the ``<vendor>-<class>_<claimUID>.json`` files of one
  kind in one directory.  Writes are atomic (temp file in the same directory, rename), so a
  runtime sees either the old file or the new one, never a partial one; temp names end in ``.tmp``,
  which runtimes never read.  They are not fsynced: a spec only matters while the node runs,
  and after a crash of the machine the node reboots, the boot-id check discards what the
  plugin had prepared, and the specs left behind are removed as orphans at the next start.
  Removal is idempotent, and listing supports orphan cleanup without touching other vendors'
  files.

JSON keys come from the one converter (``dra_framework.convert``); nothing here knows about the
kubelet or the checkpoint, which sit above this module.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..convert import unstructure
from ..errors import ClaimError
from ..models import ContainerEdits

__all__ = [
    "CdiError",
    "CdiSpecStore",
    "build_spec",
    "claim_device_name",
    "minimum_version",
    "validate_device_name",
    "validate_kind",
]


log = logging.getLogger(__name__)


class CdiError(ClaimError):
    """An invalid CDI name, edit or spec, or a spec file that could not be written or removed."""


_QUALIFIER_RE = re.compile(r"[A-Za-z]([A-Za-z0-9_.-]*[A-Za-z0-9])?")
_DEVICE_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?")
_NOT_NAME_CHAR_RE = re.compile(r"[^A-Za-z0-9_.:-]")

BASE_VERSION = "0.3.0"
_HOOK_NAMES = frozenset(
    {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}
)
_NODE_TYPES = frozenset({"", "b", "c", "u", "p"})
_UINT32_MAX = 2**32 - 1


# --------------------------------------------------------------------------------------- names


def validate_kind(kind: str) -> None:
    """Check ``<vendor>/<class>`` against the CDI grammar; raise ``CdiError`` naming the part."""
    vendor, sep, cls = kind.partition("/")
    if not sep:
        raise CdiError(f"invalid CDI kind {kind!r}: expected <vendor>/<class>")
    for part, value in (("vendor", vendor), ("class", cls)):
        if not _QUALIFIER_RE.fullmatch(value):
            raise CdiError(
                f"invalid CDI kind {kind!r}: {part} {value!r} must start with a letter, end with "
                "a letter or digit and contain only letters, digits, '_', '.' and '-'"
            )


def validate_device_name(name: str) -> None:
    """Check a CDI device name against the grammar; raise ``CdiError`` naming the device."""
    if not _DEVICE_NAME_RE.fullmatch(name):
        raise CdiError(
            f"invalid CDI device name {name!r}: must start and end with a letter or digit and "
            "contain only letters, digits, '_', '.', ':' and '-'"
        )


def claim_device_name(*, claim_uid: str, device: str) -> str:
    """``<claimUID>-<device>``, with characters CDI names do not allow replaced by ``-``."""
    if not claim_uid or not device:
        raise CdiError(
            f"cannot name CDI device {device!r} of claim {claim_uid!r}: empty claim UID or device"
        )
    name = _NOT_NAME_CHAR_RE.sub("-", f"{claim_uid}-{device}")
    validate_device_name(name)
    return name


# ------------------------------------------------------------------------------------ versions


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.removeprefix("v").split("."))


def _edits_version(edits: Mapping[str, Any]) -> str:
    rdt = edits.get("intelRdt")
    if edits.get("netDevices") or (
        isinstance(rdt, Mapping) and (rdt.get("schemata") or rdt.get("enableMonitoring"))
    ):
        return "1.1.0"
    if rdt is not None or edits.get("additionalGids"):
        return "0.7.0"
    if any(node.get("hostPath") for node in edits.get("deviceNodes") or ()):
        return "0.5.0"
    if any(mount.get("type") for mount in edits.get("mounts") or ()):
        return "0.4.0"
    return BASE_VERSION


def minimum_version(spec: Mapping[str, Any]) -> str:
    """The lowest ``cdiVersion`` that can carry ``spec`` (a JSON spec dict), per cdi.md §1.

    Rules are applied to the spec-level and every device-level ``containerEdits``; the highest
    match wins.  The baseline is 0.3.0, the earliest version a spec may declare.
    """
    found = [BASE_VERSION]
    devices: Sequence[Mapping[str, Any]] = spec.get("devices") or ()
    all_edits = [spec.get("containerEdits") or {}]
    all_edits += [dev.get("containerEdits") or {} for dev in devices]
    found += [_edits_version(edits) for edits in all_edits]
    cls = str(spec.get("kind", "")).partition("/")[2]
    if spec.get("annotations") or "." in cls or any(d.get("annotations") for d in devices):
        found.append("0.6.0")
    # The Go library asks "is the first character not a letter"; for valid names: a digit.
    if any(str(d.get("name", ""))[:1] not in ("", *string.ascii_letters) for d in devices):
        found.append("0.5.0")
    return max(found, key=_version_key)


# --------------------------------------------------------------------------------------- specs


def _check_env(env: Iterable[str], where: str) -> None:
    for i, entry in enumerate(env):
        if "=" not in entry[1:]:
            raise CdiError(f"{where}.env[{i}]: {entry!r} must be NAME=value with a non-empty NAME")


def _check_edits(edits: ContainerEdits, where: str) -> None:
    _check_env(edits.env, where)
    for i, node in enumerate(edits.device_nodes):
        field = f"{where}.deviceNodes[{i}]"
        if not node.path:
            raise CdiError(f"{field}.path is required")
        if node.type is not None and node.type not in _NODE_TYPES:
            raise CdiError(f"{field}.type {node.type!r} must be one of b, c, u, p or empty")
        perms = node.permissions
        if perms is not None and perms != "none" and set(perms) - set("rwm"):
            raise CdiError(f"{field}.permissions {perms!r} must be 'none' or letters of 'rwm'")
        for key, value in (("uid", node.uid), ("gid", node.gid)):
            if value is not None and not 0 <= value <= _UINT32_MAX:
                raise CdiError(f"{field}.{key} {value} is not a uint32")
    for i, mount in enumerate(edits.mounts):
        field = f"{where}.mounts[{i}]"
        if not mount.host_path:
            raise CdiError(f"{field}.hostPath is required")
        if not mount.container_path:
            raise CdiError(f"{field}.containerPath is required")
    for i, hook in enumerate(edits.hooks):
        field = f"{where}.hooks[{i}]"
        if hook.hook_name not in _HOOK_NAMES:
            raise CdiError(
                f"{field}.hookName {hook.hook_name!r} must be one of {sorted(_HOOK_NAMES)}"
            )
        if not hook.path.startswith("/"):
            raise CdiError(f"{field}.path {hook.path!r} must be an absolute path")
        if hook.timeout is not None and hook.timeout <= 0:
            raise CdiError(f"{field}.timeout {hook.timeout} must be positive")
        _check_env(hook.env, field)
    for i, gid in enumerate(edits.additional_gids):
        if not 0 <= gid <= _UINT32_MAX:
            raise CdiError(f"{where}.additionalGids[{i}] {gid} is not a uint32")


def build_spec(
    *,
    kind: str,
    devices: Sequence[tuple[str, ContainerEdits]],
    common_edits: ContainerEdits | None = None,
) -> dict[str, Any]:
    """Validate and build a JSON-ready CDI spec with the computed minimum ``cdiVersion``.

    ``devices`` pairs each CDI device name with its edits.  ``common_edits`` become the
    spec-level ``containerEdits`` (applied once when any device of the spec is injected) and are
    omitted when empty.  Raises ``CdiError`` naming the device and field at fault.
    """
    validate_kind(kind)
    if not devices:
        raise CdiError(f"CDI spec of kind {kind!r} has no devices")
    seen: set[str] = set()
    entries: list[dict[str, Any]] = []
    for name, edits in devices:
        validate_device_name(name)
        if name in seen:
            raise CdiError(f"device {name!r}: name appears twice in the CDI spec")
        seen.add(name)
        if edits.is_empty():
            raise CdiError(f"device {name!r}: containerEdits must not be empty")
        _check_edits(edits, f"device {name!r}: containerEdits")
        entries.append({"name": name, "containerEdits": unstructure(edits)})
    spec: dict[str, Any] = {"kind": kind, "devices": entries}
    if common_edits is not None and not common_edits.is_empty():
        _check_edits(common_edits, "spec containerEdits")
        spec["containerEdits"] = unstructure(common_edits)
    return {"cdiVersion": minimum_version(spec), **spec}


def _unique_names(names: Sequence[str]) -> list[str]:
    """Keep first occurrences; later duplicates get ``-2``, ``-3``... avoiding every given name."""
    given = set(names)
    used: set[str] = set()
    result: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate in used or (candidate != name and candidate in given):
            n += 1
            candidate = f"{name}-{n}"
        used.add(candidate)
        result.append(candidate)
    return result


# --------------------------------------------------------------------------------------- files


class CdiSpecStore:
    """The per-claim transient spec files of one CDI kind in one directory.

    One file per claim, ``<root>/<vendor>-<class>_<claimUID>.json``, holding every device the
    driver prepared for that claim.  Temp files are ``spec.<vendor>-<class>.<random>.tmp``: they
    match the library's ``spec.*.tmp`` pattern, are never read by runtimes, and carry this
    store's kind so that cleanup never deletes another writer's in-flight file.
    """

    def __init__(self, *, root: str | os.PathLike[str], kind: str) -> None:
        validate_kind(kind)
        self.root = Path(root)
        self.kind = kind
        vendor, _, cls = kind.partition("/")
        self._prefix = f"{vendor}-{cls}_"
        self._tmp_prefix = f"spec.{vendor}-{cls}."

    def spec_path(self, claim_uid: str) -> Path:
        """``<root>/<vendor>-<class>_<claimUID>.json``, every ``/`` of the UID replaced by ``_``."""
        if not claim_uid:
            raise CdiError("cannot name a CDI spec file for an empty claim UID")
        return self.root / f"{self._prefix}{claim_uid.replace('/', '_')}.json"

    def write_claim_spec(
        self,
        *,
        claim_uid: str,
        devices: Sequence[tuple[str, ContainerEdits]],
        common_edits: ContainerEdits | None = None,
    ) -> list[str]:
        """Atomically write the claim's spec; return its CDI IDs in the order of ``devices``.

        Each input pairs a device's name in the pool with its edits; its CDI device name is
        ``claim_device_name(claim_uid, device)``, made unique with ``-2``, ``-3``... when two
        inputs map to the same name.  Raises ``CdiError`` for invalid input or a failed write; a
        failed write leaves any previous spec file untouched and no temp file behind.
        """
        path = self.spec_path(claim_uid)
        names = _unique_names(
            [claim_device_name(claim_uid=claim_uid, device=dev) for dev, _ in devices]
        )
        spec = build_spec(
            kind=self.kind,
            devices=[(name, edits) for name, (_, edits) in zip(names, devices, strict=True)],
            common_edits=common_edits,
        )
        try:
            data = (json.dumps(spec, sort_keys=True, separators=(",", ":")) + "\n").encode()
            self._write_atomic(path, data)
        except (OSError, TypeError, ValueError) as exc:
            raise CdiError(f"cannot write CDI spec {path} of claim {claim_uid}: {exc}") from exc
        return [f"{self.kind}={name}" for name in names]

    def _write_atomic(self, path: Path, data: bytes) -> None:
        try:
            fd, tmp = self._create_temp()
        except FileNotFoundError:  # the directory is made at the first write (or again)
            os.makedirs(self.root, mode=0o755, exist_ok=True)
            fd, tmp = self._create_temp()
        try:
            try:
                os.fchmod(fd, 0o644)  # whatever the umask: runtimes read it as another user
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _create_temp(self) -> tuple[int, str]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        for _ in range(100):
            tmp = f"{self.root}/{self._tmp_prefix}{secrets.token_hex(8)}.tmp"
            try:
                return os.open(tmp, flags, 0o644), tmp
            except FileExistsError:
                continue
        raise FileExistsError(f"no free temp file name in {self.root}")  # pragma: no cover

    def remove_claim_spec(self, *, claim_uid: str) -> bool:
        """Remove the claim's spec file; a missing one is fine.  Return whether one was removed.

        A directory at the spec's path was never a spec of ours (the write would have failed):
        it is left in place with a warning, and nothing of the claim's is there to remove."""
        path = self.spec_path(claim_uid)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            log.warning("a directory sits at the CDI spec path of a claim; left in place",
                        extra={"path": str(path), "claim_uid": claim_uid})
            return False
        except OSError as exc:
            raise CdiError(f"cannot remove CDI spec {path} of claim {claim_uid}: {exc}") from exc
        return True

    def claim_uids(self) -> set[str]:
        """Claim UIDs (as spelled in file names) that have a spec file of this kind in ``root``.

        For orphan cleanup.  Other vendors' and classes' files, temp files and directories are
        ignored; a file whose name matches but whose JSON declares another kind (a prefix
        collision such as vendor ``a-b``/class ``c`` against vendor ``a``/class ``b-c``) is not
        ours and is ignored too.
        """
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return set()
        uids: set[str] = set()
        for entry in entries:
            name = entry.name
            if not (name.startswith(self._prefix) and name.endswith(".json")):
                continue
            uid = name[len(self._prefix) : -len(".json")]
            if uid and entry.is_file(follow_symlinks=False) and self._is_ours(Path(entry.path)):
                uids.add(uid)
        return uids

    def _is_ours(self, path: Path) -> bool:
        try:
            kind = json.loads(path.read_bytes()).get("kind", self.kind)
        except (OSError, ValueError, AttributeError):
            return True  # unreadable but named like ours: ours to clean up
        return bool(kind == self.kind)

    def remove_stale_temp_files(self) -> int:
        """Delete this store's leftover temp files (from a crash mid-write); return how many.

        Call it at start-up, before this store writes anything.
        """
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return 0
        removed = 0
        for entry in entries:
            if entry.name.startswith(self._tmp_prefix) and entry.name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed
