"""Named crash points for testing recovery from a real ``kill -9``.

``point(name)`` does nothing unless the environment variable ``DRA_FRAMEWORK_CRASH_AT`` names
that point, in which case the process sends itself SIGKILL there: no cleanup, no ``finally``,
exactly what an OOM kill or node-level kill does.  Tests run a real ``dra-framework serve`` with
the variable set and check that the next start leaves no half-prepared claim behind.
"""

from __future__ import annotations

import os
import signal

ENV = "DRA_FRAMEWORK_CRASH_AT"

PREPARE_POINTS = (
    "prepare:recorded",  # intent record written, backend not yet called
    "prepare:backend-done",  # backend prepared the devices, no CDI spec yet
    "prepare:cdi-written",  # CDI spec written, record still "preparing"
    "prepare:committed",  # record "prepared", reply not yet sent
)
UNPREPARE_POINTS = (
    "unprepare:backend-done",  # backend undid the devices, spec and record still there
    "unprepare:cdi-removed",  # spec removed, record still there
)

_target = os.environ.get(ENV, "")


def point(name: str) -> None:
    """Crash here with SIGKILL when ``DRA_FRAMEWORK_CRASH_AT`` equals ``name``."""
    if _target and _target == name:
        os.kill(os.getpid(), signal.SIGKILL)
