"""Decoding the opaque GpuConfig / MigDeviceConfig."""

from __future__ import annotations

from typing import Any

import pytest
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
    pytest.param(gpu(sharing=mps(defaultActiveThreadPercentage="50")),
                 "$.sharing.mps.defaultActiveThreadPercentage: must be an integer",
                 id="pct-string"),
    pytest.param(gpu(sharing=mps(defaultActiveThreadPercentage=True)),
                 "$.sharing.mps.defaultActiveThreadPercentage: must be an integer",
                 id="pct-bool"),
    pytest.param(gpu(sharing=mps(defaultPinnedDeviceMemoryLimit="10 GB")),
                 "$.sharing.mps.defaultPinnedDeviceMemoryLimit: '10 GB' is not a quantity",
                 id="limit-syntax"),
    pytest.param(gpu(sharing=mps(defaultPinnedDeviceMemoryLimit=1024)),
                 "$.sharing.mps.defaultPinnedDeviceMemoryLimit: must be a quantity string",
                 id="limit-number"),
    pytest.param(gpu(sharing=mps(defaultPinnedDeviceMemoryLimit="512Ki")),
                 "$.sharing.mps.defaultPinnedDeviceMemoryLimit: '512Ki' is less than 1Mi",
                 id="limit-small"),
    pytest.param(gpu(sharing=mps(perDevicePinnedMemoryLimit={"gpu0": "1Gi"})),
                 "$.sharing.mps.perDevicePinnedMemoryLimit['gpu0']: key must be a device UUID",
                 id="per-device-key"),
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
