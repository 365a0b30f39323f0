"""The MIG instances the backend created itself, remembered across restarts.

With ``create_mig``, prepare creates MIG devices; roll-back after a crash (the framework calls
unprepare with empty device state) must still find and destroy them.  The ledger is written
before an instance is created and completed right after, so every instance the backend made is
either in it or was never made.  Writes use the framework's atomic write (fsynced).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dra_framework import BackendError
from dra_framework.durable import atomic_write, read_regular

from .types import GpuInfo, MigDevice, MigPlacement, MigProfile


class MigLedger:
    """The MIG instances this backend created, in a JSON file that survives restarts.

    ``{"instances": [{"claim", "device", "gpu_index", "gpu_uuid", "profile", "start",
    "gi", "ci", "uuid"}, ...]}``; ``gi``/``ci``/``uuid`` are None until the instance exists.
    Every change rewrites the file atomically (temporary file, fsync, rename).  Used only from
    prepare and unprepare, which the framework serializes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(read_regular(self.path))
        except FileNotFoundError:
            return []
        except (OSError, ValueError, RecursionError) as exc:
            raise BackendError(f"cannot read the MIG ledger {self.path}: {exc}") from exc
        instances = data.get("instances") if isinstance(data, dict) else None
        if not isinstance(instances, list):
            raise BackendError(f"the MIG ledger {self.path} is not a ledger")
        return [e for e in instances if isinstance(e, dict)]

    def _write(self, entries: list[dict[str, Any]]) -> None:
        try:
            atomic_write(self.path, json.dumps({"instances": entries}, indent=1,
                                               sort_keys=True).encode())
        except OSError as exc:
            raise BackendError(f"cannot write the MIG ledger {self.path}: {exc}") from exc

    def intend(self, *, claim: str, device: str, gpu: GpuInfo, profile: MigProfile,
               placement: MigPlacement) -> None:
        """Record, before creating it, that ``claim`` is about to create ``device``."""
        entries = [e for e in self.entries() if (e["claim"], e["device"]) != (claim, device)]
        entries.append({"claim": claim, "device": device, "gpu_index": gpu.index,
                        "gpu_uuid": gpu.uuid, "profile": profile.name,
                        "start": placement.start, "gi": None, "ci": None, "uuid": None})
        self._write(entries)

    def created(self, *, claim: str, device: str, mig: MigDevice) -> None:
        entries = self.entries()
        for e in entries:
            if (e["claim"], e["device"]) == (claim, device):
                e.update(gi=mig.gpu_instance_id, ci=mig.compute_instance_id, uuid=mig.uuid)
        self._write(entries)

    def remove(self, *, claim: str, device: str) -> None:
        entries = self.entries()
        kept = [e for e in entries if (e["claim"], e["device"]) != (claim, device)]
        if len(kept) != len(entries):
            self._write(kept)
