"""Decoding the opaque GpuConfig / MigDeviceConfig."""

from __future__ import annotations

from typing import Any

import pytest
from dra_nvidia_gpu.backend import NvidiaOptions
from dra_nvidia_gpu.config import (
    GpuConfig,
    MigDeviceConfig,
    MpsConfig,
    Sharing,
    TimeSlicingConfig,
    decode,
    effective,
    parse_quantity,
)

from dra_framework.convert import structure_options
from dra_framework.errors import ConfigError

DRIVER = "gpu.nvidia.com"
API = f"{DRIVER}/v1"


def gpu(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "GpuConfig", **fields}


def mig(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "MigDeviceConfig", **fields}


def mps(**fields: Any) -> dict[str, Any]:
    return {"strategy": "MPS", "mps": fields}


def test_decodes_time_slicing() -> None:
    config = decode(gpu(sharing={"strategy": "TimeSlicing", "timeSlicing": {"interval": "Long"}}),
                    driver=DRIVER)
    assert config == GpuConfig(api_version=API, kind="GpuConfig", sharing=Sharing(
        strategy="TimeSlicing", time_slicing=TimeSlicingConfig(interval="Long")))
    assert config.sharing is not None and config.sharing.interval == "Long"


def test_decodes_mps() -> None:
    config = decode(mig(sharing=mps(defaultActiveThreadPercentage=50,
                                    defaultPinnedDeviceMemoryLimit="10Gi",
                                    perDevicePinnedMemoryLimit={"0": "5Gi", "MIG-ab-12": "1Gi"})),
                    driver=DRIVER)
    assert config == MigDeviceConfig(api_version=API, kind="MigDeviceConfig", sharing=Sharing(
        strategy="MPS", mps=MpsConfig(
            default_active_thread_percentage=50, default_pinned_device_memory_limit="10Gi",
            per_device_pinned_memory_limit={"0": "5Gi", "MIG-ab-12": "1Gi"})))


def test_no_sharing_and_default_interval() -> None:
    assert decode(gpu(), driver=DRIVER) == GpuConfig(api_version=API, kind="GpuConfig")
    config = decode(gpu(sharing={"strategy": "TimeSlicing"}), driver=DRIVER)
    assert config.sharing is not None and config.sharing.interval == "Default"


BAD = [
    pytest.param("not a mapping", "$: must be an object", id="not-object"),
    pytest.param({"apiVersion": API, "kind": "Other"}, "$.kind: unknown kind", id="kind"),
    pytest.param({**gpu(), "apiVersion": "x/v2"}, "$.apiVersion: unsupported 'x/v2'",
                 id="api-version"),
    pytest.param(gpu(shareing={}), "extra fields found (shareing) @ $", id="unknown-key"),
    pytest.param(gpu(sharing={"strategy": "Spatial"}), "@ $.sharing.strategy", id="strategy"),
    pytest.param(gpu(sharing={}), "@ $.sharing.strategy", id="strategy-missing"),
    pytest.param(gpu(sharing={"strategy": "TimeSlicing", "timeSlicing": {"interval": "Fast"}}),
                 "@ $.sharing.timeSlicing.interval", id="interval"),
    pytest.param(gpu(sharing=mps(defaultActiveThreadPercentage=0)),
                 "$.sharing.mps.defaultActiveThreadPercentage: must be between 1 and 100",
                 id="pct-low"),
    pytest.param(gpu(sharing=mps(defaultActiveThreadPercentage=101)),
                 "$.sharing.mps.defaultActiveThreadPercentage: must be between 1 and 100",
                 id="pct-high"),
    pytest.param(gpu(sharing=mps(defaultPinnedDeviceMemoryLimit="10 GB")),
                 "$.sharing.mps.defaultPinnedDeviceMemoryLimit: '10 GB' is not a quantity",
                 id="limit-syntax"),
    pytest.param(gpu(sharing=mps(defaultPinnedDeviceMemoryLimit="512Ki")),
                 "$.sharing.mps.defaultPinnedDeviceMemoryLimit: '512Ki' is less than 1Mi",
                 id="limit-small"),
    pytest.param(gpu(sharing=mps(perDevicePinnedMemoryLimit={"gpu0": "1Gi"})),
                 "$.sharing.mps.perDevicePinnedMemoryLimit['gpu0']: key must be a device UUID",
                 id="per-device-key"),
    pytest.param(gpu(sharing=mps(perDevicePinnedMemoryLimit={"GPU-ab\n": "1Gi"})),
                 "perDevicePinnedMemoryLimit['GPU-ab\\n']: key must be a device UUID",
                 id="per-device-key-newline"),
    pytest.param(gpu(sharing=mps(perDevicePinnedMemoryLimit={"10000": "1Gi"})),
                 "perDevicePinnedMemoryLimit['10000']: key must be a device UUID",
                 id="per-device-index-too-long"),
    pytest.param(gpu(sharing=mps(perDevicePinnedMemoryLimit={"0": "lots"})),
                 "$.sharing.mps.perDevicePinnedMemoryLimit['0']: 'lots' is not a quantity",
                 id="per-device-value"),
    pytest.param(gpu(sharing=mps(unknownKnob=1)), "extra fields found (unknownKnob) @ "
                 "$.sharing.mps", id="mps-unknown-key"),
    pytest.param(gpu(sharing={"strategy": "TimeSlicing", "mps": {}}),
                 "$.sharing.mps: only allowed with strategy MPS", id="mps-with-slicing"),
    pytest.param(gpu(sharing={"strategy": "MPS", "timeSlicing": {}}),
                 "$.sharing.timeSlicing: only allowed with strategy TimeSlicing",
                 id="slicing-with-mps"),
    pytest.param(mig(sharing={"strategy": "TimeSlicing"}),
                 "$.sharing.strategy: TimeSlicing is not supported on MIG devices",
                 id="mig-time-slicing"),
]


@pytest.mark.parametrize(("parameters", "message"), BAD)
def test_bad_config_names_the_field(parameters: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        decode(parameters, driver=DRIVER)
    assert message in str(info.value)


PCT = "$.sharing.mps.defaultActiveThreadPercentage"
LIMIT = "$.sharing.mps.defaultPinnedDeviceMemoryLimit"

COERCED = [
    pytest.param(gpu(sharing=mps(defaultActiveThreadPercentage="50")),
                 f"expected an integer, got string '50' @ {PCT}", id="int-from-string"),
    pytest.param(gpu(sharing=mps(defaultActiveThreadPercentage=True)),
                 f"expected an integer, got boolean true @ {PCT}", id="int-from-bool"),
    pytest.param(gpu(sharing=mps(defaultActiveThreadPercentage=50.0)),
                 f"expected an integer, got number 50.0 @ {PCT}", id="int-from-whole-float"),
    pytest.param(gpu(sharing=mps(defaultActiveThreadPercentage=12.5)),
                 f"expected an integer, got number 12.5 @ {PCT}", id="int-from-float"),
    pytest.param(gpu(sharing=mps(defaultActiveThreadPercentage=[50])),
                 f"expected an integer, got array @ {PCT}", id="int-from-array"),
    pytest.param(gpu(sharing=mps(defaultPinnedDeviceMemoryLimit=1024)),
                 f"expected a string, got integer 1024 @ {LIMIT}", id="str-from-int"),
    pytest.param(gpu(sharing=mps(defaultPinnedDeviceMemoryLimit=False)),
                 f"expected a string, got boolean false @ {LIMIT}", id="str-from-bool"),
    pytest.param(gpu(sharing=mps(defaultPinnedDeviceMemoryLimit={"size": "1Gi"})),
                 f"expected a string, got object @ {LIMIT}", id="str-from-object"),
    pytest.param(gpu(sharing=mps(perDevicePinnedMemoryLimit={"0": 5})),
                 "expected a string, got integer 5 @ $.sharing.mps.perDevicePinnedMemoryLimit['0']",
                 id="map-value-from-int"),
    pytest.param(gpu(sharing=mps(perDevicePinnedMemoryLimit=[["0", "1Gi"]])),
                 "expected an object, got array @ $.sharing.mps.perDevicePinnedMemoryLimit",
                 id="map-from-array"),
    pytest.param(gpu(sharing=mps(perDevicePinnedMemoryLimit="0=1Gi")),
                 "expected an object, got string '0=1Gi' @ "
                 "$.sharing.mps.perDevicePinnedMemoryLimit",
                 id="map-from-string"),
    pytest.param(gpu(sharing={"strategy": True}),
                 "expected one of 'TimeSlicing', 'MPS', got boolean true @ $.sharing.strategy",
                 id="literal-from-bool"),
    pytest.param(gpu(sharing={"strategy": "TimeSlicing", "timeSlicing": {"interval": 0}}),
                 "got integer 0 @ $.sharing.timeSlicing.interval", id="literal-from-int"),
    pytest.param(gpu(sharing="MPS"), "expected an object, got string 'MPS' @ $.sharing",
                 id="object-from-string"),
    pytest.param(gpu(sharing={"strategy": "TimeSlicing", "timeSlicing": []}),
                 "expected an object, got array @ $.sharing.timeSlicing", id="object-from-array"),
    pytest.param(mig(sharing=mps(defaultActiveThreadPercentage="1e2")),
                 f"invalid MigDeviceConfig: expected an integer, got string '1e2' @ {PCT}",
                 id="mig-int-from-string"),
]


@pytest.mark.parametrize(("parameters", "message"), COERCED)
def test_values_of_another_json_type_are_refused(parameters: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        decode(parameters, driver=DRIVER)
    assert message in str(info.value)


def test_every_json_type_accepted_where_it_belongs() -> None:
    config = decode(gpu(sharing=mps(defaultActiveThreadPercentage=100,
                                    defaultPinnedDeviceMemoryLimit="1Mi",
                                    perDevicePinnedMemoryLimit={})), driver=DRIVER)
    assert config.sharing is not None and config.sharing.mps == MpsConfig(
        default_active_thread_percentage=100, default_pinned_device_memory_limit="1Mi",
        per_device_pinned_memory_limit={})
    assert decode(gpu(sharing=None), driver=DRIVER).sharing is None


HUGE = "9" * 1_000_000

ECHOED = [
    pytest.param({"apiVersion": "v" * 1_000_000, "kind": "GpuConfig"}, "$.apiVersion",
                 id="api-version"),
    pytest.param({"apiVersion": API, "kind": "K" * 1_000_000}, "$.kind", id="kind"),
    pytest.param(gpu(sharing={"strategy": "S" * 1_000_000}), "$.sharing.strategy",
                 id="literal"),
    pytest.param(gpu(**{"x" * 1_000_000: 1}), "extra fields found", id="unknown-key"),
    pytest.param(gpu(sharing=mps(defaultPinnedDeviceMemoryLimit="x" + HUGE)), LIMIT,
                 id="quantity-syntax"),
    pytest.param(gpu(sharing=mps(defaultPinnedDeviceMemoryLimit=HUGE)),
                 f"{LIMIT}: '999", id="quantity-digits"),
    pytest.param(gpu(sharing=mps(perDevicePinnedMemoryLimit={"GPU-" + HUGE: "1Gi"})),
                 "key must be a device UUID", id="per-device-key"),
    pytest.param(gpu(sharing=mps(perDevicePinnedMemoryLimit={"0": 10**400})),
                 "expected a string, got an integer of 1329 bits", id="huge-integer"),
]


@pytest.mark.parametrize(("parameters", "message"), ECHOED)
def test_huge_values_are_not_echoed_whole(parameters: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        decode(parameters, driver=DRIVER)
    assert message in str(info.value)
    assert len(str(info.value)) < 1000


def test_quantities_beyond_int64_are_refused() -> None:
    for too_large in ("8Ei", "9223372036854775808", "100Ei"):
        with pytest.raises(ConfigError, match="is 8Ei or more, more than a quantity can be"):
            decode(gpu(sharing=mps(defaultPinnedDeviceMemoryLimit=too_large)), driver=DRIVER)
    assert decode(gpu(sharing=mps(defaultPinnedDeviceMemoryLimit="9223372036854775807")),
                  driver=DRIVER)
    assert decode(gpu(sharing=mps(defaultPinnedDeviceMemoryLimit="7Ei")), driver=DRIVER)


@pytest.mark.parametrize(("text", "size"), [
    ("1", 1), ("10Gi", 10 << 30), ("512Mi", 512 << 20), ("1.5Gi", 3 << 29), ("2G", 2 * 10**9),
    ("1k", 1000), ("1Ti", 1 << 40),
])
def test_parse_quantity(text: str, size: int) -> None:
    assert parse_quantity(text) == size


def test_effective_takes_the_last_config_of_the_device_kind() -> None:
    sliced = decode(gpu(sharing={"strategy": "TimeSlicing"}), driver=DRIVER)
    shared = decode(gpu(sharing=mps()), driver=DRIVER)
    mig_mps = decode(mig(sharing=mps()), driver=DRIVER)
    assert effective([sliced, shared], driver=DRIVER) is shared
    assert effective([shared, mig_mps, sliced], driver=DRIVER) is sliced
    assert effective([sliced, mig_mps, shared], driver=DRIVER, mig=True) is mig_mps
    assert effective([sliced], driver=DRIVER, mig=True) == MigDeviceConfig(
        api_version=API, kind="MigDeviceConfig")
    assert effective([], driver=DRIVER) == GpuConfig(api_version=API, kind="GpuConfig")


def nvidia_options(**options: Any) -> NvidiaOptions:
    return structure_options(options, NvidiaOptions, backend="nvidia-gpu")


@pytest.mark.parametrize(("options", "expected"), [
    pytest.param({"driver_name": "on"}, NvidiaOptions(driver_name="on"), id="string-stays-raw"),
    pytest.param({"driver_root": "1.10"}, NvidiaOptions(driver_root="1.10"), id="version-like"),
    pytest.param({"partitionable": "true", "create_mig": "yes"},
                 NvidiaOptions(partitionable=True, create_mig=True), id="yaml-booleans"),
    pytest.param({"health": False, "nvml": "fake-8"}, NvidiaOptions(health=False, nvml="fake-8"),
                 id="values-from-a-file"),
])
def test_options(options: dict[str, Any], expected: NvidiaOptions) -> None:
    assert nvidia_options(**options) == expected


@pytest.mark.parametrize(("options", "message"), [
    pytest.param({"health": "1"}, "expected a boolean, got integer 1 @ $.health",
                 id="bool-from-int"),
    pytest.param({"partitionable": "maybe"}, "expected a boolean, got string 'maybe' @ "
                 "$.partitionable", id="bool-from-word"),
    pytest.param({"driver_root": 1}, "expected a string, got integer 1 @ $.driver_root",
                 id="string-from-int"),
    pytest.param({"nvml": "on"}, "got string 'on' @ $.nvml", id="literal"),
])
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="options of backend nvidia-gpu") as info:
        nvidia_options(**options)
    assert message in str(info.value)
