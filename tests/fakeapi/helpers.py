"""Helpers for the fake API server tests: captured fixtures, request bodies, raw HTTP."""

from __future__ import annotations

import copy
import http.client
import json
from pathlib import Path
from typing import Any

from kubernetes import client

from dra_framework.testing.fakeapi import FakeApiServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-v1.35"


def fixture(name: str) -> Any:
    """A response captured from kube-apiserver v1.35.6 (see fixtures/kube-v1.35/README.md)."""
    return json.loads((FIXTURES / name).read_text())


def fixture_lines(name: str) -> list[bytes]:
    return (FIXTURES / name).read_bytes().splitlines()


def request_body(obj: dict[str, Any]) -> dict[str, Any]:
    """What a client would POST for a fixture object: no server-set fields, no status."""
    body = copy.deepcopy(obj)
    meta = body["metadata"]
    for key in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                "finalizers", "ownerReferences"):
        meta.pop(key, None)
    body.pop("status", None)
    return body


def raw_request(server: FakeApiServer, method: str, path: str, body: str | None = None,
                content_type: str = "application/json") -> tuple[int, bytes]:
    """An HTTP request without the client, for byte-level checks."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        headers = {"Content-Type": content_type} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def slice_body(name: str, **spec: Any) -> dict[str, Any]:
    """A valid one-device ResourceSlice for node-1, with ``spec`` overrides."""
    base: dict[str, Any] = {
        "driver": "gpu.example.com",
        "pool": {"name": "node-1", "generation": 1, "resourceSliceCount": 1},
        "nodeName": "node-1",
        "devices": [{"name": "gpu-0", "attributes": {"model": {"string": "Example-X100"}}}],
    }
    base.update(spec)
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": name}, "spec": base}


def body_of(exc: client.ApiException) -> Any:
    return json.loads(exc.body)


def data(resp: Any) -> Any:
    """The JSON of a ``_preload_content=False`` response."""
    return json.loads(resp.data)
