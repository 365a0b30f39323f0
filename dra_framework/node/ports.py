"""What the preparer needs from outside node state, as protocols the outer layers implement.

Node state must not know the API exists.  The preparer reads each claim from a ``ClaimSource``
(the API plane's watch cache or live GET, or a test's dict) and tells a ``ClaimObserver`` of each
claim it committed or undid (the API plane's claim status writer, which reports the prepared
devices in the claim's ``status.devices``).  The command layer wires the implementations in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..models import ClaimRef
from .checkpoint import ClaimRecord


class ClaimSource(Protocol):
    """Where claims are read from (the API server, or a cache of it)."""

    def get(self, claim: ClaimRef, *, timeout: float | None = None) -> Mapping[str, Any]:
        """The claim object (plain JSON data, read-only) named by ``claim``'s namespace/name.

        ``timeout`` bounds a read from the API server in all (connect, send, answer; no retries
        within it), so that the kubelet's call can answer before its deadline; ``None`` means
        the source's own default.  Every failure is a ``ClaimError`` of that claim.
        """
        ...

    def lookup(self, claim: ClaimRef) -> Mapping[str, Any] | None:
        """The claim if the source holds it in memory (what ``get`` would answer without any
        I/O), else None.  It never blocks: the preparer asks it inline, and reads what it does
        not hold with ``get`` on threads of its own."""
        ...


class ClaimObserver(Protocol):
    """Hears of every claim prepared or unprepared; must neither block nor raise."""

    def claim_prepared(self, record: ClaimRecord) -> object:
        """``record`` (phase ``prepared``) was committed."""

    def claim_unprepared(self, record: ClaimRecord) -> object:
        """``record`` was undone and removed from the checkpoint."""
