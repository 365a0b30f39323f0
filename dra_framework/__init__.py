"""dra-framework: write a Kubernetes DRA driver as a small pluggy backend.

The public face is deliberately small: ``hookimpl`` to mark backend hook implementations, the
models a backend receives and returns, and the errors it raises.  Everything else (kubelet
servers, checkpoint, CDI, API access) is internal.
"""

from __future__ import annotations

from .errors import BackendError, ConfigError
from .hookspecs import hookimpl
from .models import (
    AllocatedDevice,
    BackendSettings,
    ClaimRef,
    Condition,
    ContainerEdits,
    CounterConsumption,
    CounterSet,
    Device,
    DeviceHealth,
    DeviceNode,
    DeviceStatus,
    DeviceTaint,
    DriverInfo,
    HealthStatus,
    Hook,
    Mount,
    NetworkDeviceData,
    Pool,
    PreparedDevice,
    Version,
)

__all__ = [
    "AllocatedDevice",
    "BackendError",
    "BackendSettings",
    "ClaimRef",
    "Condition",
    "ConfigError",
    "ContainerEdits",
    "CounterConsumption",
    "CounterSet",
    "Device",
    "DeviceHealth",
    "DeviceNode",
    "DeviceStatus",
    "DeviceTaint",
    "DriverInfo",
    "HealthStatus",
    "Hook",
    "Mount",
    "NetworkDeviceData",
    "Pool",
    "PreparedDevice",
    "Version",
    "hookimpl",
]
