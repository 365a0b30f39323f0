"""Backend-facing data models.

This module owns the typed vocabulary that flows between the framework and a backend:

* what a backend *publishes* (``Device`` with attributes and capacity, ``DriverInfo``),
* what the framework *hands* a backend at prepare time (``ClaimRef``, ``AllocatedDevice``),
* what a backend *returns* (``PreparedDevice`` with CDI ``ContainerEdits`` and optional
  ``DeviceStatus``), and what it reports for health (``DeviceHealth``).

Everything is an immutable attrs class with snake_case fields.  The JSON forms (camelCase, as
Kubernetes and CDI spell them) are produced by the single converter in ``dra_framework.convert``;
nothing here knows about JSON, gRPC or the Kubernetes client, so backends can be unit-tested with
plain objects.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

import attrs


@attrs.frozen
class Version:
    """A semantic-version attribute value (``version`` in a ResourceSlice attribute)."""

    value: str


AttributeValue = bool | int | str | Version
"""One ResourceSlice device attribute: ``bool``, ``int``, ``str`` or :class:`Version`."""


@attrs.frozen
class DriverInfo:
    """Identity of a driver: its name and the CDI kind its per-claim specs use.

    ``cdi_vendor`` defaults to ``k8s.<driver_name>`` and ``cdi_class`` to ``claim``, the
    convention of the reference drivers; a CDI ID is then ``<vendor>/<class>=<name>``.

    ``concurrent_prepare`` lets the framework run ``dra_prepare_claim`` for the claims of one
    call at once, each in its own thread (never two claims holding the same exclusive device).
    Off by default: turn it on when the backend's prepare is safe to run concurrently and slow
    enough for it to matter (programming an FPGA region, creating a VF).
    """

    driver_name: str
    cdi_vendor: str = ""
    cdi_class: str = "claim"
    concurrent_prepare: bool = False

    @property
    def cdi_kind(self) -> str:
        return f"{self.cdi_vendor or 'k8s.' + self.driver_name}/{self.cdi_class}"


@attrs.frozen
class DeviceTaint:
    """A taint on a device (``NoSchedule``, ``NoExecute`` or, from 1.35, ``None``)."""

    key: str
    effect: str
    value: str = ""
    time_added: str = ""


@attrs.frozen
class CounterSet:
    """Shared counters of a pool (``sharedCounters``): counter name → quantity."""

    name: str
    counters: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class CounterConsumption:
    """What a device takes from a counter set (``consumesCounters``): name → quantity."""

    counter_set: str
    counters: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Device:
    """One device of a pool, as it will appear in a ResourceSlice.

    ``attributes`` keys are qualified names (``id`` or ``domain/id``); ``capacity`` values are
    Kubernetes quantities (``"80Gi"``, ``"4"``).  ``consumes_counters`` and ``taints`` need
    the partitionable-devices and device-taints features of the cluster.  ``node_name``,
    ``node_selector`` (a core ``NodeSelector`` as JSON) and ``all_nodes`` are only for pools
    with ``per_device_node_selection``; exactly one of them is then set.
    """

    name: str
    attributes: Mapping[str, AttributeValue] = attrs.field(factory=dict)
    capacity: Mapping[str, str] = attrs.field(factory=dict)
    consumes_counters: tuple[CounterConsumption, ...] = ()
    taints: tuple[DeviceTaint, ...] = ()
    node_name: str | None = None
    node_selector: Mapping[str, Any] | None = None
    all_nodes: bool | None = None


@attrs.frozen
class Pool:
    """A pool that is not tied to one node, published by ``dra-framework controller``.

    Exactly one of ``node_selector`` (a core ``NodeSelector`` as JSON), ``all_nodes`` and
    ``per_device_node_selection`` says where its devices can be used.
    """

    name: str
    devices: tuple[Device, ...] = ()
    shared_counters: tuple[CounterSet, ...] = ()
    node_selector: Mapping[str, Any] | None = None
    all_nodes: bool = False
    per_device_node_selection: bool = False


@attrs.frozen
class ClaimRef:
    """The identity of a ResourceClaim as the kubelet names it."""

    namespace: str
    name: str
    uid: str


@attrs.frozen
class AllocatedDevice:
    """One allocation result of a claim for this driver, with its effective opaque config.

    ``request`` is the full request name (``req`` or ``req/sub``).  ``config`` is what the
    backend's ``dra_decode_config`` returned for the opaque config entries that apply to this
    result, in order (class config first, then claim config); the backend decides how later
    entries override earlier ones.
    """

    request: str
    pool: str
    device: str
    admin_access: bool = False
    share_id: str | None = None
    config: tuple[Any, ...] = ()

    @property
    def base_request(self) -> str:
        """The request name without its subrequest part, as the kubelet wants it."""
        return self.request.split("/", 1)[0]


@attrs.frozen
class DeviceNode:
    """A CDI ``deviceNodes`` entry."""

    path: str
    host_path: str | None = None
    type: str | None = None
    major: int | None = None
    minor: int | None = None
    file_mode: int | None = None
    permissions: str | None = None
    uid: int | None = None
    gid: int | None = None


@attrs.frozen
class Mount:
    """A CDI ``mounts`` entry."""

    host_path: str
    container_path: str
    options: tuple[str, ...] = ()
    type: str | None = None


@attrs.frozen
class Hook:
    """A CDI ``hooks`` entry (an OCI hook)."""

    hook_name: str
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None


@attrs.frozen
class ContainerEdits:
    """The CDI container edits one device needs (``containerEdits`` of a CDI device)."""

    env: tuple[str, ...] = ()
    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()
    hooks: tuple[Hook, ...] = ()
    additional_gids: tuple[int, ...] = ()

    def is_empty(self) -> bool:
        return not (
            self.env or self.device_nodes or self.mounts or self.hooks or self.additional_gids
        )


@attrs.frozen
class Condition:
    """A Kubernetes condition, as written to ``status.devices[].conditions``."""

    type: str
    status: str
    reason: str
    message: str = ""
    last_transition_time: str = ""
    observed_generation: int | None = None


@attrs.frozen
class NetworkDeviceData:
    """``status.devices[].networkData``."""

    interface_name: str = ""
    ips: tuple[str, ...] = ()
    hardware_address: str = ""


@attrs.frozen
class DeviceStatus:
    """What a backend reports about one prepared device (``status.devices`` of the claim)."""

    conditions: tuple[Condition, ...] = ()
    data: Mapping[str, Any] | None = None
    network_data: NetworkDeviceData | None = None


@attrs.frozen
class PreparedDevice:
    """What a backend returns for one allocated device it prepared.

    ``edits`` become this device's entry in the claim's CDI spec; the framework names the CDI
    device and returns its ID to the kubelet.  ``state`` is backend-private, JSON-serialisable
    data that the framework persists and hands back at unprepare.  ``status`` is optional device
    status for the claim.
    """

    pool: str
    device: str
    edits: ContainerEdits = ContainerEdits()
    state: Mapping[str, Any] = attrs.field(factory=dict)
    status: DeviceStatus | None = None


class HealthStatus(enum.Enum):
    """Device health, as the kubelet's ``DRAResourceHealth`` service spells it."""

    UNKNOWN = 0
    HEALTHY = 1
    UNHEALTHY = 2


@attrs.frozen
class DeviceHealth:
    """The health of one device of this driver."""

    pool: str
    device: str
    health: HealthStatus
    message: str = ""
    timeout_seconds: int = 0


def _nothing() -> None:
    return None


@attrs.frozen
class BackendSettings:
    """What the framework tells a backend once, in ``dra_setup``.

    ``options`` come from the ``serve`` command line (``--backend-option NAME.KEY=VALUE``), the
    environment and the config file, as strings or YAML values; ``state_dir`` is a directory the
    backend may use for its own files; it survives restarts of the plugin.  Call
    ``inventory_changed()`` (from any thread) when devices appear, vanish or change: the
    framework then publishes the new inventory without waiting for the next periodic resync.
    """

    backend: str
    node_name: str
    state_dir: str
    options: Mapping[str, Any] = attrs.field(factory=dict)
    inventory_changed: Callable[[], None] = attrs.field(default=_nothing, eq=False)
