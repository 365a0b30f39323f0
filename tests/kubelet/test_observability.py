"""Metrics and structured logs of a real ``serve`` process."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest

from dra_framework.models import ClaimRef
from dra_framework.testing.claims import Result, allocated_claim, unallocated_claim
from dra_framework.testing.fakeapi import FakeApiServer

from .serveproc import ServeProcess

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            head, value = line.rsplit(" ", 1)
            got = ",".join(sorted(head[len(name) + 1:-1].split(",")))
            if got == want:
                return float(value)
    return 0.0


def test_metrics_and_claim_logs(short_tmp: Path, api: FakeApiServer) -> None:
    kubeconfig = api.write_kubeconfig(short_tmp / "kubeconfig")
    port = free_port()
    proc = ServeProcess(short_tmp, kubeconfig=kubeconfig,
                        extra_args=("--metrics-address", f"127.0.0.1:{port}"))
    try:
        conn = proc.connect()
        good = allocated_claim(name="observed", results=[Result(request="gpu", device="gpu-0")])
        bad = unallocated_claim(name="pending-observed")
        for obj in (good, bad):
            api.seed(obj)
        refs = [ClaimRef(namespace="default", name=o["metadata"]["name"],
                         uid=o["metadata"]["uid"]) for o in (good, bad)]
        conn.prepare(refs)
        conn.unprepare(refs[:1])
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = text.decode()
    finally:
        assert proc.stop() == 0
    d = "gpu.example.com"
    total = "dra_framework_claim_operations_total"
    assert metric(text, total, driver=d, operation="prepare", outcome="prepared") == 1
    assert metric(text, total, driver=d, operation="prepare", outcome="error") == 1
    assert metric(text, total, driver=d, operation="unprepare", outcome="unprepared") == 1
    assert metric(text, "dra_framework_claim_errors_total", driver=d, operation="prepare",
                  kind="ClaimMismatchError") == 1
    assert metric(text, "dra_framework_claim_operation_seconds_count", driver=d,
                  operation="prepare") == 2
    assert metric(text, "dra_framework_registration_status_total", driver=d,
                  registered="True") == 1

    events = [json.loads(line) for line in proc.log.read_text().splitlines()
              if line.startswith("{")]
    claim_events = [e for e in events if e["msg"].startswith(("claim ", "prepare failed"))]
    assert {e["msg"].split(":")[0] for e in claim_events} == {
        "claim prepared", "claim unprepared", "prepare failed"}
    for e in claim_events:
        assert {"claim_uid", "claim_namespace", "claim_name", "ts", "level"} <= set(e)
    failed = next(e for e in claim_events if e["msg"].startswith("prepare failed"))
    assert failed["level"] == "error" and failed["claim_name"] == "pending-observed"
    assert failed["msg"] == (
        "prepare failed: ResourceClaim default/pending-observed is not allocated")
