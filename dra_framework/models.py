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
from collections.abc import Mapping
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
    """

    driver_name: str
    cdi_vendor: str = ""
    cdi_class: str = "claim"

    @property
    def cdi_kind(self) -> str:
        return f"{self.cdi_vendor or 'k8s.' + self.driver_name}/{self.cdi_class}"


@attrs.frozen
class Device:
    """One device of the node-local pool, as it will appear in a ResourceSlice.

    ``attributes`` keys are qualified names (``id`` or ``domain/id``); ``capacity`` values are
    Kubernetes quantities (``"80Gi"``, ``"4"``).
    """

    name: str
    attributes: Mapping[str, AttributeValue] = attrs.field(factory=dict)
    capacity: Mapping[str, str] = attrs.field(factory=dict)


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


@attrs.frozen
class BackendSettings:
    """What the framework tells a backend once, in ``dra_setup``.

    ``options`` come from the ``serve`` command line (``--backend-option NAME.KEY=VALUE``), the
    environment and the config file, as strings or YAML values; ``state_dir`` is a directory the
    backend may use for its own files; it survives restarts of the plugin.
    """

    backend: str
    node_name: str
    state_dir: str
    options: Mapping[str, Any] = attrs.field(factory=dict)
