"""The reference backend ``example``: options, inventory, config decoding, prepare/unprepare."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from dra_framework import AllocatedDevice, BackendSettings, ClaimRef, ConfigError, Version
from dra_framework.backends.example import (
    ExampleBackend,
    ExampleOptions,
    GpuClassConfig,
    GpuConfig,
    Sharing,
    SpacePartitioning,
)
from dra_framework.errors import BackendError
from dra_framework.loader import Backend
from dra_framework.testing.claims import Config, Result, allocated_claim
from dra_framework.testing.harness import PluginHarness

CLAIM = ClaimRef(namespace="default", name="c", uid="uid-1")


def make(tmp_path: Path, **options: Any) -> ExampleBackend:
    b = ExampleBackend()
    b.dra_setup(BackendSettings(backend="example", node_name="node-1",
                                state_dir=str(tmp_path), options=options))
    return b


def test_defaults(tmp_path: Path) -> None:
    b = make(tmp_path)
    assert b.dra_driver_info().driver_name == "gpu.example.com"
    assert len(b.dra_inventory()) == 8


def test_options_from_strings(tmp_path: Path) -> None:
    b = make(tmp_path, devices="3", driver_name="acc.example.org", health="false")
    assert [d.name for d in b.dra_inventory()] == ["gpu-0", "gpu-1", "gpu-2"]
    assert b.dra_driver_info().driver_name == "acc.example.org"
    assert b.dra_device_health() is None


@pytest.mark.parametrize("options,expected", [
    pytest.param({"driver_name": "on"}, ExampleOptions(driver_name="on"), id="str-not-yaml-bool"),
    pytest.param({"driver_name": "1.10"}, ExampleOptions(driver_name="1.10"),
                 id="str-not-yaml-number"),
    pytest.param({"driver_name": "null"}, ExampleOptions(driver_name="null"),
                 id="str-not-yaml-null"),
    pytest.param({"devices": "0x10"}, ExampleOptions(devices=16), id="yaml-int"),
    pytest.param({"prepare_delay": "2"}, ExampleOptions(prepare_delay=2.0), id="int-is-a-number"),
    pytest.param({"prepare_delay": "0.5"}, ExampleOptions(prepare_delay=0.5), id="yaml-float"),
    pytest.param({"status": "on", "health": "no"}, ExampleOptions(status=True, health=False),
                 id="yaml-bools"),
    pytest.param({"seats": 4, "status": True}, ExampleOptions(seats=4, status=True),
                 id="typed-values"),
    pytest.param({"prepare-delay": "1"}, ExampleOptions(prepare_delay=1.0), id="dashed-name"),
])
def test_option_values(tmp_path: Path, options: dict[str, Any], expected: ExampleOptions) -> None:
    assert make(tmp_path, **options).options == expected


@pytest.mark.parametrize("options,message", [
    pytest.param({"devices": "many"}, "expected an integer, got string 'many' @ $.devices",
                 id="not-a-number"),
    pytest.param({"devices": "-1"}, "devices must be between", id="out-of-range"),
    pytest.param({"colour": "red"}, "extra fields found (colour)", id="unknown-option"),
    pytest.param({"devices": "3.0"}, "expected an integer, got number 3.0 @ $.devices",
                 id="int-from-float"),
    pytest.param({"devices": "true"}, "expected an integer, got boolean true @ $.devices",
                 id="int-from-bool"),
    pytest.param({"devices": "[1"}, "expected an integer, got string '[1' @ $.devices",
                 id="int-from-broken-yaml"),
    pytest.param({"devices": "[1, 2]"}, "expected an integer, got array @ $.devices",
                 id="int-from-yaml-list"),
    pytest.param({"health": "1"}, "expected a boolean, got integer 1 @ $.health",
                 id="bool-from-int"),
    pytest.param({"health": "enabled"}, "expected a boolean, got string 'enabled' @ $.health",
                 id="bool-from-word"),
    pytest.param({"prepare_delay": "yes"}, "expected a number, got boolean true @ "
                 "$.prepare_delay", id="float-from-bool"),
    pytest.param({"prepare_delay": ".nan"}, "expected a finite number, got number nan @ "
                 "$.prepare_delay", id="float-not-finite"),
    pytest.param({"driver_name": 7}, "expected a string, got integer 7 @ $.driver_name",
                 id="str-from-int"),
])
def test_bad_options(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="options of backend example") as err:
        make(tmp_path, **options)
    assert message in str(err.value)


def test_inventory_has_every_attribute_kind(tmp_path: Path) -> None:
    dev = make(tmp_path, devices=2).dra_inventory()[1]
    kinds = {type(v) for v in dev.attributes.values()}
    assert kinds == {int, str, bool, Version}
    assert "gpu.example.com/uuid" in dev.attributes
    assert dev.capacity == {"memory": "40Gi", "cores": "128"}


def test_decode_real_fixture_configs(tmp_path: Path) -> None:
    b = make(tmp_path)
    claim_cfg = b.dra_decode_config({"apiVersion": "gpu.example.com/v1", "kind": "GpuConfig",
                                     "sharing": {"strategy": "TimeSlicing"}})
    assert isinstance(claim_cfg, GpuConfig) and claim_cfg.sharing is not None
    assert claim_cfg.sharing.strategy == "TimeSlicing"
    class_cfg = b.dra_decode_config({"apiVersion": "gpu.example.com/v1",
                                     "defaultComputeMode": "Shared", "kind": "GpuClassConfig",
                                     "timeSliceMillis": 10})
    assert class_cfg == GpuClassConfig(api_version="gpu.example.com/v1", kind="GpuClassConfig",
                                       default_compute_mode="Shared", time_slice_millis=10)


@pytest.mark.parametrize("params,message", [
    pytest.param({"kind": "GpuConfig", "sharing": {"strategy": "TimeSlicing", "colour": 1}},
                 "extra fields found (colour) @ $.sharing", id="unknown-key"),
    pytest.param({"kind": "GpuConfig", "sharing": {"strategy": "Sometimes"}},
                 "@ $.sharing.strategy", id="bad-enum"),
    pytest.param({"kind": "GpuClassConfig", "timeSliceMillis": "ten"},
                 "@ $.timeSliceMillis", id="wrong-type"),
    pytest.param({"kind": "GpuClassConfig", "timeSliceMillis": 99999},
                 "$.timeSliceMillis: must be between", id="out-of-range"),
    pytest.param({"kind": "Mystery"}, "$.kind: unknown kind 'Mystery'", id="unknown-kind"),
    pytest.param({"kind": "GpuConfig", "apiVersion": "other/v2"}, "$.apiVersion",
                 id="wrong-api-version"),
    pytest.param({"kind": "GpuConfig", "sharing": {"strategy": "SpacePartitioning",
                                                   "spacePartitioning": {"partitionCount": 9}}},
                 "$.sharing.spacePartitioning.partitionCount", id="nested-range"),
])
def test_bad_config_names_the_field(tmp_path: Path, params: dict[str, Any], message: str) -> None:
    params = {"apiVersion": "gpu.example.com/v1", **params}
    with pytest.raises(ConfigError) as err:
        make(tmp_path).dra_decode_config(params)
    assert message in str(err.value)


CLASS = {"apiVersion": "gpu.example.com/v1", "kind": "GpuClassConfig"}
SLICE = "$.timeSliceMillis"
PARTS = "$.sharing.spacePartitioning.partitionCount"


def spatial(count: Any) -> dict[str, Any]:
    return {"apiVersion": "gpu.example.com/v1", "kind": "GpuConfig", "sharing": {
        "strategy": "SpacePartitioning", "spacePartitioning": {"partitionCount": count}}}


COERCED = [
    pytest.param({**CLASS, "timeSliceMillis": 1.5}, f"expected an integer, got number 1.5 @ "
                 f"{SLICE}", id="slice-from-float"),
    pytest.param({**CLASS, "timeSliceMillis": 2.0}, f"expected an integer, got number 2.0 @ "
                 f"{SLICE}", id="slice-from-whole-float"),
    pytest.param({**CLASS, "timeSliceMillis": True}, f"expected an integer, got boolean true @ "
                 f"{SLICE}", id="slice-from-bool"),
    pytest.param({**CLASS, "timeSliceMillis": "5"}, f"expected an integer, got string '5' @ "
                 f"{SLICE}", id="slice-from-string"),
    pytest.param({**CLASS, "timeSliceMillis": None}, f"expected an integer, got null @ {SLICE}",
                 id="slice-from-null"),
    pytest.param({**CLASS, "timeSliceMillis": [5]}, f"expected an integer, got array @ {SLICE}",
                 id="slice-from-array"),
    pytest.param(spatial(1.5), f"expected an integer, got number 1.5 @ {PARTS}",
                 id="partitions-from-float"),
    pytest.param(spatial(True), f"expected an integer, got boolean true @ {PARTS}",
                 id="partitions-from-bool"),
    pytest.param(spatial("5"), f"expected an integer, got string '5' @ {PARTS}",
                 id="partitions-from-string"),
    pytest.param(spatial({"n": 2}), f"expected an integer, got object @ {PARTS}",
                 id="partitions-from-object"),
    pytest.param({**CLASS, "defaultComputeMode": 1}, "expected one of 'Shared', 'Exclusive', "
                 "got integer 1 @ $.defaultComputeMode", id="literal-from-int"),
    pytest.param({**CLASS, "defaultComputeMode": ["Shared"]}, "got array @ "
                 "$.defaultComputeMode", id="literal-from-array"),
    pytest.param({**spatial(1), "sharing": "SpacePartitioning"}, "expected an object, got "
                 "string 'SpacePartitioning' @ $.sharing", id="object-from-string"),
    pytest.param({**spatial(1), "sharing": [{"strategy": "TimeSlicing"}]}, "expected an "
                 "object, got array @ $.sharing", id="object-from-array"),
    pytest.param({**spatial(1), "sharing": {"strategy": "TimeSlicing", "timeSlicing": {
        "interval": False}}}, "got boolean false @ $.sharing.timeSlicing.interval",
                 id="nested-literal-from-bool"),
    pytest.param({**spatial(1), "apiVersion": 1}, "$.apiVersion: unsupported 1",
                 id="api-version-from-int"),
]


@pytest.mark.parametrize("params,message", COERCED)
def test_values_of_another_json_type_are_refused(tmp_path: Path, params: dict[str, Any],
                                                 message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make(tmp_path).dra_decode_config(params)
    assert message in str(err.value)


@pytest.mark.parametrize("params,expected", [
    pytest.param({**CLASS, "timeSliceMillis": 10_000}, GpuClassConfig(
        api_version="gpu.example.com/v1", kind="GpuClassConfig", time_slice_millis=10_000),
                 id="class-config"),
    pytest.param(spatial(8), GpuConfig(api_version="gpu.example.com/v1", kind="GpuConfig",
                                       sharing=Sharing(strategy="SpacePartitioning",
                                                       space_partitioning=SpacePartitioning(8))),
                 id="claim-config"),
    pytest.param({**spatial(1), "sharing": None}, GpuConfig(
        api_version="gpu.example.com/v1", kind="GpuConfig"), id="null-optional"),
])
def test_valid_config_is_accepted(tmp_path: Path, params: dict[str, Any], expected: Any) -> None:
    assert make(tmp_path).dra_decode_config(params) == expected


LONG = "... (10000000 characters)"


@pytest.mark.parametrize("params,where,cut", [
    pytest.param({**CLASS, "apiVersion": "v" * 10_000_000}, "$.apiVersion", LONG,
                 id="api-version"),
    pytest.param({**CLASS, "kind": "k" * 10_000_000}, "$.kind", LONG, id="kind"),
    pytest.param({**CLASS, "defaultComputeMode": "m" * 10_000_000}, "$.defaultComputeMode",
                 LONG, id="literal"),
    pytest.param({**CLASS, "timeSliceMillis": "1" * 10_000_000}, SLICE, LONG, id="mistyped"),
    pytest.param({**CLASS, "x" * 10_000_000: 1}, "extra fields found", LONG, id="unknown-key"),
    pytest.param({**CLASS, **{f"key{i}": i for i in range(100_000)}}, "extra fields found",
                 "and 99990 more", id="many-unknown-keys"),
])
def test_error_quotes_at_most_a_few_hundred_characters(
        tmp_path: Path, params: dict[str, Any], where: str, cut: str) -> None:
    with pytest.raises(ConfigError) as err:
        make(tmp_path).dra_decode_config(params)
    message = str(err.value)
    assert where in message and cut in message
    assert len(message) < 1000


def test_prepare_edits_and_unprepare(tmp_path: Path) -> None:
    b = make(tmp_path)
    cfg = GpuConfig(api_version="gpu.example.com/v1", kind="GpuConfig")
    out = b.dra_prepare_claim(claim=CLAIM, devices=[
        AllocatedDevice(request="gpu", pool="node-1", device="gpu-1", config=(cfg,))])
    (dev,) = out
    assert dev.edits.env == ("GPU_DEVICE_GPU_1=gpu-1",)
    assert dev.edits.device_nodes[0].path == "/dev/dra-example/gpu-1"
    assert (tmp_path / "prepared" / "gpu-1.json").exists()
    b.dra_unprepare_claim(claim=CLAIM, devices=out)
    assert not (tmp_path / "prepared" / "gpu-1.json").exists()
    b.dra_unprepare_claim(claim=CLAIM, devices=out)  # idempotent


def test_unprepare_leaves_other_claims_devices(tmp_path: Path) -> None:
    b = make(tmp_path)
    out = b.dra_prepare_claim(claim=CLAIM, devices=[
        AllocatedDevice(request="gpu", pool="node-1", device="gpu-0")])
    other = ClaimRef(namespace="default", name="o", uid="uid-2")
    b.dra_unprepare_claim(claim=other, devices=out)
    assert (tmp_path / "prepared" / "gpu-0.json").exists()


def test_unknown_device_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="node-1/gpu-99 does not exist"):
        make(tmp_path).dra_prepare_claim(claim=CLAIM, devices=[
            AllocatedDevice(request="gpu", pool="node-1", device="gpu-99")])


def test_health_follows_fault_files(tmp_path: Path) -> None:
    b = make(tmp_path, devices=2)
    (tmp_path / "unhealthy").mkdir()
    (tmp_path / "unhealthy" / "gpu-1").touch()
    health = {h.device: h.health.name for h in b.dra_device_health() or []}
    assert health == {"gpu-0": "HEALTHY", "gpu-1": "UNHEALTHY"}


def test_loaded_through_entry_point(tmp_path: Path) -> None:
    backend = Backend.load("example")
    backend.setup(BackendSettings(backend="example", node_name="node-1",
                                  state_dir=str(tmp_path), options={"devices": 2}))
    assert backend.info.cdi_kind == "k8s.gpu.example.com/gpu"
    assert backend.accepts_config and backend.serves_health
    assert len(backend.inventory()) == 2


def test_a_huge_config_value_is_not_echoed_to_the_kubelet() -> None:
    """Through the socket: a 10 MB string in a config is refused with a short error, and the
    claims beside it are answered as usual."""
    huge = {**CLASS, "defaultComputeMode": "x" * 10_000_000}
    with tempfile.TemporaryDirectory(prefix="dra-ex-", dir="/tmp") as root, PluginHarness(
            root=Path(root), publish=False) as node:
        conn = node.connect()
        bad = node.add_claim(allocated_claim(name="huge", results=[Result("gpu", "gpu-0")],
                                             configs=[Config(huge)]))
        good = node.add_claim(allocated_claim(name="fine", results=[Result("gpu", "gpu-1")],
                                              configs=[Config(spatial(2))]))
        answers = conn.prepare([bad, good])
        assert "@ $.defaultComputeMode" in answers[bad.uid].error
        assert "... (10000000 characters)" in answers[bad.uid].error
        assert len(answers[bad.uid].error) < 1000
        assert answers[good.uid].error == ""
        assert conn.unprepare([bad, good]) == {bad.uid: "", good.uid: ""}
