"""Fixtures for the fake API server tests: a server and real API clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from dra_framework.testing.fakeapi import FakeApiServer


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=None) as srv:
        yield srv


@pytest.fixture
def api_client(server: FakeApiServer) -> Iterator[client.ApiClient]:
    with server.api_client() as api:
        yield api


@pytest.fixture
def resource_api(api_client: client.ApiClient) -> client.ResourceV1Api:
    return client.ResourceV1Api(api_client)


@pytest.fixture
def core_api(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)
