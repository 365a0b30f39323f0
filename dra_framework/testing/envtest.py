"""A real etcd and kube-apiserver for integration tests, found the envtest way.

controller-runtime's ``setup-envtest`` puts the ``etcd`` and ``kube-apiserver`` binaries of one
Kubernetes release in a folder, and test suites find it through ``$KUBEBUILDER_ASSETS``.
:class:`EnvtestControlPlane` starts both from there, on free loopback ports, with all their files
(etcd data, certificates, keys, token file, logs, kubeconfig) in one temporary directory that is
removed on exit, so several control planes can run side by side and nothing outside is touched.

Shape of the cluster: one etcd member; a kube-apiserver with its own self-signed serving
certificate (clients skip TLS verification), a static bearer token for user ``admin`` in group
``system:masters``, RBAC, and no ServiceAccount admission (no controller-manager creates the
default service accounts).  No scheduler, controllers or kubelet run: tests write what they
would (for example a claim's ``status.allocation``) themselves.  DRA needs ``resource.k8s.io/v1``,
so a start against binaries older than 1.34 fails with :class:`UnsupportedServerError`.

Without usable binaries, :func:`skip_reason` says what is missing, so a suite skips instead of
failing.  Extra kube-apiserver flags come from ``$DRA_FRAMEWORK_ENVTEST_APISERVER_ARGS``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shlex
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from kubernetes import client

__all__ = [
    "APISERVER_ARGS_ENV",
    "ASSETS_ENV",
    "EnvtestControlPlane",
    "EnvtestError",
    "UnsupportedServerError",
    "apiserver_command",
    "assets_dir",
    "etcd_command",
    "etcd_supports_no_fsync",
    "extra_apiserver_args",
    "free_ports",
    "http_get",
    "skip_reason",
    "wait_until_ready",
    "write_kubeconfig",
    "write_service_account_key",
    "write_token_file",
]

ASSETS_ENV = "KUBEBUILDER_ASSETS"
APISERVER_ARGS_ENV = "DRA_FRAMEWORK_ENVTEST_APISERVER_ARGS"
BINARIES = ("etcd", "kube-apiserver")
LOOPBACK = "127.0.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "admin"
ADMIN_GROUP = "system:masters"
DRA_API = "resource.k8s.io/v1"
START_ATTEMPTS = 3  # a picked port can be taken before the binary binds it; then pick again
LOG_TAIL_LINES = 40
_NO_KEY_TOOL = ("neither the Python package 'cryptography' nor the 'openssl' command is "
                "available to generate the service-account signing key")


class EnvtestError(RuntimeError):
    """The control plane could not be started or used."""


class UnsupportedServerError(EnvtestError):
    """The kube-apiserver runs but does not serve ``resource.k8s.io/v1`` (older than 1.34)."""


class _AddressInUse(EnvtestError):
    """A binary exited because a port picked for it was taken meanwhile."""


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _key_tool() -> str | None:
    if importlib.util.find_spec("cryptography") is not None:
        return "cryptography"
    return "openssl" if shutil.which("openssl") else None


def _assets_problem(value: str) -> str | None:
    if not value:
        return (f"${ASSETS_ENV} is not set; point it at a folder holding the etcd and "
                "kube-apiserver binaries of Kubernetes 1.34 or newer (see docs/envtest.md)")
    folder = Path(value).expanduser()
    if not folder.is_dir():
        return f"${ASSETS_ENV}={value} is not a directory"
    missing = [name for name in BINARIES if not _executable(folder / name)]
    if missing:
        return f"${ASSETS_ENV}={value} holds no executable {' or '.join(missing)}"
    return None


def assets_dir() -> Path | None:
    """The folder named by ``$KUBEBUILDER_ASSETS`` if it holds both binaries, else None."""
    value = os.environ.get(ASSETS_ENV, "")
    return None if _assets_problem(value) else Path(value).expanduser()


def skip_reason() -> str | None:
    """None when a control plane can be started here, else a sentence saying what is missing."""
    problem = _assets_problem(os.environ.get(ASSETS_ENV, ""))
    return problem or (_NO_KEY_TOOL if _key_tool() is None else None)


def free_ports(count: int, *, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now (all bound at once, then freed)."""
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]


def write_service_account_key(*, private_key: Path, public_key: Path,
                              tool: str | None = None) -> None:
    """A fresh RSA-2048 key: PKCS#8 private key (mode 0600) and its PKIX public key, both PEM.

    ``tool`` is ``"cryptography"`` or ``"openssl"``; by default the first one available.
    """
    tool = tool or _key_tool()
    if tool == "cryptography":
        from cryptography.hazmat.primitives import (  # type: ignore[import-not-found, unused-ignore]
            serialization,
        )
        from cryptography.hazmat.primitives.asymmetric import (  # type: ignore[import-not-found, unused-ignore]
            rsa,
        )

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        private_key.touch(mode=0o600)
        private_key.write_bytes(private_pem)
        public_key.write_bytes(public_pem)
    elif tool == "openssl":
        for argv in (
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", str(private_key)],
            ["openssl", "pkey", "-in", str(private_key), "-pubout", "-out", str(public_key)],
        ):
            done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
            if done.returncode != 0:
                raise EnvtestError(f"{shlex.join(argv)} failed with status {done.returncode}: "
                                   f"{done.stderr.strip()}")
        private_key.chmod(0o600)
    else:
        raise EnvtestError(_NO_KEY_TOOL if tool is None else f"unknown key tool {tool!r}")


def write_token_file(path: Path, *, token: str, user: str = ADMIN_USER,
                     group: str = ADMIN_GROUP) -> None:
    """The ``--token-auth-file`` CSV: ``token,user,uid,"group"`` (the user name is the uid)."""
    if any(c in token for c in ',"\n') or not token:
        raise ValueError("the token must be non-empty, without commas, quotes or newlines")
    path.touch(mode=0o600)
    path.write_text(f'{token},{user},{user},"{group}"\n')


def write_kubeconfig(path: Path, *, server: str, token: str, name: str = "envtest") -> None:
    """A kubeconfig for ``server`` with bearer ``token`` and TLS verification off."""
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server,
                                                "insecure-skip-tls-verify": True}}],
        "users": [{"name": ADMIN_USER, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": ADMIN_USER}}],
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def etcd_command(binary: Path, *, data_dir: Path, client_port: int, peer_port: int,
                 no_fsync: bool = False) -> list[str]:
    """A single-member etcd on loopback; ``no_fsync`` trades durability for speed (3.5+)."""
    client_url, peer_url = f"http://{LOOPBACK}:{client_port}", f"http://{LOOPBACK}:{peer_port}"
    return [
        str(binary), f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=default={peer_url}",
        *(["--unsafe-no-fsync=true"] if no_fsync else []),
    ]


def apiserver_command(binary: Path, *, etcd_url: str, port: int, cert_dir: Path,
                      service_account_key: Path, service_account_public_key: Path,
                      token_file: Path, extra: Sequence[str] = ()) -> list[str]:
    """The kube-apiserver command line; an ``extra`` ``--name=value`` replaces that default,
    anything else in ``extra`` is appended as given."""
    flags = {
        "etcd-servers": etcd_url,
        "bind-address": LOOPBACK,
        # Without it the apiserver derives an address from the default route, which offline
        # machines lack; with it, "none" keeps the apiserver from writing loopback Endpoints.
        "advertise-address": LOOPBACK,
        "endpoint-reconciler-type": "none",
        "secure-port": str(port),
        "cert-dir": str(cert_dir),
        "service-account-issuer": SERVICE_ACCOUNT_ISSUER,
        "service-account-key-file": str(service_account_public_key),
        "service-account-signing-key-file": str(service_account_key),
        "token-auth-file": str(token_file),
        "authorization-mode": "RBAC",
        "service-cluster-ip-range": "10.0.0.0/24",
        "disable-admission-plugins": "ServiceAccount",
        "allow-privileged": "true",
    }
    rest: list[str] = []
    for arg in extra:
        name, eq, value = arg.partition("=")
        if arg.startswith("--") and eq:
            flags[name[2:]] = value
        else:
            rest.append(arg)
    return [str(binary), *(f"--{name}={value}" for name, value in flags.items()), *rest]


def extra_apiserver_args() -> list[str]:
    """``$DRA_FRAMEWORK_ENVTEST_APISERVER_ARGS`` split on spaces (shell quoting honoured)."""
    return shlex.split(os.environ.get(APISERVER_ARGS_ENV, ""))


def etcd_supports_no_fsync(binary: Path) -> bool:
    """Whether ``etcd --help`` lists ``--unsafe-no-fsync`` (etcd 3.5 and newer)."""
    try:
        done = subprocess.run([str(binary), "--help"], capture_output=True, text=True,
                              check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--unsafe-no-fsync" in done.stdout + done.stderr


def http_get(url: str, *, token: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
    """GET ``url``: (status, body) for any HTTP answer; OSError when there is none.  TLS
    certificates are not verified (the apiserver's own is self-signed)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read().decode(errors="replace")


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log, indented, after a header; "" without a log."""
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"\n(cannot read {path}: {exc})"
    body = "\n".join(f"    {line}" for line in text) or "    (empty)"
    return f"\nlast lines of {path}:\n{body}"


def wait_until_ready(url: str, *, what: str, deadline: float, token: str | None = None,
                     process: subprocess.Popen[bytes] | None = None, log: Path | None = None,
                     interval: float = 0.2) -> None:
    """Poll ``url`` until it answers 200, ``process`` exits or ``time.monotonic()`` passes
    ``deadline``; the error names the last answer and ends with the tail of ``log``."""
    last = "no answer yet"
    while True:
        if process is not None and process.poll() is not None:
            tail = log_tail(log)
            error = _AddressInUse if "address already in use" in tail else EnvtestError
            raise error(f"{what} exited with status {process.returncode} before it was "
                        f"ready{tail}")
        try:
            status, body = http_get(url, token=token,
                                    timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        except OSError as exc:
            last = str(getattr(exc, "reason", exc))
        else:
            if status == 200:
                return
            failed = [line for line in body.splitlines() if line.startswith("[-]")]
            last = f"HTTP {status}: {'; '.join(failed) or body.strip()[:300]}"
        if time.monotonic() >= deadline:
            raise EnvtestError(f"{what} was not ready at {url} in time (last answer: "
                               f"{last}){log_tail(log)}")
        time.sleep(interval)


def _stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class EnvtestControlPlane:
    """etcd + kube-apiserver from ``assets`` (default ``$KUBEBUILDER_ASSETS``); see module doc.

    Use it as a context manager, or ``start()`` and ``stop()``.  ``token`` is the bearer token of
    ``admin`` (``system:masters``); once started, ``url`` (``https://127.0.0.1:PORT``),
    ``etcd_url``, ``kubeconfig_path``, ``workdir`` (the temp dir) and ``server_version`` are set.
    """

    def __init__(self, *, assets: str | os.PathLike[str] | None = None,
                 start_timeout: float = 60.0, stop_timeout: float = 10.0,
                 apiserver_args: Sequence[str] | None = None) -> None:
        value = os.environ.get(ASSETS_ENV, "") if assets is None else os.fspath(assets)
        problem = _assets_problem(value)
        if problem:
            raise EnvtestError(problem)
        self.assets = Path(value).expanduser()
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.apiserver_args = (extra_apiserver_args() if apiserver_args is None
                               else list(apiserver_args))
        self.token = secrets.token_urlsafe(32)
        self.server_version = ""
        self._workdir: Path | None = None
        self._ready = False
        self._url = self._etcd_url = ""
        self._processes: list[subprocess.Popen[bytes]] = []

    def _running(self) -> Path:
        if self._workdir is None or not self._ready:
            raise EnvtestError("the control plane is not running; use start() or a with block")
        return self._workdir

    @property
    def workdir(self) -> Path:
        return self._running()

    @property
    def url(self) -> str:
        self._running()
        return self._url

    @property
    def etcd_url(self) -> str:
        self._running()
        return self._etcd_url

    @property
    def kubeconfig_path(self) -> Path:
        return self._running() / "kubeconfig"

    def api_client(self) -> client.ApiClient:
        """A new ``kubernetes.client.ApiClient`` as ``admin`` (close it when done)."""
        from dra_framework.api.kubeconfig import load_api_client

        return load_api_client(kubeconfig=str(self.kubeconfig_path))

    def __enter__(self) -> EnvtestControlPlane:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Start etcd, then kube-apiserver; wait for both; check DRA; write the kubeconfig."""
        if self._workdir is not None:
            raise EnvtestError("the control plane is already started")
        workdir = self._workdir = Path(tempfile.mkdtemp(prefix="dra-envtest-"))
        try:
            deadline = time.monotonic() + self.start_timeout
            (workdir / "certs").mkdir(mode=0o700)
            write_service_account_key(private_key=workdir / "sa.key",
                                      public_key=workdir / "sa.pub")
            write_token_file(workdir / "tokens.csv", token=self.token)
            no_fsync = etcd_supports_no_fsync(self.assets / "etcd")
            for attempt in range(1, START_ATTEMPTS + 1):
                try:
                    self._start_processes(workdir, deadline=deadline, no_fsync=no_fsync)
                    break
                except _AddressInUse:
                    self._stop_processes()
                    if attempt == START_ATTEMPTS:
                        raise
            self.server_version = self._read_version()
            self._check_dra_api()
            write_kubeconfig(workdir / "kubeconfig", server=self._url, token=self.token)
            self._ready = True
        except BaseException:
            self.stop()
            raise

    def _spawn(self, workdir: Path, name: str,
               argv: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, cwd=workdir)
        self._processes.append(process)
        return process, log

    def _start_processes(self, workdir: Path, *, deadline: float, no_fsync: bool) -> None:
        client_port, peer_port, secure_port = free_ports(3)
        data_dir = workdir / "etcd-data"
        shutil.rmtree(data_dir, ignore_errors=True)  # a failed attempt may have left a member
        self._etcd_url = f"http://{LOOPBACK}:{client_port}"
        etcd, etcd_log = self._spawn(workdir, "etcd", etcd_command(
            self.assets / "etcd", data_dir=data_dir, client_port=client_port,
            peer_port=peer_port, no_fsync=no_fsync))
        wait_until_ready(f"{self._etcd_url}/health", what="etcd", deadline=deadline,
                         process=etcd, log=etcd_log)
        self._url = f"https://{LOOPBACK}:{secure_port}"
        apiserver, apiserver_log = self._spawn(workdir, "kube-apiserver", apiserver_command(
            self.assets / "kube-apiserver", etcd_url=self._etcd_url, port=secure_port,
            cert_dir=workdir / "certs", service_account_key=workdir / "sa.key",
            service_account_public_key=workdir / "sa.pub", token_file=workdir / "tokens.csv",
            extra=self.apiserver_args))
        wait_until_ready(f"{self._url}/readyz", what="kube-apiserver", deadline=deadline,
                         token=self.token, process=apiserver, log=apiserver_log)

    def _get_json(self, path: str) -> tuple[int, Any]:
        status, body = http_get(f"{self._url}{path}", token=self.token)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None

    def _read_version(self) -> str:
        status, data = self._get_json("/version")
        version = data.get("gitVersion") if status == 200 and isinstance(data, dict) else None
        return version if isinstance(version, str) else "(unknown version)"

    def _check_dra_api(self) -> None:
        status, data = self._get_json(f"/apis/{DRA_API}")
        resources = data.get("resources") if status == 200 and isinstance(data, dict) else None
        if not any(isinstance(r, dict) and r.get("name") == "resourceclaims"
                   for r in resources or ()):
            raise UnsupportedServerError(
                f"kube-apiserver {self.server_version} from {self.assets} does not serve "
                f"{DRA_API} resourceclaims (GET /apis/{DRA_API}: HTTP {status}); DRA needs "
                f"Kubernetes 1.34 or newer: point ${ASSETS_ENV} at 1.34+ binaries"
            )

    def _stop_processes(self) -> None:
        while self._processes:
            _stop_process(self._processes.pop(), self.stop_timeout)  # kube-apiserver first

    def stop(self) -> None:
        """Terminate kube-apiserver, then etcd (SIGTERM; SIGKILL after ``stop_timeout``), and
        remove the temp dir.  Idempotent."""
        try:
            self._stop_processes()
        finally:
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir, self._ready, self._url, self._etcd_url = None, False, "", ""
