"""The DRAResourceHealth stream of a running plugin."""

from __future__ import annotations

from pathlib import Path

from dra_framework.testing.harness import PluginHarness


def test_health_stream_reports_changes(node: PluginHarness) -> None:
    conn = node.connect()
    stream = conn.watch_health(timeout=20)
    first = next(stream)
    assert {(r.pool_name, r.device_name, r.health) for r in first} == {
        ("node-1", f"gpu-{i}", "HEALTHY") for i in range(8)}
    assert all(r.last_updated_time > 1_700_000_000 for r in first)
    faults: Path = node.backend_state_dir() / "unhealthy"
    faults.mkdir(parents=True, exist_ok=True)
    (faults / "gpu-3").touch()
    for update in stream:
        bad = {r.device_name: r for r in update if r.health == "UNHEALTHY"}
        if bad:
            assert list(bad) == ["gpu-3"] and bad["gpu-3"].message == "simulated fault"
            break
    else:
        raise AssertionError("no update after the fault")
    conn.close()
