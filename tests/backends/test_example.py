"""The reference backend ``example``: options, inventory, config decoding, prepare/unprepare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dra_framework import AllocatedDevice, BackendSettings, ClaimRef, ConfigError, Version
from dra_framework.backends.example import ExampleBackend, GpuClassConfig, GpuConfig
from dra_framework.errors import BackendError
from dra_framework.loader import Backend

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


@pytest.mark.parametrize("options,field", [
    pytest.param({"devices": "many"}, "$.devices", id="not-a-number"),
    pytest.param({"devices": "-1"}, "devices must be between", id="out-of-range"),
    pytest.param({"colour": "red"}, "colour", id="unknown-option"),
])
def test_bad_options(tmp_path: Path, options: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError, match="options of backend example") as err:
        make(tmp_path, **options)
    assert field in str(err.value)


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
