"""Registration with the kubelet and the sockets of a plugin."""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from dra_framework.errors import SetupError
from dra_framework.kubelet.plugin import registration_socket_path
from dra_framework.testing.fakeapi import FakeApiServer
from dra_framework.testing.harness import PluginHarness
from dra_framework.testing.kubelet import KubeletClient


def test_handshake(node: PluginHarness) -> None:
    conn = node.connect()
    assert conn.driver_name == "gpu.example.com"
    assert conn.supported_versions == (
        "v1.DRAPlugin", "v1beta1.DRAPlugin", "v1alpha1.DRAResourceHealth")
    assert conn.version == "v1.DRAPlugin"
    assert conn.endpoint == str(node.plugins_dir / "gpu.example.com" / "dra.sock")
    assert conn.registration_socket == node.registry_dir / "gpu.example.com-reg.sock"
    notice = node.kubelet.notifications[-1]
    assert notice.plugin_registered and notice.error == ""
    assert node.node is not None
    assert node.node.plugins[0].registration.status == (True, "")


def test_old_kubelet_picks_v1beta1(node: PluginHarness) -> None:
    old = KubeletClient(node.registry_dir, kubelet_versions=("v1beta1.DRAPlugin",))
    conn = old.register("gpu.example.com")
    assert conn is not None and conn.version == "v1beta1.DRAPlugin"
    conn.close()
    old.close()


def test_refusal_is_logged_with_the_kubelets_message(
    node: PluginHarness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        assert node.kubelet.register("gpu.example.com", refuse_with="version skew") is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("refused the registration: version skew" in r.getMessage() for r in errors)
    assert node.node is not None
    assert node.node.plugins[0].registration.status == (False, "version skew")


def test_health_not_advertised_when_backend_has_none(short_tmp: Path,
                                                     api: FakeApiServer) -> None:
    with PluginHarness(root=short_tmp, api=api,
                       backend_options={"example": {"health": "false"}}) as h:
        assert h.connect().supported_versions == ("v1.DRAPlugin", "v1beta1.DRAPlugin")


def test_sockets_are_private_and_removed_on_stop(node: PluginHarness) -> None:
    dra = node.plugins_dir / "gpu.example.com" / "dra.sock"
    reg = node.registry_dir / "gpu.example.com-reg.sock"
    for path in (dra, reg):
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert not mode & stat.S_IWOTH and not mode & stat.S_IROTH
    node.stop()
    assert not dra.exists() and not reg.exists()


def test_stale_sockets_are_replaced(short_tmp: Path, api: FakeApiServer) -> None:
    reg = short_tmp / "plugins_registry" / "gpu.example.com-reg.sock"
    dra = short_tmp / "plugins" / "gpu.example.com" / "dra.sock"
    for path in (reg, dra):  # sockets left behind by a killed process
        path.parent.mkdir(parents=True, exist_ok=True)
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    with PluginHarness(root=short_tmp, api=api) as h:
        assert h.connect().version == "v1.DRAPlugin"


def test_non_socket_at_socket_path_is_not_deleted(short_tmp: Path, api: FakeApiServer) -> None:
    dra = short_tmp / "plugins" / "gpu.example.com" / "dra.sock"
    dra.parent.mkdir(parents=True)
    dra.write_text("precious")
    with pytest.raises(SetupError, match="is not a socket"), PluginHarness(root=short_tmp,
                                                                           api=api):
        pass
    assert dra.read_text() == "precious"


def test_dra_socket_serves_before_registration_socket_appears(short_tmp: Path,
                                                               api: FakeApiServer) -> None:
    """A kubelet that dials the endpoint the moment it sees the registration socket works."""
    reg = short_tmp / "plugins_registry" / "gpu.example.com-reg.sock"
    dra = short_tmp / "plugins" / "gpu.example.com" / "dra.sock"
    seen: list[bool] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if reg.exists():
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(str(dra))
                    seen.append(True)
                except OSError:
                    seen.append(False)
                finally:
                    s.close()
                return

    t = threading.Thread(target=watch)
    t.start()
    with PluginHarness(root=short_tmp, api=api):
        t.join(timeout=10)
    done.set()
    assert seen == [True]


def test_rolling_update_instances_side_by_side(short_tmp: Path, api: FakeApiServer) -> None:
    old = PluginHarness(root=short_tmp, api=api, rolling_update_uid="pod-old")
    new = PluginHarness(root=short_tmp, api=api, rolling_update_uid="pod-new")
    with old, new:
        names = sorted(p.name for p in (short_tmp / "plugins_registry").iterdir())
        assert names == ["gpu.example.com-pod-new-reg.sock", "gpu.example.com-pod-old-reg.sock"]
        endpoints = sorted(p.name for p in (short_tmp / "plugins" / "gpu.example.com").glob(
            "*.sock"))
        assert endpoints == ["dra-pod-new.sock", "dra-pod-old.sock"]
        old.stop()  # the old pod removes only its own sockets
        names = sorted(p.name for p in (short_tmp / "plugins_registry").iterdir())
        assert names == ["gpu.example.com-pod-new-reg.sock"]
        assert new.connect().endpoint.endswith("dra-pod-new.sock")


@pytest.mark.parametrize("uid,expected", [
    pytest.param("", "gpu.example.com-reg.sock", id="plain"),
    pytest.param("1234", "gpu.example.com-1234-reg.sock", id="rolling-update"),
])
def test_registration_socket_names(uid: str, expected: str) -> None:
    path = registration_socket_path(registry_dir="/r", driver="gpu.example.com",
                                    rolling_update_uid=uid)
    assert path == Path("/r") / expected


def test_long_registration_socket_names_are_shortened() -> None:
    uid = "0a8f5c2e-6b1d-4e3f-9a7c-2d5b8e1f4a6c"
    deep = "/var/lib/kubelet/plugins_registry/" + "x" * 20
    path = registration_socket_path(registry_dir=deep, driver="very-long-driver-name.example.com",
                                    rolling_update_uid=uid)
    assert len(str(path)) <= 107
    assert path.name.endswith("-reg.sock") and uid not in path.name
    deeper = "/" + "y" * 70
    path = registration_socket_path(registry_dir=deeper, driver="very-long.example.com",
                                    rolling_update_uid=uid)
    assert path.name.startswith("dra-") and len(str(path)) <= 107
