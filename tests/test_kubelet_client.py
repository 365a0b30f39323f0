"""The kubelet test client against tiny in-test plugins on real unix sockets.

Each ``FakePlugin`` serves the registration service on ``<registry>/<name>-reg.sock`` and the
DRA v1 + v1beta1 and health services on its endpoint, records what the client sent, and lets a
test rewrite its answers.  Covered: version selection and refusals (with the
``NotifyRegistrationStatus`` the plugin receives), the registry scan, the kubelet's response-map
checks, ``share_id`` on v1 and v1beta1, errors, and the health stream.
"""

from __future__ import annotations

import queue
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import attrs
import grpc
import pytest

from dra_framework.kubelet._proto.dra.v1 import api_pb2 as v1_pb2
from dra_framework.kubelet._proto.dra.v1 import api_pb2_grpc as v1_grpc
from dra_framework.kubelet._proto.dra.v1beta1 import api_pb2 as v1beta1_pb2
from dra_framework.kubelet._proto.dra.v1beta1 import api_pb2_grpc as v1beta1_grpc
from dra_framework.kubelet._proto.drahealth.v1alpha1 import api_pb2 as health_pb2
from dra_framework.kubelet._proto.drahealth.v1alpha1 import api_pb2_grpc as health_grpc
from dra_framework.kubelet._proto.pluginregistration.v1 import api_pb2 as reg_pb2
from dra_framework.kubelet._proto.pluginregistration.v1 import api_pb2_grpc as reg_grpc
from dra_framework.testing.kubelet import (
    ClaimRef,
    ClaimResult,
    DeviceResult,
    HealthReport,
    KubeletClient,
    KubeletProtocolError,
    PluginRpcError,
    RegistrationError,
    RegistrationNotice,
    pick_version,
)

BOTH = ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
CLAIM_A = ClaimRef(namespace="default", name="claim-a", uid="uid-a")
CLAIM_B = ClaimRef(namespace="other", name="claim-b", uid="uid-b")
Hook = Callable[[str, Any], None]


@attrs.define(eq=False)
class FakePlugin:
    """A DRA kubelet plugin reduced to what the kubelet can observe."""

    registry: Path
    name: str
    supported_versions: list[str]
    plugin_type: str = "DRAPlugin"
    socket_name: str = ""  # file name stem of the sockets; default: the driver name
    endpoint: str | None = None  # None: own socket under dra/; "": the registration socket
    prepare_hook: Hook | None = None  # (version, response) -> None, may edit the response
    unprepare_hook: Hook | None = None
    statuses: list[tuple[bool, str]] = attrs.Factory(list)
    calls: list[tuple[str, str, Any]] = attrs.Factory(list)  # (version, method, request)
    health: queue.Queue[Any] = attrs.Factory(queue.Queue)
    servers: list[Any] = attrs.Factory(list)

    @property
    def reg_socket(self) -> Path:
        return self.registry / f"{self.socket_name or self.name}-reg.sock"

    def start(self) -> FakePlugin:
        if self.endpoint is None:
            dra_dir = self.registry.parent / "dra"
            dra_dir.mkdir(exist_ok=True)
            self.endpoint = str(dra_dir / f"{self.socket_name or self.name}.sock")
            self._serve(self.endpoint, dra=True, registration=False)
            self._serve(str(self.reg_socket), dra=False, registration=True)
        else:
            self._serve(str(self.reg_socket), dra=True, registration=True)
        return self

    def _serve(self, path: str, *, dra: bool, registration: bool) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        services: list[tuple[Any, Any]] = []
        if registration:
            services.append((reg_grpc.add_RegistrationServicer_to_server, _Registration(self)))
        if dra:
            services += [
                (v1_grpc.add_DRAPluginServicer_to_server, _dra(self, "v1", v1_pb2, v1_grpc)),
                (
                    v1beta1_grpc.add_DRAPluginServicer_to_server,
                    _dra(self, "v1beta1", v1beta1_pb2, v1beta1_grpc),
                ),
                (health_grpc.add_DRAResourceHealthServicer_to_server, _Health(self)),
            ]
        for add_to_server, servicer in services:
            add_to_server(servicer, server)
        server.add_insecure_port(f"unix:{path}")
        server.start()
        self.servers.append(server)

    def stop(self) -> None:
        for server in self.servers:
            server.stop(grace=None)


class _Registration(reg_grpc.RegistrationServicer):
    def __init__(self, plugin: FakePlugin) -> None:
        self.plugin = plugin

    def GetInfo(self, request: Any, context: Any) -> Any:
        p = self.plugin
        return reg_pb2.PluginInfo(
            type=p.plugin_type, name=p.name, endpoint=p.endpoint,
            supported_versions=p.supported_versions,
        )  # fmt: skip

    def NotifyRegistrationStatus(self, request: Any, context: Any) -> Any:
        self.plugin.statuses.append((request.plugin_registered, request.error))
        return reg_pb2.RegistrationStatusResponse()


def _dra(plugin: FakePlugin, version: str, pb2: Any, stubs: Any) -> Any:
    class Servicer(stubs.DRAPluginServicer):  # type: ignore[misc]
        def NodePrepareResources(self, request: Any, context: Any) -> Any:
            plugin.calls.append((version, "NodePrepareResources", request))
            response = pb2.NodePrepareResourcesResponse()
            for claim in request.claims:
                response.claims[claim.uid].devices.add(
                    request_names=["req"], pool_name="node-1", device_name=f"dev-{claim.name}",
                    cdi_device_ids=[f"example.com/gpu={claim.uid}"],
                )  # fmt: skip
            if plugin.prepare_hook:
                plugin.prepare_hook(version, response)
            return response

        def NodeUnprepareResources(self, request: Any, context: Any) -> Any:
            plugin.calls.append((version, "NodeUnprepareResources", request))
            response = pb2.NodeUnprepareResourcesResponse()
            for claim in request.claims:
                response.claims[claim.uid].SetInParent()
            if plugin.unprepare_hook:
                plugin.unprepare_hook(version, response)
            return response

    return Servicer()


class _Health(health_grpc.DRAResourceHealthServicer):
    def __init__(self, plugin: FakePlugin) -> None:
        self.plugin = plugin

    def NodeWatchResources(self, request: Any, context: Any) -> Iterator[Any]:
        while context.is_active():
            try:
                message = self.plugin.health.get(timeout=0.02)
            except queue.Empty:
                continue
            if message is None:
                return
            yield message


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Path]:
    """A registry dir short enough for AF_UNIX paths (108 bytes) even under a long tmp_path."""
    if len(str(tmp_path)) < 60:
        (tmp_path / "reg").mkdir()
        yield tmp_path / "reg"
        return
    with tempfile.TemporaryDirectory(prefix="kc-", dir="/tmp") as short:
        (Path(short) / "reg").mkdir()
        yield Path(short) / "reg"


@pytest.fixture
def make_plugin(registry: Path) -> Iterator[Callable[..., FakePlugin]]:
    plugins: list[FakePlugin] = []

    def make(name: str = "gpu.example.com", versions: list[str] = BOTH, **kw: Any) -> FakePlugin:
        plugin = FakePlugin(registry, name, list(versions), **kw).start()
        plugins.append(plugin)
        return plugin

    yield make
    for plugin in plugins:
        plugin.stop()


@pytest.fixture
def kubelet(registry: Path) -> Iterator[KubeletClient]:
    with KubeletClient(registry) as client:
        yield client


# --- registration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("advertised", "kubelet_versions", "chosen"),
    [
        pytest.param(BOTH, BOTH, "v1.DRAPlugin", id="v1-first-wins"),
        pytest.param(BOTH[::-1], BOTH, "v1beta1.DRAPlugin", id="plugin-order-not-kubelet-order"),
        pytest.param(["v1beta1.DRAPlugin"], BOTH, "v1beta1.DRAPlugin", id="only-v1beta1"),
        pytest.param(
            ["v1alpha1.DRAResourceHealth", "v2.DRAPlugin", "v1.DRAPlugin"], BOTH, "v1.DRAPlugin",
            id="unknown-entries-ignored",
        ),
        pytest.param(BOTH, ["v1beta1.DRAPlugin"], "v1beta1.DRAPlugin", id="kubelet-1.33"),
    ],
)  # fmt: skip
def test_version_selection(
    make_plugin: Callable[..., FakePlugin],
    registry: Path,
    advertised: list[str],
    kubelet_versions: list[str],
    chosen: str,
) -> None:
    plugin = make_plugin(versions=advertised)
    with KubeletClient(registry, kubelet_versions=kubelet_versions) as kubelet:
        conn = kubelet.register("gpu.example.com", timeout=5)
        assert (conn.version, conn.supported_versions) == (chosen, tuple(advertised))
        assert (conn.driver_name, conn.endpoint) == ("gpu.example.com", plugin.endpoint)
        assert conn.registration_socket == plugin.reg_socket
        assert plugin.statuses == [(True, "")]
        assert kubelet.notifications == [
            RegistrationNotice(plugin.reg_socket, "gpu.example.com", True, "")
        ]
        conn.prepare([CLAIM_A])
        conn.unprepare([CLAIM_A])
    service = chosen.split(".")[0]
    assert [(version, method) for version, method, _ in plugin.calls] == [
        (service, "NodePrepareResources"),
        (service, "NodeUnprepareResources"),
    ]


@pytest.mark.parametrize(
    ("versions", "plugin_type", "message"),
    [
        pytest.param(
            ["v1alpha3.NodeService", "1.0.0"], "DRAPlugin",
            'none of services supported by the plugin (["v1alpha3.NodeService" "1.0.0"]) '
            'are supported by the kubelet (["v1.DRAPlugin" "v1beta1.DRAPlugin"])',
            id="unknown-only",
        ),
        pytest.param(
            [], "DRAPlugin", "empty list of supported gRPC services (aka supported versions)",
            id="empty-list",
        ),
        pytest.param(BOTH, "CSIPlugin", "no handler registered for plugin type: CSIPlugin",
                     id="wrong-type"),
    ],
)  # fmt: skip
def test_rejected_plugin_is_told_why(
    make_plugin: Callable[..., FakePlugin],
    kubelet: KubeletClient,
    versions: list[str],
    plugin_type: str,
    message: str,
) -> None:
    plugin = make_plugin(versions=versions, plugin_type=plugin_type)
    with pytest.raises(RegistrationError, match="^RegisterPlugin error -- ") as raised:
        kubelet.register(timeout=5)
    assert message in str(raised.value)
    assert plugin.statuses == [(False, str(raised.value))]
    assert [n.plugin_registered for n in kubelet.notifications] == [False]


def test_refuse_with_sends_the_error_and_returns_none(
    make_plugin: Callable[..., FakePlugin], kubelet: KubeletClient
) -> None:
    plugin = make_plugin()
    assert kubelet.register(timeout=5, refuse_with="node is draining") is None
    assert plugin.statuses == [(False, "node is draining")]
    assert kubelet.notifications == [
        RegistrationNotice(plugin.reg_socket, "gpu.example.com", False, "node is draining")
    ]


def test_empty_endpoint_means_the_registration_socket(
    make_plugin: Callable[..., FakePlugin], kubelet: KubeletClient
) -> None:
    plugin = make_plugin(endpoint="")
    conn = kubelet.register(timeout=5)
    assert conn.endpoint == str(plugin.reg_socket)
    assert conn.prepare([CLAIM_A])["uid-a"].error == ""


def test_dot_files_and_non_sockets_are_ignored(
    make_plugin: Callable[..., FakePlugin], registry: Path, kubelet: KubeletClient
) -> None:
    (registry / "plain-reg.sock").write_text("not a socket")
    hidden = make_plugin(name=".hidden", endpoint="")
    (registry / ".tmp").mkdir()
    nested = FakePlugin(registry / ".tmp", "nested.example.com", BOTH, endpoint="").start()
    try:
        with pytest.raises(RegistrationError, match=r"last problem: no unix socket found"):
            kubelet.register(timeout=0.3)
    finally:
        nested.stop()
    assert (hidden.statuses, nested.statuses, kubelet.notifications) == ([], [], [])
    plugin = make_plugin()
    assert kubelet.register(timeout=5).registration_socket == plugin.reg_socket


def test_waits_for_a_plugin_that_starts_later(
    make_plugin: Callable[..., FakePlugin], kubelet: KubeletClient
) -> None:
    def start_later() -> FakePlugin:
        time.sleep(0.3)
        return make_plugin()

    with futures.ThreadPoolExecutor(1) as pool:
        later = pool.submit(start_later)
        conn = kubelet.register("gpu.example.com", timeout=5)
        assert conn.registration_socket == later.result().reg_socket


def test_driver_name_picks_the_matching_socket(
    make_plugin: Callable[..., FakePlugin], kubelet: KubeletClient
) -> None:
    other = make_plugin(name="a.example.com")
    wanted = make_plugin(name="b.example.com")
    assert kubelet.register("b.example.com", timeout=5).driver_name == "b.example.com"
    assert (other.statuses, wanted.statuses) == ([], [(True, "")])
    with pytest.raises(RegistrationError, match="no plugin of driver c.example.com"):
        kubelet.register("c.example.com", timeout=0.2)


def test_second_instance_registers_unless_it_reuses_the_endpoint(
    make_plugin: Callable[..., FakePlugin], kubelet: KubeletClient
) -> None:
    first = make_plugin()
    conn = kubelet.register(timeout=5)
    assert conn.registration_socket == first.reg_socket

    rolling = make_plugin(socket_name="gpu.example.com-pod2")  # its own endpoint
    second = kubelet.register("gpu.example.com", timeout=5)
    assert (second.registration_socket, second.endpoint) == (rolling.reg_socket, rolling.endpoint)

    hijacker = make_plugin(socket_name="z-hijacker", endpoint=first.endpoint)
    with pytest.raises(RegistrationError, match="already registered for DRA driver plugin"):
        kubelet.register(timeout=5)
    assert hijacker.statuses == [(False, kubelet.notifications[-1].error)]

    conn.close()  # the first instance goes away: its endpoint is free again
    first.reg_socket.unlink()
    assert kubelet.register(timeout=5).registration_socket == hijacker.reg_socket


# --- prepare / unprepare ---------------------------------------------------------------------


def test_claims_are_sent_with_the_wire_field_numbers(
    make_plugin: Callable[..., FakePlugin], kubelet: KubeletClient
) -> None:
    plugin = make_plugin()
    kubelet.register(timeout=5).prepare([CLAIM_A])
    request = plugin.calls[0][2]
    # namespace=1 (tag 0x0a), uid=2 (0x12), name=3 (0x1a)
    assert request.claims[0].SerializeToString() == b"\n\x07default\x12\x05uid-a\x1a\x07claim-a"


def test_prepare_and_unprepare_results(
    make_plugin: Callable[..., FakePlugin], kubelet: KubeletClient
) -> None:
    def fail_b(version: str, response: Any) -> None:
        response.claims["uid-b"].error = "device busy"

    make_plugin(prepare_hook=fail_b, unprepare_hook=fail_b)
    conn = kubelet.register(timeout=5)
    device_a = DeviceResult(("req",), "node-1", "dev-claim-a", ("example.com/gpu=uid-a",), None)
    device_b = DeviceResult(("req",), "node-1", "dev-claim-b", ("example.com/gpu=uid-b",), None)
    assert conn.prepare([CLAIM_A, CLAIM_B]) == {
        "uid-a": ClaimResult("", (device_a,)),
        "uid-b": ClaimResult("device busy", (device_b,)),
    }
    assert conn.unprepare([CLAIM_A, CLAIM_B]) == {"uid-a": "", "uid-b": "device busy"}


def _drop_b(version: str, response: Any) -> None:
    del response.claims["uid-b"]


def _add_unknown(version: str, response: Any) -> None:
    response.claims["uid-zzz"].SetInParent()


@pytest.mark.parametrize("method", ["prepare", "unprepare"])
@pytest.mark.parametrize(
    ("hook", "message"),
    [
        pytest.param(_drop_b, "{rpc} skipped 1 ResourceClaims", id="requested-uid-missing"),
        pytest.param(
            _add_unknown, "{rpc} returned result for unknown claim UID uid-zzz", id="unknown-uid"
        ),
    ],
)
def test_response_map_is_checked_like_the_kubelet(
    make_plugin: Callable[..., FakePlugin],
    kubelet: KubeletClient,
    method: str,
    hook: Hook,
    message: str,
) -> None:
    make_plugin(**{f"{method}_hook": hook})
    conn = kubelet.register(timeout=5)
    rpc = "NodePrepareResources" if method == "prepare" else "NodeUnprepareResources"
    with pytest.raises(KubeletProtocolError) as raised:
        getattr(conn, method)([CLAIM_A, CLAIM_B])
    assert str(raised.value) == message.format(rpc=rpc)


def _share_ids(version: str, response: Any) -> None:
    if version == "v1":
        response.claims["uid-a"].devices[0].share_id = "share-1"
        response.claims["uid-b"].devices[0].share_id = ""  # set, but empty


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        pytest.param(BOTH, {"uid-a": "share-1", "uid-b": ""}, id="v1-round-trip"),
        pytest.param(["v1beta1.DRAPlugin"], {"uid-a": None, "uid-b": None}, id="v1beta1-absent"),
    ],
)
def test_share_id(
    make_plugin: Callable[..., FakePlugin],
    kubelet: KubeletClient,
    versions: list[str],
    expected: dict[str, str | None],
) -> None:
    make_plugin(versions=versions, prepare_hook=_share_ids)
    results = kubelet.register(timeout=5).prepare([CLAIM_A, CLAIM_B])
    assert {uid: result.devices[0].share_id for uid, result in results.items()} == expected


def test_share_id_unset_on_v1_is_none(
    make_plugin: Callable[..., FakePlugin], kubelet: KubeletClient
) -> None:
    make_plugin()
    assert kubelet.register(timeout=5).prepare([CLAIM_A])["uid-a"].devices[0].share_id is None


def test_grpc_failure_of_the_whole_call(
    make_plugin: Callable[..., FakePlugin], kubelet: KubeletClient
) -> None:
    def crash(version: str, response: Any) -> None:
        raise RuntimeError("state unreadable")

    make_plugin(prepare_hook=crash)
    with pytest.raises(PluginRpcError) as raised:
        kubelet.register(timeout=5).prepare([CLAIM_A])
    assert (raised.value.method, raised.value.code) == ("NodePrepareResources", "UNKNOWN")
    assert str(raised.value).startswith("NodePrepareResources: rpc error: code = UNKNOWN")


def test_unreachable_endpoint_is_an_rpc_error(
    make_plugin: Callable[..., FakePlugin], kubelet: KubeletClient
) -> None:
    plugin = make_plugin()
    conn = kubelet.register(timeout=5)
    plugin.servers[0].stop(grace=None)  # the DRA server; registration stays up
    with pytest.raises(PluginRpcError) as raised:
        conn.unprepare([CLAIM_A], timeout=2)
    assert raised.value.code == "UNAVAILABLE"


# --- health ----------------------------------------------------------------------------------


def _health(*devices: tuple[str, int, str]) -> Any:
    message = health_pb2.NodeWatchResourcesResponse()
    for name, status, text in devices:
        message.devices.add(
            device=health_pb2.DeviceIdentifier(pool_name="node-1", device_name=name),
            health=status, last_updated_time=1_700_000_000,
            health_check_timeout_seconds=60, message=text,
        )  # fmt: skip
    return message


def test_health_stream_yields_each_message(
    make_plugin: Callable[..., FakePlugin], kubelet: KubeletClient
) -> None:
    plugin = make_plugin()
    stream = kubelet.register(timeout=5).watch_health(timeout=10)
    plugin.health.put(_health(("gpu-0", health_pb2.HEALTHY, ""), ("gpu-1", 7, "")))
    plugin.health.put(_health(("gpu-0", health_pb2.UNHEALTHY, "XID 79")))
    plugin.health.put(None)  # the plugin ends the stream
    report = HealthReport("node-1", "gpu-0", "HEALTHY", 1_700_000_000, 60, "")
    assert list(stream) == [
        [report, attrs.evolve(report, device_name="gpu-1", health="UNKNOWN")],
        [attrs.evolve(report, health="UNHEALTHY", message="XID 79")],
    ]


def test_health_stream_ends_quietly_at_its_deadline_or_on_close(
    make_plugin: Callable[..., FakePlugin], kubelet: KubeletClient
) -> None:
    plugin = make_plugin()
    conn = kubelet.register(timeout=5)
    plugin.health.put(_health(("gpu-0", health_pb2.HEALTHY, "")))
    assert len(list(conn.watch_health(timeout=0.5))) == 1
    stream = conn.watch_health()
    conn.close()
    assert list(stream) == []


@pytest.mark.parametrize(
    ("supported", "known", "chosen"),
    [
        pytest.param(BOTH, BOTH, "v1.DRAPlugin", id="first-known"),
        pytest.param(["x", "v1beta1.DRAPlugin", "v1.DRAPlugin"], BOTH, "v1beta1.DRAPlugin",
                     id="plugin-order"),
        pytest.param(["x"], BOTH, None, id="none-known"),
        pytest.param([], BOTH, None, id="empty"),
    ],
)  # fmt: skip
def test_pick_version(supported: list[str], known: list[str], chosen: str | None) -> None:
    if chosen is None:
        with pytest.raises(ValueError):
            pick_version(supported, known=known)
    else:
        assert pick_version(supported, known=known) == chosen
