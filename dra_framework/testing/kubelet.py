"""A kubelet, as far as a DRA kubelet plugin can tell: registration, Prepare/Unprepare, health.

Backend authors and the framework's tests drive a running plugin over its real unix sockets with
:class:`KubeletClient`, which does what docs/kubelet-grpc.md says the kubelet does: it scans the
registry directory (ignoring ``.`` names and non-sockets), calls ``GetInfo`` with a 1 s deadline,
checks ``type``, picks the service version by the kubelet's rule (:func:`pick_version`), rejects an
endpoint already registered for the driver, and answers ``NotifyRegistrationStatus`` (each one
sent is kept in ``notifications``).  The :class:`PluginConnection` it returns calls only the
chosen version's service, checks response maps as the kubelet does, and returns frozen attrs
results, so tests never touch protobuf; its health stream is ``v1alpha1``, opened whether or not
advertised, as a 1.34 kubelet with ``ResourceHealthStatus`` does.  Error strings follow the
kubelet's; a call that fails as a whole raises :class:`PluginRpcError`, so callers need no grpc.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, overload

import attrs
import grpc

from dra_framework.kubelet._proto.dra.v1 import api_pb2 as dra_v1_pb2
from dra_framework.kubelet._proto.dra.v1 import api_pb2_grpc as dra_v1_grpc
from dra_framework.kubelet._proto.dra.v1beta1 import api_pb2 as dra_v1beta1_pb2
from dra_framework.kubelet._proto.dra.v1beta1 import api_pb2_grpc as dra_v1beta1_grpc
from dra_framework.kubelet._proto.drahealth.v1alpha1 import api_pb2 as health_pb2
from dra_framework.kubelet._proto.drahealth.v1alpha1 import api_pb2_grpc as health_grpc
from dra_framework.kubelet._proto.pluginregistration.v1 import api_pb2 as registration_pb2
from dra_framework.kubelet._proto.pluginregistration.v1 import api_pb2_grpc as registration_grpc
from dra_framework.models import ClaimRef

__all__ = [
    "ClaimIdentity",
    "ClaimRef",
    "ClaimResult",
    "DeviceResult",
    "HealthReport",
    "KubeletClient",
    "KubeletClientError",
    "KubeletProtocolError",
    "PluginConnection",
    "PluginRpcError",
    "RegistrationError",
    "RegistrationNotice",
    "pick_version",
]

KUBELET_VERSIONS = ("v1.DRAPlugin", "v1beta1.DRAPlugin")
"""The ``DRAPlugin`` services a 1.34+ kubelet knows."""

PLUGIN_TYPE = "DRAPlugin"
GET_INFO_TIMEOUT = 1.0
NOTIFY_TIMEOUT = 5.0
CALL_TIMEOUT = 45.0
POLL_INTERVAL = 0.05

# Typed as Any: the generated grpc modules carry no annotations.
_DRA_STUBS: dict[str, tuple[Any, Any]] = {
    "v1.DRAPlugin": (dra_v1_pb2, dra_v1_grpc),
    "v1beta1.DRAPlugin": (dra_v1beta1_pb2, dra_v1beta1_grpc),
}
_HEALTH_STUB: Any = health_grpc.DRAResourceHealthStub
_REGISTRATION_STUB: Any = registration_grpc.RegistrationStub
_HEALTH_NAMES = {value.number: value.name for value in health_pb2.HealthStatus.DESCRIPTOR.values}


class KubeletClientError(Exception):
    """Base of the errors this client raises."""


class RegistrationError(KubeletClientError):
    """The kubelet did not register the plugin, or found none before the timeout."""


class KubeletProtocolError(KubeletClientError):
    """The plugin answered in a way the kubelet rejects (a skipped or unknown claim UID)."""


class PluginRpcError(KubeletClientError):
    """A call failed as a whole with a gRPC status (``code``: its name, e.g. ``"UNAVAILABLE"``)."""

    def __init__(self, *, method: str, code: str, details: str) -> None:
        super().__init__(f"{method}: rpc error: code = {code} desc = {details}")
        self.method, self.code, self.details = method, code, details


class ClaimIdentity(Protocol):
    """A claim as sent to the plugin: :class:`ClaimRef` or anything shaped like it."""

    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def uid(self) -> str: ...


@attrs.frozen
class RegistrationNotice:
    """One ``NotifyRegistrationStatus`` the client sent."""

    socket: Path
    driver_name: str
    plugin_registered: bool
    error: str


@attrs.frozen
class DeviceResult:
    """One prepared ``Device``; ``share_id`` is None when unset, and always on v1beta1."""

    request_names: tuple[str, ...]
    pool_name: str
    device_name: str
    cdi_device_ids: tuple[str, ...]
    share_id: str | None


@attrs.frozen
class ClaimResult:
    """One claim's prepare answer.  A non-empty ``error`` fails the claim; the kubelet then
    ignores ``devices``, which are kept here as sent."""

    error: str
    devices: tuple[DeviceResult, ...]


@attrs.frozen
class HealthReport:
    """One ``DeviceHealth`` as sent; ``health`` is the enum name, and a value the kubelet does not
    know reads as ``"UNKNOWN"``, as the kubelet treats it."""

    pool_name: str
    device_name: str
    health: str
    last_updated_time: int
    health_check_timeout_seconds: int
    message: str


def _go_list(values: Sequence[str]) -> str:
    return "[" + " ".join(f'"{value}"' for value in values) + "]"  # Go's %q of a []string


def pick_version(supported: Sequence[str], *, known: Sequence[str] = KUBELET_VERSIONS) -> str:
    """Pick the ``DRAPlugin`` service as the kubelet does: the first entry of the plugin's list
    that the kubelet knows.  Raises ``ValueError`` (kubelet wording) when there is none."""
    if not supported:
        raise ValueError("empty list of supported gRPC services (aka supported versions)")
    for service in supported:
        if service in known:
            return service
    raise ValueError(
        f"none of services supported by the plugin ({_go_list(supported)}) "
        f"are supported by the kubelet ({_go_list(known)})"
    )


def _rpc_error(method: str, exc: grpc.RpcError) -> PluginRpcError:
    code, details = exc.code(), exc.details()  # every RpcError of a call is a grpc.Call
    return PluginRpcError(method=method, code=str(code.name), details=str(details or ""))


@attrs.define(kw_only=True, eq=False)
class PluginConnection:
    """The kubelet's gRPC connection to one registered plugin endpoint.

    Obtained from :meth:`KubeletClient.register`.  ``version`` is the chosen ``DRAPlugin``
    service (``"v1.DRAPlugin"`` or ``"v1beta1.DRAPlugin"``); every call goes to it.
    """

    driver_name: str
    endpoint: str
    supported_versions: tuple[str, ...]
    version: str
    registration_socket: Path
    closed: bool = attrs.field(default=False, init=False)
    _pb2: Any = attrs.field(init=False, repr=False)
    _channel: Any = attrs.field(init=False, repr=False)
    _dra: Any = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._pb2, stubs = _DRA_STUBS[self.version]
        self._channel = grpc.insecure_channel(f"unix:{self.endpoint}")
        self._dra = stubs.DRAPluginStub(self._channel)

    def _call(self, method: str, claims: Sequence[ClaimIdentity], timeout: float) -> Any:
        """Send ``claims`` (fields namespace=1, uid=2, name=3); check the answer's map."""
        wire = [self._pb2.Claim(namespace=c.namespace, uid=c.uid, name=c.name) for c in claims]
        request = getattr(self._pb2, f"{method}Request")(claims=wire)
        try:
            response = getattr(self._dra, method)(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise _rpc_error(method, exc) from exc
        requested = {claim.uid for claim in claims}
        for uid in sorted(response.claims):
            if uid not in requested:
                raise KubeletProtocolError(f"{method} returned result for unknown claim UID {uid}")
        if unfinished := len(claims) - len(response.claims):
            raise KubeletProtocolError(f"{method} skipped {unfinished} ResourceClaims")
        return response.claims

    def prepare(
        self, claims: Sequence[ClaimIdentity], *, timeout: float = CALL_TIMEOUT
    ) -> dict[str, ClaimResult]:
        """Call ``NodePrepareResources``; return claim UID → result, in request order."""
        results = self._call("NodePrepareResources", claims, timeout)
        return {
            claim.uid: ClaimResult(
                error=str(results[claim.uid].error),
                devices=tuple(map(_device, results[claim.uid].devices)),
            )
            for claim in claims
        }

    def unprepare(
        self, claims: Sequence[ClaimIdentity], *, timeout: float = CALL_TIMEOUT
    ) -> dict[str, str]:
        """Call ``NodeUnprepareResources``; return claim UID → error (``""`` = success)."""
        results = self._call("NodeUnprepareResources", claims, timeout)
        return {claim.uid: str(results[claim.uid].error) for claim in claims}

    def watch_health(self, *, timeout: float | None = None) -> Iterator[list[HealthReport]]:
        """Open a ``v1alpha1`` ``NodeWatchResources`` stream; yield each message's devices.

        The stream opens in this call, before the first ``next()``.  Iteration ends when the
        plugin ends the stream, when ``timeout`` (the stream's deadline, in seconds) passes, or
        when the connection is closed; any other failure raises :class:`PluginRpcError`.
        """
        request = health_pb2.NodeWatchResourcesRequest()
        call = _HEALTH_STUB(self._channel).NodeWatchResources(request, timeout=timeout)
        return self._health_reports(call)

    def _health_reports(self, call: Any) -> Iterator[list[HealthReport]]:
        quiet = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
        try:
            for response in call:
                yield [_health_report(device) for device in response.devices]
        except grpc.RpcError as exc:
            if exc.code() not in quiet:
                raise _rpc_error("NodeWatchResources", exc) from exc
        finally:
            call.cancel()

    def close(self) -> None:
        """Close the channel, which cancels open health streams.  Idempotent."""
        if not self.closed:
            self.closed = True
            self._channel.close()

    def __enter__(self) -> PluginConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _device(device: Any) -> DeviceResult:
    has_share_id = "share_id" in device.DESCRIPTOR.fields_by_name and device.HasField("share_id")
    return DeviceResult(
        request_names=tuple(device.request_names),
        pool_name=str(device.pool_name),
        device_name=str(device.device_name),
        cdi_device_ids=tuple(device.cdi_device_ids),
        share_id=str(device.share_id) if has_share_id else None,
    )


def _health_report(device: Any) -> HealthReport:
    return HealthReport(
        pool_name=str(device.device.pool_name),
        device_name=str(device.device.device_name),
        health=_HEALTH_NAMES.get(int(device.health), "UNKNOWN"),
        last_updated_time=int(device.last_updated_time),
        health_check_timeout_seconds=int(device.health_check_timeout_seconds),
        message=str(device.message),
    )


class KubeletClient:
    """Registers the plugins found in ``registry_dir`` and hands out connections to them.

    ``kubelet_versions``: the ``DRAPlugin`` services this kubelet knows (default: a 1.34+
    kubelet's); ``("v1beta1.DRAPlugin",)`` acts like a 1.32/1.33 kubelet.  ``notifications``
    lists every ``NotifyRegistrationStatus`` sent, in order.
    """

    def __init__(
        self, registry_dir: str | Path, *, kubelet_versions: Sequence[str] = KUBELET_VERSIONS
    ) -> None:
        unknown = [version for version in kubelet_versions if version not in _DRA_STUBS]
        if unknown or not kubelet_versions:
            raise ValueError(f"kubelet_versions must be some of {list(_DRA_STUBS)}: {unknown}")
        self.registry_dir = Path(registry_dir)
        self.kubelet_versions = tuple(kubelet_versions)
        self.notifications: list[RegistrationNotice] = []
        self._registered: dict[Path, PluginConnection] = {}  # registration socket → connection

    def _sockets(self) -> list[Path]:
        """Unregistered unix sockets below the registry dir, as the kubelet sees them, sorted."""
        self._registered = {s: c for s, c in self._registered.items() if not c.closed}
        found: list[Path] = []
        for root, dirs, files in os.walk(self.registry_dir):
            dirs[:] = sorted(name for name in dirs if not name.startswith("."))
            for path in (Path(root) / name for name in sorted(files) if name[:1] != "."):
                try:
                    if stat.S_ISSOCK(os.stat(path).st_mode) and path not in self._registered:
                        found.append(path)
                except OSError:  # gone meanwhile
                    continue
        return found

    @overload
    def register(
        self, driver_name: str | None = None, *, timeout: float = 10.0, refuse_with: None = None
    ) -> PluginConnection: ...
    @overload
    def register(
        self, driver_name: str | None = None, *, timeout: float = 10.0, refuse_with: str
    ) -> None: ...
    def register(
        self,
        driver_name: str | None = None,
        *,
        timeout: float = 10.0,
        refuse_with: str | None = None,
    ) -> PluginConnection | None:
        """Wait up to ``timeout`` seconds for a plugin socket and register it.

        Sockets are tried in sorted path order; with ``driver_name``, only one whose ``GetInfo``
        names that driver is taken.  Sockets whose registration is still open are skipped, so a
        second call finds a second plugin instance (rolling update).

        A plugin the kubelet would reject (wrong ``type``, no known version, endpoint already
        registered for the driver) gets ``NotifyRegistrationStatus(false, <kubelet error>)`` and
        :class:`RegistrationError` is raised.  With ``refuse_with``, a plugin that passed those
        checks gets ``NotifyRegistrationStatus(false, refuse_with)`` instead of ``true``; nothing
        is raised then, and ``None`` is returned.
        """
        deadline, problem = time.monotonic() + timeout, "no unix socket found"
        while True:
            for socket in self._sockets():
                channel = grpc.insecure_channel(f"unix:{socket}")
                try:
                    stub = _REGISTRATION_STUB(channel)
                    request = registration_pb2.InfoRequest()
                    try:
                        info = stub.GetInfo(request, timeout=GET_INFO_TIMEOUT)
                    except grpc.RpcError as exc:
                        problem = f"{socket}: {_rpc_error('GetInfo', exc)}"
                        continue
                    if driver_name is None or info.name == driver_name:
                        return self._register(stub, socket, info, refuse_with=refuse_with)
                finally:
                    channel.close()
            if time.monotonic() >= deadline:
                wanted = f"plugin of driver {driver_name}" if driver_name else "plugin"
                raise RegistrationError(
                    f"no {wanted} registered from {self.registry_dir} within {timeout} s "
                    f"(last problem: {problem})"
                )
            time.sleep(POLL_INTERVAL)

    def _validate(self, *, socket: Path, info: Any, endpoint: str) -> tuple[str, str]:
        """The kubelet's checks: return ``(chosen version, "")`` or ``("", its error)``."""
        if info.type != PLUGIN_TYPE:
            return "", f"no handler registered for plugin type: {info.type} at socket {socket}"
        try:
            version = pick_version(list(info.supported_versions), known=self.kubelet_versions)
        except ValueError as exc:
            return "", (
                "plugin validation failed with err: invalid supported gRPC versions of DRA "
                f"driver plugin {info.name} at endpoint {endpoint}: {exc}"
            )
        for conn in self._registered.values():
            if (conn.driver_name, conn.endpoint) == (info.name, endpoint):
                return "", (
                    f"plugin registration failed with err: endpoint {endpoint} already "
                    f"registered for DRA driver plugin {info.name}"
                )
        return version, ""

    def _register(
        self, stub: Any, socket: Path, info: Any, *, refuse_with: str | None
    ) -> PluginConnection | None:
        endpoint = str(info.endpoint) or str(socket)
        version, error = self._validate(socket=socket, info=info, endpoint=endpoint)
        if error:
            self._notify(stub, socket, info.name, error=f"RegisterPlugin error -- {error}")
            raise RegistrationError(f"RegisterPlugin error -- {error}")
        self._notify(stub, socket, info.name, error=refuse_with)
        if refuse_with is not None:
            return None
        conn = PluginConnection(
            driver_name=str(info.name),
            endpoint=endpoint,
            supported_versions=tuple(str(v) for v in info.supported_versions),
            version=version,
            registration_socket=socket,
        )
        self._registered[socket] = conn
        return conn

    def _notify(self, stub: Any, socket: Path, name: str, *, error: str | None) -> None:
        registered, text = error is None, error or ""
        self.notifications.append(RegistrationNotice(socket, str(name), registered, text))
        status = registration_pb2.RegistrationStatus(plugin_registered=registered, error=text)
        try:
            stub.NotifyRegistrationStatus(status, timeout=NOTIFY_TIMEOUT)
        except grpc.RpcError as exc:
            raise RegistrationError(
                f"RegisterPlugin error -- failed to send registration status at socket {socket}, "
                f"err: {_rpc_error('NotifyRegistrationStatus', exc)}"
            ) from exc

    def close(self) -> None:
        """Close every connection this client handed out."""
        for conn in self._registered.values():
            conn.close()

    def __enter__(self) -> KubeletClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
