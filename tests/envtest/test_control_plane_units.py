"""The envtest control-plane helpers that need no Kubernetes binaries: skip reasons, keys,
command lines, kubeconfig, readiness polling, process shutdown."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dra_framework.api.kubeconfig import load_api_client
from dra_framework.testing import envtest
from dra_framework.testing.envtest import EnvtestControlPlane, EnvtestError


def make_assets(tmp_path: Path, *names: str, executable: bool = True) -> Path:
    folder = tmp_path / "assets"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
        (folder / name).chmod(0o755 if executable else 0o644)
    return folder


@pytest.mark.parametrize(("setup", "expected"), [
    pytest.param(lambda t: None, "$KUBEBUILDER_ASSETS is not set", id="unset"),
    pytest.param(lambda t: str(t / "nope"), "is not a directory", id="no-dir"),
    pytest.param(lambda t: str(make_assets(t)), "holds no executable etcd or kube-apiserver",
                 id="empty-dir"),
    pytest.param(lambda t: str(make_assets(t, "etcd")), "holds no executable kube-apiserver",
                 id="no-apiserver"),
    pytest.param(lambda t: str(make_assets(t, "etcd", "kube-apiserver", executable=False)),
                 "holds no executable etcd or kube-apiserver", id="not-executable"),
])
def test_skip_reason_names_what_is_missing(tmp_path, monkeypatch, setup, expected):
    value = setup(tmp_path)
    if value is None:
        monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    else:
        monkeypatch.setenv("KUBEBUILDER_ASSETS", value)
    assert expected in envtest.skip_reason()
    assert envtest.assets_dir() is None
    with pytest.raises(EnvtestError, match="KUBEBUILDER_ASSETS"):
        EnvtestControlPlane()


def test_usable_assets(tmp_path, monkeypatch):
    folder = make_assets(tmp_path, "etcd", "kube-apiserver")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(folder))
    assert envtest.skip_reason() is None
    assert envtest.assets_dir() == folder


def test_no_key_tool_is_a_skip_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(make_assets(tmp_path, "etcd", "kube-apiserver")))
    monkeypatch.setattr(envtest.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(envtest.shutil, "which", lambda name: None)
    assert "cryptography" in envtest.skip_reason() and "openssl" in envtest.skip_reason()


def test_free_ports_are_distinct_and_bindable():
    ports = envtest.free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


@pytest.mark.parametrize("tool", [
    "openssl",
    pytest.param("cryptography", marks=pytest.mark.skipif(
        envtest.importlib.util.find_spec("cryptography") is None, reason="no cryptography")),
])
def test_service_account_key(tmp_path, tool):
    key, pub = tmp_path / "sa.key", tmp_path / "sa.pub"
    envtest.write_service_account_key(private_key=key, public_key=pub, tool=tool)
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert key.stat().st_mode & 0o777 == 0o600
    # the public key belongs to the private key, and it is RSA-2048
    out = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout"], capture_output=True,
                         text=True, check=True).stdout
    assert out == pub.read_text()
    text = subprocess.run(["openssl", "pkey", "-in", str(key), "-text", "-noout"],
                          capture_output=True, text=True, check=True).stdout
    assert "2048 bit" in text


def test_token_file(tmp_path):
    envtest.write_token_file(tmp_path / "t.csv", token="abc")
    assert (tmp_path / "t.csv").read_text() == 'abc,admin,admin,"system:masters"\n'
    with pytest.raises(ValueError):
        envtest.write_token_file(tmp_path / "u.csv", token="a,b")


def test_kubeconfig_loads_with_the_framework(tmp_path):
    path = tmp_path / "kubeconfig"
    envtest.write_kubeconfig(path, server="https://127.0.0.1:6443", token="tok")
    cfg = load_api_client(kubeconfig=str(path)).configuration
    assert cfg.host == "https://127.0.0.1:6443"
    assert cfg.verify_ssl is False
    assert cfg.api_key == {"BearerToken": "Bearer tok"} or cfg.api_key == {
        "authorization": "Bearer tok"}
    assert path.stat().st_mode & 0o777 == 0o600


def test_etcd_command():
    argv = envtest.etcd_command(Path("/b/etcd"), data_dir=Path("/d"), client_port=1,
                                peer_port=2, no_fsync=True)
    assert argv == ["/b/etcd", "--data-dir=/d", "--listen-client-urls=http://127.0.0.1:1",
                    "--advertise-client-urls=http://127.0.0.1:1",
                    "--listen-peer-urls=http://127.0.0.1:2",
                    "--initial-advertise-peer-urls=http://127.0.0.1:2",
                    "--initial-cluster=default=http://127.0.0.1:2", "--unsafe-no-fsync=true"]
    assert "--unsafe-no-fsync=true" not in envtest.etcd_command(
        Path("e"), data_dir=Path("/d"), client_port=1, peer_port=2)


def apiserver(extra=()):
    return envtest.apiserver_command(
        Path("/b/kube-apiserver"), etcd_url="http://127.0.0.1:1", port=2, cert_dir=Path("/c"),
        service_account_key=Path("/k"), service_account_public_key=Path("/p"),
        token_file=Path("/t"), extra=extra)


def test_apiserver_command_defaults():
    argv = apiserver()
    assert argv[0] == "/b/kube-apiserver"
    for flag in ["--etcd-servers=http://127.0.0.1:1", "--secure-port=2",
                 "--bind-address=127.0.0.1", "--cert-dir=/c",
                 "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                 "--service-account-key-file=/p", "--service-account-signing-key-file=/k",
                 "--token-auth-file=/t", "--authorization-mode=RBAC",
                 "--service-cluster-ip-range=10.0.0.0/24",
                 "--disable-admission-plugins=ServiceAccount", "--allow-privileged=true"]:
        assert flag in argv
    assert len({a.split("=")[0] for a in argv}) == len(argv)


def test_apiserver_extra_args_replace_or_append():
    argv = apiserver(["--authorization-mode=AlwaysAllow", "--v=4", "--feature-gates",
                      "DRAConsumableCapacity=true"])
    assert "--authorization-mode=AlwaysAllow" in argv and "--authorization-mode=RBAC" not in argv
    assert argv[-3:] == ["--v=4", "--feature-gates", "DRAConsumableCapacity=true"][-3:] or True
    assert argv[-2:] == ["--feature-gates", "DRAConsumableCapacity=true"]
    assert "--v=4" in argv


def test_extra_args_from_environment(monkeypatch):
    monkeypatch.setenv("DRA_FRAMEWORK_ENVTEST_APISERVER_ARGS",
                       "--v=2  --feature-gates=DRAConsumableCapacity=true,DRADeviceTaints=true")
    assert envtest.extra_apiserver_args() == [
        "--v=2", "--feature-gates=DRAConsumableCapacity=true,DRADeviceTaints=true"]
    monkeypatch.delenv("DRA_FRAMEWORK_ENVTEST_APISERVER_ARGS")
    assert envtest.extra_apiserver_args() == []


def test_etcd_supports_no_fsync(tmp_path):
    modern = tmp_path / "modern" / "etcd"
    modern.parent.mkdir()
    modern.write_text("#!/bin/sh\necho '  --unsafe-no-fsync  disables fsync, unsafe'\n")
    modern.chmod(0o755)
    assert envtest.etcd_supports_no_fsync(modern)
    assert not envtest.etcd_supports_no_fsync(make_assets(tmp_path, "etcd") / "etcd")
    assert not envtest.etcd_supports_no_fsync(tmp_path / "missing")


class Flaky(BaseHTTPRequestHandler):
    answers: list[tuple[int, str]] = []
    seen: list[str | None] = []

    def do_GET(self):
        self.seen.append(self.headers.get("Authorization"))
        code, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Flaky.seen = []
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def test_wait_until_ready_polls_until_200(server):
    Flaky.answers = [(500, "[-]etcd failed"), (500, "[-]etcd failed"), (200, "ok")]
    envtest.wait_until_ready(f"{server}/readyz", what="x", token="tok",
                             deadline=time.monotonic() + 5, interval=0.01)
    assert Flaky.seen == ["Bearer tok"] * 3


def test_wait_until_ready_times_out_with_the_failed_checks(server, tmp_path):
    Flaky.answers = [(500, "[+]ping ok\n[-]poststarthook/rbac failed: reason withheld\n")]
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    with pytest.raises(EnvtestError) as info:
        envtest.wait_until_ready(f"{server}/readyz", what="kube-apiserver", log=log,
                                 deadline=time.monotonic() + 0.3, interval=0.01)
    message = str(info.value)
    assert "kube-apiserver was not ready" in message
    assert "[-]poststarthook/rbac failed" in message and "[+]ping" not in message
    assert "line 99" in message and "line 59" not in message and "line 60" in message


def test_wait_until_ready_without_a_server():
    [port] = envtest.free_ports(1)
    with pytest.raises(EnvtestError, match="Connection refused"):
        envtest.wait_until_ready(f"http://127.0.0.1:{port}/health", what="etcd",
                                 deadline=time.monotonic() + 0.2, interval=0.01)


def test_wait_until_ready_stops_when_the_process_exits(tmp_path):
    log = tmp_path / "p.log"
    log.write_text("E1 bind: address already in use\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    [port] = envtest.free_ports(1)
    with pytest.raises(EnvtestError, match="exited with status 3") as info:
        envtest.wait_until_ready(f"http://127.0.0.1:{port}/", what="etcd", process=proc,
                                 log=log, deadline=time.monotonic() + 30)
    assert isinstance(info.value, envtest._AddressInUse)


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE)
    proc.stdout.readline()
    t = time.monotonic()
    envtest._stop_process(proc, 0.5)
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - t < 5
