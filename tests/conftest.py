"""Shared fixtures: an extra installed distribution with backends, found through entry points."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def acme_distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Install ``acme-backends`` 2.3.4: backends ``acme`` (the example backend under another
    name, so it can run beside ``example`` with its own options), ``acme-min`` (a module that
    only names a driver) and ``broken`` (cannot be imported)."""
    root = tmp_path_factory.mktemp("site")
    dist = root / "acme_backends-2.3.4.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-backends\nVersion: 2.3.4\n")
    (dist / "entry_points.txt").write_text(
        "[dra_framework.backends]\n"
        "acme = dra_framework.backends.example:ExampleBackend\n"
        "acme-min = acme_backend:AcmeBackend\n"
        "broken = acme_backend_missing:Nothing\n"
    )
    (root / "acme_backend.py").write_text(
        "from dra_framework import DriverInfo, hookimpl\n"
        "class AcmeBackend:\n"
        "    @hookimpl\n"
        "    def dra_driver_info(self):\n"
        "        return DriverInfo(driver_name='acme.example.org')\n"
    )
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("acme_backend", None)
