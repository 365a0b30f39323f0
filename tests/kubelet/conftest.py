"""Fixtures: a node (fake API server + real plugin + kubelet-wire client) under tmp_path."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dra_framework.testing.fakeapi import FakeApiServer
from dra_framework.testing.harness import PluginHarness


@pytest.fixture(scope="session")
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: unix socket paths must stay under 108 bytes."""
    base = os.environ.get("DRA_TEST_TMP", "/tmp")
    with tempfile.TemporaryDirectory(prefix="dra-", dir=base) as d:
        yield Path(d)


@pytest.fixture
def node(short_tmp: Path, api: FakeApiServer) -> Iterator[PluginHarness]:
    with PluginHarness(root=short_tmp, api=api) as harness:
        yield harness
