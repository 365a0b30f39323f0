"""Loading backends: discovery through entry points, checked hook wrappers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dra_framework import AllocatedDevice, ClaimRef, PreparedDevice, hookimpl
from dra_framework.errors import BackendError, ConfigError, SetupError
from dra_framework.loader import Backend, installed_backends


def test_entry_point_discovery(acme_distribution: Path) -> None:
    found = {b.name: b for b in installed_backends()}
    assert found["acme-min"].distribution == "acme-backends"
    assert found["acme-min"].version == "2.3.4"
    assert found["example"].distribution == "dra-framework"
    backend = Backend.load("acme-min")
    assert backend.info.driver_name == "acme.example.org"
    assert backend.info.cdi_kind == "k8s.acme.example.org/claim"


def test_unknown_backend_lists_installed(acme_distribution: Path) -> None:
    with pytest.raises(SetupError, match=r"unknown backend 'nope'; installed backends: "
                                         r"acme, acme-min, broken, example"):
        Backend.load("nope")


def test_unloadable_backend_is_a_setup_error(acme_distribution: Path) -> None:
    with pytest.raises(SetupError, match="cannot load backend 'broken'"):
        Backend.load("broken")


def test_backends_command_lists_versions_and_drivers(acme_distribution: Path) -> None:
    from click.testing import CliRunner

    from dra_framework.commands.cli import main

    out = CliRunner().invoke(main, ["backends"]).output
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert lines["acme-min"][1:] == ["acme-backends", "2.3.4", "acme.example.org"]
    assert lines["acme"][1:] == ["acme-backends", "2.3.4", "gpu.example.com"]
    assert lines["example"][3] == "gpu.example.com"
    assert "<error:" in " ".join(lines["broken"])


def test_hookimpl_with_unknown_hook_is_refused() -> None:
    class Typo:
        @hookimpl
        def dra_prepare_claims(self) -> None: ...

    with pytest.raises(SetupError, match="invalid"):
        Backend(name="typo", plugin=Typo())


class Minimal:
    """Implements only what is required, plus switches for failure modes."""

    def __init__(self) -> None:
        self.fail_with: BaseException | None = None
        self.answer: list[PreparedDevice] | None = None
        self.shutdowns = 0

    @hookimpl
    def dra_driver_info(self) -> Any:
        from dra_framework import DriverInfo
        return DriverInfo(driver_name="min.example.org")

    @hookimpl
    def dra_prepare_claim(self, claim: ClaimRef, devices: list[AllocatedDevice]) -> Any:
        if self.fail_with:
            raise self.fail_with
        return self.answer if self.answer is not None else [
            PreparedDevice(pool=d.pool, device=d.device) for d in devices]

    @hookimpl
    def dra_unprepare_claim(self, claim: ClaimRef, devices: list[PreparedDevice]) -> None:
        if self.fail_with:
            raise self.fail_with

    @hookimpl
    def dra_shutdown(self) -> None:
        self.shutdowns += 1


CLAIM = ClaimRef(namespace="ns", name="n", uid="u")
DEVS = [AllocatedDevice(request="r", pool="p", device="d0"),
        AllocatedDevice(request="r", pool="p", device="d1")]


def test_optional_hooks_absent() -> None:
    b = Backend(name="min", plugin=Minimal())
    assert not b.accepts_config and not b.serves_health
    assert b.inventory() == [] and b.health() is None


def test_unexpected_exception_becomes_backend_error() -> None:
    plugin = Minimal()
    plugin.fail_with = RuntimeError("NVML_ERROR_GPU_IS_LOST")
    b = Backend(name="min", plugin=plugin)
    with pytest.raises(BackendError, match="failed to prepare: NVML_ERROR_GPU_IS_LOST"):
        b.prepare(claim=CLAIM, devices=DEVS)
    with pytest.raises(BackendError, match="failed to unprepare"):
        b.unprepare(claim=CLAIM, devices=[])


def test_config_error_passes_through() -> None:
    plugin = Minimal()
    plugin.fail_with = ConfigError("bad", path="$.x")
    with pytest.raises(ConfigError, match=r"\$.x: bad"):
        Backend(name="min", plugin=plugin).prepare(claim=CLAIM, devices=DEVS)


@pytest.mark.parametrize("answer", [
    pytest.param([PreparedDevice(pool="p", device="d0")], id="missing-device"),
    pytest.param([PreparedDevice(pool="p", device="d0"), PreparedDevice(pool="p", device="d9")],
                 id="unknown-device"),
    pytest.param([PreparedDevice(pool="p", device="d0"), PreparedDevice(pool="p", device="d1"),
                  PreparedDevice(pool="p", device="d1")], id="duplicate"),
])
def test_prepare_answer_must_match_devices(answer: list[PreparedDevice]) -> None:
    plugin = Minimal()
    plugin.answer = answer
    with pytest.raises(BackendError, match="expected one PreparedDevice for each"):
        Backend(name="min", plugin=plugin).prepare(claim=CLAIM, devices=DEVS)


def test_shutdown_is_called() -> None:
    plugin = Minimal()
    Backend(name="min", plugin=plugin).shutdown()
    assert plugin.shutdowns == 1


def test_pool_hooks_are_optional_and_passed_through() -> None:
    from dra_framework import CounterSet, Device, Pool

    class Partitioned(Minimal):
        @hookimpl
        def dra_counter_sets(self) -> list[CounterSet]:
            return [CounterSet(name="gpu-0-counters", counters={"memory": "80Gi"})]

        @hookimpl
        def dra_cluster_pools(self) -> list[Pool]:
            return [Pool(name="seats", devices=(Device(name="seat-0"),), all_nodes=True)]

    b = Backend(name="p", plugin=Partitioned())
    assert b.counter_sets()[0].counters == {"memory": "80Gi"}
    assert b.cluster_pools()[0].all_nodes
    plain = Backend(name="min", plugin=Minimal())
    assert plain.counter_sets() == [] and plain.cluster_pools() == []
