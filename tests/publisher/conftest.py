"""Fixtures: fake API servers (default and all DRA gates) with the Node of the plugin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dra_framework.testing.fakeapi import ALL_DRA_GATES, FakeApiServer

from .helpers import seed_node


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    """Kubernetes 1.35 defaults: device taints and partitionable devices are off."""
    with FakeApiServer(bookmark_interval=0.2) as srv:
        seed_node(srv)
        yield srv


@pytest.fixture
def gated_server() -> Iterator[FakeApiServer]:
    """Every DRA feature gate on: taints, counters and per-device node selection are kept."""
    with FakeApiServer(bookmark_interval=0.2, feature_gates=ALL_DRA_GATES) as srv:
        seed_node(srv)
        yield srv
