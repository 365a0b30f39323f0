"""An in-process preparer with the example backend and an in-memory claim source."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dra_framework.errors import ClaimMismatchError
from dra_framework.loader import Backend
from dra_framework.models import BackendSettings, ClaimRef
from dra_framework.node.prepare import ClaimPreparer
from dra_framework.testing.claims import Result, allocated_claim


class Claims:
    """Claims by namespace/name, like the API server."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.reads = 0

    def add(self, obj: dict[str, Any]) -> ClaimRef:
        m = obj["metadata"]
        self.objects[(m["namespace"], m["name"])] = obj
        return ClaimRef(namespace=m["namespace"], name=m["name"], uid=m["uid"])

    def lookup(self, claim: ClaimRef) -> Mapping[str, Any] | None:
        return None  # like a live API: every claim is read with ``get``

    def get(self, claim: ClaimRef, *, timeout: float | None = None) -> Mapping[str, Any]:
        self.reads += 1
        try:
            return self.objects[(claim.namespace, claim.name)]
        except KeyError:
            raise ClaimMismatchError(
                f"ResourceClaim {claim.namespace}/{claim.name} not found") from None


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.claims = Claims()
        self.cdi = tmp_path / "cdi"
        self.state = tmp_path / "state"
        self.backend_state = tmp_path / "backend"
        self.boot_id = "boot-1"
        self.preparer = self.start()

    def start(self) -> ClaimPreparer:
        backend = Backend.load("example")
        backend.setup(BackendSettings(backend="example", node_name="node-1",
                                      state_dir=str(self.backend_state), options={}))
        p = ClaimPreparer(backend=backend, claims=self.claims, state_dir=self.state,
                          cdi_root=self.cdi, boot_id=self.boot_id)
        p.recover()
        return p

    def restart(self) -> ClaimPreparer:
        self.preparer.close()
        self.preparer = self.start()
        return self.preparer

    def claim(self, name: str, *devices: str, admin: bool = False, **kw: Any) -> ClaimRef:
        return self.claims.add(allocated_claim(
            name=name, results=[Result(request="gpu", device=d, admin_access=admin)
                                for d in devices], **kw))

    def markers(self) -> list[str]:
        return sorted(p.stem for p in (self.backend_state / "prepared").iterdir())

    def specs(self) -> list[str]:
        return sorted(p.name for p in self.cdi.glob("*.json")) if self.cdi.exists() else []
