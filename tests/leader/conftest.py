"""Fixtures: a fake API server per test, electors with short timings, and their event log."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from dra_framework.api.leader import LeaderElector
from dra_framework.api.rest import ApiError, KubeApi
from dra_framework.testing.fakeapi import FakeApiServer

LEASE, RENEW, RETRY = 1.0, 0.6, 0.1


def api_for(url: str) -> KubeApi:
    configuration = client.Configuration()
    configuration.host = url
    return KubeApi(api_client=client.ApiClient(configuration), timeout=2.0)


def wait_until(predicate: Callable[[], object], timeout: float = 5.0,
               what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class FlakyApi(KubeApi):
    """A KubeApi whose requests fail with ``code`` while ``broken`` is set, and that calls
    ``before_write`` (once) before its first PUT."""

    def __init__(self, *, url: str) -> None:
        super().__init__(api_client=api_for(url).api_client, timeout=2.0)
        self.broken = False
        self.code = 503
        self.before_write: Callable[[], None] | None = None
        self.bodies: list[tuple[str, str, Any]] = []

    def request(self, method: str, url_path: str, **kw: Any) -> dict[str, Any]:
        if self.broken:
            raise ApiError(code=self.code, reason="ServiceUnavailable", message="injected")
        if method == "PUT" and self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook()
        self.bodies.append((method, url_path, kw.get("body")))
        return super().request(method, url_path, **kw)


class Events:
    """What the callbacks of one elector saw, with monotonic times."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self.work_ended: list[float] = []
        self.stopped: list[float] = []
        self.stop_events: list[threading.Event] = []

    def on_started(self, stop: threading.Event) -> None:
        self.stop_events.append(stop)
        self.started.append(time.monotonic())
        stop.wait()
        self.work_ended.append(time.monotonic())

    def on_stopped(self) -> None:
        self.stopped.append(time.monotonic())


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=None) as server:
        yield server


@pytest.fixture
def lease_name() -> str:
    return f"lease-{uuid.uuid4().hex[:8]}"


MakeElector = Callable[..., tuple[LeaderElector, Events]]


@pytest.fixture
def make_elector(fake: FakeApiServer, lease_name: str) -> Iterator[MakeElector]:
    """``make_elector(identity, **overrides)``: a started elector with short timings on the
    fake server (or ``api=...``); all are stopped at the end of the test."""
    electors: list[LeaderElector] = []

    def make(identity: str, *, start: bool = True, **kw: Any) -> tuple[LeaderElector, Events]:
        events = Events()
        options: dict[str, Any] = {
            "api": api_for(fake.url), "namespace": "default", "name": lease_name,
            "identity": identity, "lease_duration": LEASE, "renew_deadline": RENEW,
            "retry_period": RETRY, "on_started_leading": events.on_started,
            "on_stopped_leading": events.on_stopped, **kw}
        elector = LeaderElector(**options)
        electors.append(elector)
        if start:
            elector.start()
        return elector, events

    yield make
    for elector in electors:
        elector.stop(timeout=5)
