"""The backends the property suite runs, described for ``strategies``: valid opaque configs and
their typed leaves, for the ``example`` backend and for ``nvidia-gpu`` on fake NVML."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from .strategies import BackendShape, Leaf


def _optional(draw: st.DrawFn, out: dict[str, Any], key: str,
              values: st.SearchStrategy[Any]) -> None:
    if draw(st.booleans()):
        out[key] = draw(values)


EXAMPLE_DRIVER = "gpu.example.com"
_INTERVALS = st.sampled_from(["Default", "Short", "Medium", "Long"])


@st.composite
def _example_config(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": f"{EXAMPLE_DRIVER}/v1"}
    if draw(st.booleans()):
        out["kind"] = "GpuClassConfig"
        _optional(draw, out, "defaultComputeMode", st.sampled_from(["Shared", "Exclusive"]))
        _optional(draw, out, "timeSliceMillis", st.integers(min_value=0, max_value=10_000))
        return out
    out["kind"] = "GpuConfig"
    strategy = draw(st.sampled_from([None, "TimeSlicing", "SpacePartitioning"]))
    if strategy == "TimeSlicing":
        sharing: dict[str, Any] = {"strategy": strategy}
        if draw(st.booleans()):
            sharing["timeSlicing"] = {}
            _optional(draw, sharing["timeSlicing"], "interval", _INTERVALS)
        out["sharing"] = sharing
    elif strategy == "SpacePartitioning":
        sharing = {"strategy": strategy}
        if draw(st.booleans()):
            sharing["spacePartitioning"] = {}
            _optional(draw, sharing["spacePartitioning"], "partitionCount",
                      st.integers(min_value=1, max_value=8))
        out["sharing"] = sharing
    return out


EXAMPLE = BackendShape(
    backend="example",
    driver=EXAMPLE_DRIVER,
    devices=tuple(f"gpu-{i}" for i in range(8)),
    configs=_example_config,
    leaves=(
        Leaf(("apiVersion",), "str"),
        Leaf(("kind",), "str"),
        Leaf(("defaultComputeMode",), "str"),
        Leaf(("timeSliceMillis",), "int"),
        Leaf(("sharing", "strategy"), "str"),
        Leaf(("sharing", "timeSlicing", "interval"), "str"),
        Leaf(("sharing", "spacePartitioning", "partitionCount"), "int"),
    ),
)


NVIDIA_DRIVER = "gpu.nvidia.dra-framework.io"
_QUANTITIES = st.sampled_from(["1Mi", "512Mi", "10Gi", "1.5Gi", "2G", "1048576"])


@st.composite
def _mps(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _optional(draw, out, "defaultActiveThreadPercentage",
              st.none() | st.integers(min_value=1, max_value=100))
    _optional(draw, out, "defaultPinnedDeviceMemoryLimit", st.none() | _QUANTITIES)
    _optional(draw, out, "perDevicePinnedMemoryLimit",
              st.dictionaries(st.just("0"), _QUANTITIES, max_size=1))
    return out


@st.composite
def _nvidia_config(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["GpuConfig", "MigDeviceConfig"]))
    out: dict[str, Any] = {"apiVersion": f"{NVIDIA_DRIVER}/v1", "kind": kind}
    strategies = [None, "MPS"] + (["TimeSlicing"] if kind == "GpuConfig" else [])
    strategy = draw(st.sampled_from(strategies))
    if strategy == "TimeSlicing":
        sharing: dict[str, Any] = {"strategy": strategy}
        if draw(st.booleans()):
            sharing["timeSlicing"] = {}
            _optional(draw, sharing["timeSlicing"], "interval", _INTERVALS)
        out["sharing"] = sharing
    elif strategy == "MPS":
        sharing = {"strategy": strategy}
        _optional(draw, sharing, "mps", _mps())
        out["sharing"] = sharing
    return out


NVIDIA = BackendShape(
    backend="nvidia-gpu",
    driver=NVIDIA_DRIVER,
    devices=tuple(f"gpu-{i}" for i in range(8)),
    configs=_nvidia_config,
    leaves=(
        Leaf(("apiVersion",), "str"),
        Leaf(("kind",), "str"),
        Leaf(("sharing", "strategy"), "str"),
        Leaf(("sharing", "timeSlicing", "interval"), "str"),
        Leaf(("sharing", "mps", "defaultActiveThreadPercentage"), "int", nullable=True),
        Leaf(("sharing", "mps", "defaultPinnedDeviceMemoryLimit"), "str", nullable=True),
        Leaf(("sharing", "mps", "perDevicePinnedMemoryLimit", "0"), "str"),
    ),
    # fake NVML with eight GPUs, so that several claims of one batch each get their own
    options={"nvml": "fake-8", "health": "false"},
)
