"""The gRPC services a kubelet talks to: registration, DRAPlugin v1/v1beta1, resource health.

Each servicer is a thin translation between protobuf messages and ``ClaimPreparer``: requests
become ``ClaimRef`` lists, results become response maps with exactly one entry per requested
claim.  ``GetInfo`` answers from memory (the kubelet gives it one second).  The health stream
polls the backend and sends the whole picture on every change and at least every
``resend_interval`` seconds, so ``last_updated_time`` stays fresh.

What a peer on the socket can cost us is bounded: each prepare/unprepare gets the gRPC call's
own deadline (so it answers in time) and, should the preparer ever raise, an error per claim
instead of a failed RPC; at most ``MAX_HEALTH_STREAMS`` health streams run at once (a new one
ends the oldest: the kubelet keeps one, and reconnects replace it), so streams never take the
server threads that prepares need; only the last registration status is kept, and what is
logged of it is cut short.

``grpc`` and the generated modules are imported here and in ``plugin`` only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

import grpc

from ..loader import Backend
from ..metrics import REGISTRATIONS, RPC_LATENCY
from ..models import ClaimRef, DeviceHealth
from ..node.calls import bounded
from ..node.prepare import ClaimPreparer, ClaimResult
from ._proto.dra.v1 import api_pb2 as dra_v1
from ._proto.dra.v1 import api_pb2_grpc as dra_v1_grpc
from ._proto.dra.v1beta1 import api_pb2 as dra_v1beta1
from ._proto.dra.v1beta1 import api_pb2_grpc as dra_v1beta1_grpc
from ._proto.drahealth.v1alpha1 import api_pb2 as health_v1alpha1
from ._proto.drahealth.v1alpha1 import api_pb2_grpc as health_v1alpha1_grpc
from ._proto.pluginregistration.v1 import api_pb2 as reg
from ._proto.pluginregistration.v1 import api_pb2_grpc as reg_grpc

log = logging.getLogger(__name__)

PLUGIN_TYPE = "DRAPlugin"
DRA_V1 = "v1.DRAPlugin"
DRA_V1BETA1 = "v1beta1.DRAPlugin"
HEALTH_V1ALPHA1 = "v1alpha1.DRAResourceHealth"

MAX_HEALTH_STREAMS = 2
"""Health streams served at once; each holds a server thread for its whole life."""


class RegistrationService(reg_grpc.RegistrationServicer):
    """``pluginregistration.Registration``: tells the kubelet who we are and where."""

    def __init__(self, *, driver_name: str, endpoint: str, versions: Sequence[str]) -> None:
        self.driver_name = driver_name
        self.endpoint = endpoint
        self.versions = list(versions)
        self.registered = threading.Event()
        self.status: tuple[bool, str] | None = None
        """The kubelet's last verdict: registered, and its error (cut to 1 KiB)."""

    def GetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return reg.PluginInfo(type=PLUGIN_TYPE, name=self.driver_name, endpoint=self.endpoint,
                              supported_versions=self.versions)

    def NotifyRegistrationStatus(  # noqa: N802
        self, request: Any, context: grpc.ServicerContext
    ) -> Any:
        error = bounded(request.error)
        self.status = (bool(request.plugin_registered), error)
        REGISTRATIONS.labels(self.driver_name, str(bool(request.plugin_registered))).inc()
        if request.plugin_registered:
            log.info("registered with the kubelet", extra={"driver": self.driver_name,
                                                            "endpoint": self.endpoint})
            self.registered.set()
        else:
            log.error(f"the kubelet refused the registration: {error}",
                      extra={"driver": self.driver_name, "endpoint": self.endpoint})
        return reg.RegistrationStatusResponse()


def _claims(request: Any) -> list[ClaimRef]:
    return [ClaimRef(namespace=c.namespace, name=c.name, uid=c.uid) for c in request.claims]


def _deadline(context: grpc.ServicerContext) -> float | None:
    """The call's deadline as a ``time.monotonic()`` instant (None: the caller set none)."""
    left = context.time_remaining()
    return None if left is None else time.monotonic() + left


def _internal(claims: Sequence[ClaimRef], operation: str) -> dict[str, str]:
    log.exception(f"{operation} raised; every claim of the call gets an error")
    return {c.uid: f"internal error of the plugin during {operation}; see the plugin log"
            for c in claims}


def _dra_servicer(pb2: ModuleType, pb2_grpc: ModuleType, *, share_id: bool) -> type:
    """A DRAPlugin servicer class for one generated version (v1 or v1beta1)."""

    class DraService(pb2_grpc.DRAPluginServicer):  # type: ignore[misc,name-defined]
        def __init__(self, *, preparer: ClaimPreparer) -> None:
            self.preparer = preparer
            self.answering = preparer.stages["answer"]
            self.timing_prepare = RPC_LATENCY.labels(preparer.driver, "NodePrepareResources")
            self.timing_unprepare = RPC_LATENCY.labels(preparer.driver, "NodeUnprepareResources")

        def _device(self, d: Any) -> Any:
            msg = pb2.Device(request_names=list(d.request_names), pool_name=d.pool,
                             device_name=d.device, cdi_device_ids=list(d.cdi_ids))
            if share_id and d.share_id:
                msg.share_id = d.share_id
            return msg

        def _response(self, result: ClaimResult) -> Any:
            if result.error:
                return pb2.NodePrepareResourceResponse(error=result.error)
            return pb2.NodePrepareResourceResponse(devices=[self._device(d)
                                                            for d in result.devices])

        def NodePrepareResources(  # noqa: N802
            self, request: Any, context: grpc.ServicerContext
        ) -> Any:
            with self.timing_prepare.time():
                claims = _claims(request)
                try:
                    results = self.preparer.prepare(claims, deadline=_deadline(context))
                except Exception:
                    results = {uid: ClaimResult(error=e)
                               for uid, e in _internal(claims, "prepare").items()}
                with self.answering.time():
                    return pb2.NodePrepareResourcesResponse(
                        claims={uid: self._response(r) for uid, r in results.items()}
                    )

        def NodeUnprepareResources(  # noqa: N802
            self, request: Any, context: grpc.ServicerContext
        ) -> Any:
            with self.timing_unprepare.time():
                claims = _claims(request)
                try:
                    results = self.preparer.unprepare(claims, deadline=_deadline(context))
                except Exception:
                    results = _internal(claims, "unprepare")
                return pb2.NodeUnprepareResourcesResponse(
                    claims={uid: pb2.NodeUnprepareResourceResponse(error=err)
                            for uid, err in results.items()}
                )

    DraService.__name__ = f"DraService_{pb2.DESCRIPTOR.package.rsplit('.', 1)[-1]}"
    return DraService


DraServiceV1 = _dra_servicer(dra_v1, dra_v1_grpc, share_id=True)
DraServiceV1beta1 = _dra_servicer(dra_v1beta1, dra_v1beta1_grpc, share_id=False)


class HealthService(health_v1alpha1_grpc.DRAResourceHealthServicer):
    """``v1alpha1.DRAResourceHealth``: a stream of the driver's device health."""

    def __init__(
        self,
        *,
        backend: Backend,
        stopping: threading.Event,
        poll_interval: float = 1.0,
        resend_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.stopping = stopping
        self.poll_interval = poll_interval
        self.resend_interval = resend_interval
        self.clock = clock
        self._streams: OrderedDict[int, threading.Event] = OrderedDict()
        self._streams_lock = threading.Lock()
        self._next_stream = 0

    def _open_stream(self) -> tuple[int, threading.Event]:
        """Register a stream; beyond ``MAX_HEALTH_STREAMS``, end the oldest."""
        with self._streams_lock:
            self._next_stream += 1
            key, done = self._next_stream, threading.Event()
            self._streams[key] = done
            while len(self._streams) > MAX_HEALTH_STREAMS:
                _, oldest = self._streams.popitem(last=False)
                oldest.set()
            return key, done

    def _close_stream(self, key: int) -> None:
        with self._streams_lock:
            self._streams.pop(key, None)

    def stop(self) -> None:
        """End every stream now (the plugin is stopping)."""
        with self._streams_lock:
            for done in self._streams.values():
                done.set()

    def _response(self, devices: Sequence[DeviceHealth], now: int) -> Any:
        return health_v1alpha1.NodeWatchResourcesResponse(devices=[
            health_v1alpha1.DeviceHealth(
                device=health_v1alpha1.DeviceIdentifier(pool_name=d.pool, device_name=d.device),
                health=d.health.name,
                last_updated_time=now,
                health_check_timeout_seconds=d.timeout_seconds,
                message=d.message[:1021] + "..." if len(d.message) > 1024 else d.message,
            )
            for d in devices
        ])

    def NodeWatchResources(  # noqa: N802
        self, request: Any, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        last: list[DeviceHealth] | None = None
        sent_at = 0.0
        key, done = self._open_stream()
        try:
            while context.is_active() and not self.stopping.is_set() and not done.is_set():
                try:
                    current = list(self.backend.health() or ())
                except Exception:
                    log.exception("health check failed", extra={"backend": self.backend.name})
                    current = []
                now = self.clock()
                if current != last or now - sent_at >= self.resend_interval:
                    yield self._response(current, int(now))
                    last, sent_at = current, now
                done.wait(self.poll_interval)
        finally:
            self._close_stream(key)


def add_services(
    server: grpc.Server, *, preparer: ClaimPreparer, health: HealthService | None
) -> None:
    """Register DRAPlugin v1 and v1beta1 (and health when given) on ``server``."""
    v1, v1beta1 = DraServiceV1(preparer=preparer), DraServiceV1beta1(preparer=preparer)
    dra_v1_grpc.add_DRAPluginServicer_to_server(v1, server)  # type: ignore[no-untyped-call]
    dra_v1beta1_grpc.add_DRAPluginServicer_to_server(  # type: ignore[no-untyped-call]
        v1beta1, server)
    if health is not None:
        health_v1alpha1_grpc.add_DRAResourceHealthServicer_to_server(  # type: ignore[no-untyped-call]
            health, server)


def add_registration(server: grpc.Server, service: RegistrationService) -> None:
    reg_grpc.add_RegistrationServicer_to_server(service, server)  # type: ignore[no-untyped-call]
