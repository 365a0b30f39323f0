"""The backend contract: every hook a backend may implement, with its rules.

A backend is a class named by an entry point in the group ``dra_framework.backends``.  The
framework instantiates it with no arguments and registers the instance with a pluggy
``PluginManager`` of its own, so every backend served by a process has its own hooks and state.
Implementations are methods decorated with ``dra_framework.hookimpl``; callers always pass keyword
arguments, so an implementation may accept any subset of a hook's parameters.

Order of calls over the life of a plugin process:

1. ``dra_setup`` once, first.
2. ``dra_driver_info`` once, right after ``dra_setup``.
3. ``dra_inventory`` and ``dra_counter_sets`` whenever ``serve`` publishes this node's devices
   (at start, on ``inventory_changed``, at every resync); ``dra_cluster_pools`` likewise in
   ``dra-framework controller``.
4. ``dra_decode_config`` for each opaque config entry of a claim, before ``dra_prepare_claim``.
5. ``dra_prepare_claim`` / ``dra_unprepare_claim`` for claims, serialized per driver across
   processes (never two at once for one driver on a node).
6. ``dra_device_health`` periodically, when the backend implements it.
7. ``dra_shutdown`` once, last, on SIGTERM/SIGINT.

Exceptions: ``ConfigError`` for bad user input, ``BackendError`` for hardware failures; any other
exception is wrapped in ``BackendError``.  Either way it becomes that claim's error only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pluggy

from .models import (
    AllocatedDevice,
    BackendSettings,
    ClaimRef,
    CounterSet,
    Device,
    DeviceHealth,
    DriverInfo,
    Pool,
    PreparedDevice,
)

PROJECT = "dra_framework"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def dra_setup(settings: BackendSettings) -> None:
    """Configure the backend.  Called once, before any other hook.

    ``settings.options`` holds the backend's options (strings or YAML values as given by the
    operator); validate them here and raise ``ConfigError`` naming the option on bad input,
    which stops the plugin with that message.  Open hardware handles here, not at import time.
    """


@hookspec(firstresult=True)
def dra_driver_info() -> DriverInfo:
    """Return the driver name and CDI vendor/class.  Required; called once after ``dra_setup``.

    It must also answer before ``dra_setup`` (with the default driver name, without touching
    hardware): ``dra-framework backends`` lists installed backends that way.

    The driver name is a DNS subdomain of at most 63 characters (``gpu.example.com``).  It is the
    ``spec.driver`` of the backend's ResourceSlices and names its kubelet sockets.
    """


@hookspec(firstresult=True)
def dra_inventory() -> Sequence[Device]:
    """Return every device of this node's pool, in a stable order.

    Called when devices are published and at every resync; it must be cheap enough to call
    every few seconds and must not change its answer unless the hardware changed.
    """


@hookspec(firstresult=True)
def dra_counter_sets() -> Sequence[CounterSet]:
    """Return the shared counter sets of this node's pool (partitionable devices).

    Optional.  Devices of ``dra_inventory`` name these sets in ``consumes_counters``; the
    publisher puts counter sets in slices of their own, as Kubernetes 1.35+ requires.
    """


@hookspec(firstresult=True)
def dra_cluster_pools() -> Sequence[Pool]:
    """Return pools that are not tied to one node (for example license seats).

    Optional.  Called by ``dra-framework controller``, never by ``serve``: one leader-elected
    replica publishes these pools with ``nodeSelector``, ``allNodes`` or per-device node
    selection.  Pool names must be unique per driver and must not be node names.
    """


@hookspec(firstresult=True)
def dra_decode_config(parameters: Mapping[str, Any]) -> Any:
    """Decode and validate one opaque config entry for this driver.

    ``parameters`` is the ``opaque.parameters`` JSON object of a DeviceClass or claim config
    entry.  Return a typed model (an attrs instance).  Raise ``ConfigError`` whose message names
    the offending field on bad input: unknown keys, wrong types, out-of-range values.  The
    decoded values reach ``dra_prepare_claim`` in ``AllocatedDevice.config``, class entries
    before claim entries.  Required when the backend accepts opaque config; without an
    implementation, any opaque config for this driver is refused.
    """


@hookspec(firstresult=True)
def dra_prepare_claim(
    claim: ClaimRef, devices: Sequence[AllocatedDevice]
) -> Sequence[PreparedDevice]:
    """Prepare this driver's devices of one claim and return one ``PreparedDevice`` per device.

    Called at most once per successful prepare of a claim: a claim already prepared is answered
    from the checkpoint without calling the backend.  ``devices`` holds only this driver's
    allocation results.  Return the CDI container edits each device needs (the framework writes
    the claim's CDI spec and answers the kubelet) and, in ``state``, whatever
    ``dra_unprepare_claim`` will need.  If it raises, the framework calls
    ``dra_unprepare_claim`` for the same devices to undo partial work.  Required.

    The claims of one kubelet call are prepared one after another, or at once in threads of
    their own when ``DriverInfo.concurrent_prepare`` is set; two claims holding the same exclusive
    device are never prepared at once.
    """


@hookspec
def dra_unprepare_claim(claim: ClaimRef, devices: Sequence[PreparedDevice]) -> None:
    """Undo ``dra_prepare_claim`` for one claim.  Must be idempotent.

    ``devices`` are the ``PreparedDevice`` values the backend returned; after a crash or a
    failure during prepare, they carry only ``pool`` and ``device`` (empty edits and state) for
    every allocated device, some of which may never have been prepared.  When the framework's
    record of the claim was found corrupt, they are the claim's exclusively held devices (devices
    shared through a share ID or admin access are not known then), and the claim's namespace and
    name may be empty.  The claim may already be deleted from the API.  Raising leaves the claim
    recorded, and the roll-back or the kubelet's retry calls again.
    """


@hookspec(firstresult=True)
def dra_device_health() -> Sequence[DeviceHealth] | None:
    """Return the current health of every device, or ``None`` when health is not known.

    Optional: the plugin serves ``v1alpha1.DRAResourceHealth`` only when the backend implements
    it and its first answer, right after ``dra_setup``, is not ``None``.  Then it is called about
    once a second; it must not block.
    """


@hookspec
def dra_shutdown() -> None:
    """Release hardware handles.  Called once on shutdown, after the sockets are closed."""
