"""One running node per backend, shared by every example of a module: a fake API server, the
real plugin and a kubelet-wire connection, plus what the properties inspect afterwards."""

from __future__ import annotations

import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from dra_framework.node.checkpoint import database_path, recorded_phases
from dra_framework.testing.harness import PluginHarness
from dra_framework.testing.kubelet import PluginConnection

from .backends import EXAMPLE, NVIDIA
from .strategies import BackendShape


@attrs.define
class RunningNode:
    """A harness with a connected kubelet, and the traces claims may leave on this node."""

    shape: BackendShape
    harness: PluginHarness
    conn: PluginConnection

    def traces(self, uid: str) -> list[str]:
        """Every CDI spec and state file that names ``uid`` (in its name or text), and the
        checkpoint's record or held devices of it (the database is read as such: its log keeps
        the bytes of rows long deleted)."""
        state = self.harness.state_dir(self.shape.driver)
        roots = [self.harness.cdi_root, state,
                 self.harness.backend_state_dir(self.shape.backend)]
        found = []
        for root in roots:
            for path in sorted(root.rglob("*")) if root.exists() else []:
                if path.name.startswith("checkpoint-"):
                    continue
                if uid in path.name or (path.is_file() and not path.is_symlink()
                                        and uid.encode() in path.read_bytes()):
                    found.append(str(path))
        if uid in recorded_phases(state):
            found.append("checkpoint record")
        db = sqlite3.connect(f"file:{database_path(state)}?mode=ro", uri=True)
        try:
            if db.execute("SELECT 1 FROM held WHERE uid=?", (uid,)).fetchone():
                found.append("checkpoint held device")
        finally:
            db.close()
        return found

    def held(self) -> list[str]:
        """What the backend still holds for some claim: devices set up, sharing applied."""
        node = self.harness.node
        assert node is not None
        plugin: Any = node.backends[0].plugin
        if self.shape.backend == "example":
            prepared = self.harness.backend_state_dir("example") / "prepared"
            return sorted(p.name for p in prepared.iterdir()) if prepared.exists() else []
        held = [f"sharing of claim {uid}" for uid in sorted(plugin.sharing.claims())]
        held += [f"MIG device {entry}" for entry in plugin.ledger.entries()]
        sliced: set[str] = set()
        daemons: Counter[tuple[str, ...]] = Counter()
        for call, args in plugin.fake_sharing.calls:
            if call == "set_timeslice":
                sliced.add(args[0])
            elif call == "reset_timeslice":
                sliced.discard(args[0])
            elif call in ("start_mps", "stop_mps"):
                daemons[args[0]] += 1 if call == "start_mps" else -1
        held += [f"time slice set on {gpu}" for gpu in sorted(sliced)]
        return held + [f"MPS daemon on {gpus}" for gpus, n in sorted(daemons.items()) if n]


def _running(shape: BackendShape) -> Iterator[RunningNode]:
    options = {shape.backend: dict(shape.options)} if shape.options else None
    with tempfile.TemporaryDirectory(prefix="dra-prop-", dir="/tmp") as root, PluginHarness(
            root=Path(root), backends=(shape.backend,), backend_options=options,
            publish=False) as harness:
        yield RunningNode(shape=shape, harness=harness, conn=harness.connect(shape.driver))


@pytest.fixture(scope="module")
def example_node() -> Iterator[RunningNode]:
    yield from _running(EXAMPLE)


@pytest.fixture(scope="module")
def nvidia_node() -> Iterator[RunningNode]:
    yield from _running(NVIDIA)
