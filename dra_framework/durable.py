"""Durable file writes and safe reads: the one way the framework, and a backend, keep a file.

``atomic_write`` writes a new temporary file in the target's directory, fsyncs it, renames it
over the target and fsyncs the directory, so a reader (or the next start after a crash) sees the
old bytes or the new ones, never a mix, and a written file survives a power loss once the call
returns.  ``write_file`` writes a file in place, for state that a crash may leave half written
because nothing reads it then but the code that would remove it.  ``read_regular`` reads a file
only if it is a regular file at that very path.

State directories are trusted less than the code: something else on the node may have planted a
symbolic link or a FIFO where a state file belongs.  Neither function ever follows a link:
the temporary file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a name that exists, link
or not, is never opened), the rename replaces a link at the target rather than its target, and
reads open with ``O_NOFOLLOW | O_NONBLOCK`` and refuse anything but a regular file
(``NotRegularFileError``).  The node state (checkpoint) uses them for its records; backends use
them for state of their own, which is why they live beside the contract rather than inside the
node layer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from pathlib import Path


class NotRegularFileError(OSError):
    """The path holds a symbolic link, a directory, a FIFO or a device, not a regular file."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, sync: bool = True,
                 sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: new temp file in the same dir, fsync, rename.

    ``sync`` fsyncs the file before the rename; ``sync_dir`` then fsyncs the directory, which
    makes the rename itself durable (a caller writing several files may do that once, last).
    Nothing already at the temporary name is ever written through: a leftover is removed and
    the name tried once more.
    """
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            fd = os.open(tmp, flags, mode)
        except FileExistsError:
            os.unlink(tmp)  # a crashed writer's leftover, or something planted: never ours
            fd = os.open(tmp, flags, mode)
        try:
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync and sync_dir:
        fsync_dir(path.parent)


def write_file(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Create or replace the file at ``path`` with ``data`` in place (not atomic: for state
    that is only ever read back whole after a clean write, or thrown away), never through a
    link: a link or other entry at ``path`` is removed first."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise
        if os.path.isdir(path) and not os.path.islink(path):
            raise
        os.unlink(path)
        fd = os.open(path, flags | os.O_EXCL, mode)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path))
        _write_all(fd, data)
    finally:
        os.close(fd)


def read_regular(path: Path) -> bytes:
    """The bytes of the regular file at ``path``, never through a link.

    Raises ``FileNotFoundError`` when nothing is there, ``NotRegularFileError`` when something
    other than a regular file is (a symbolic link, a directory, a FIFO...), and ``OSError`` for
    a failed read (permissions, no file descriptors left: transient, not the file's fault).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise NotRegularFileError(exc.errno, f"not a regular file: {exc.strerror}",
                                      str(path)) from exc
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path))
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
