"""Durable file writes: the one way the framework, and a backend, replace a file on disk.

``atomic_write`` writes a temporary file in the target's directory, fsyncs it, renames it over
the target and fsyncs the directory, so a reader (or the next start after a crash) sees the old
bytes or the new ones, never a mix, and a written file survives a power loss once the call
returns.  The node state (checkpoint) uses it for its records; backends use it for state of
their own (the NVIDIA backend's MIG ledger), which is why it lives beside the contract rather
than inside the node layer.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, sync: bool = True,
                 sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same dir, fsync, rename.

    ``sync`` fsyncs the file before the rename; ``sync_dir`` then fsyncs the directory, which
    makes the rename itself durable (a caller writing several files may do that once, last).
    """
    # Callers hold the serialization lock, so a temp name derived from the target (plus the
    # thread, for tools that write without the lock) cannot collide.
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.write(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync and sync_dir:
        fsync_dir(path.parent)
