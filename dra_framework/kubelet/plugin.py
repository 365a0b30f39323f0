"""One kubelet plugin: the sockets and gRPC servers of one driver, in the right order.

Start: the DRA socket (``<plugins dir>/<driver>/dra.sock``) is bound and serving before the
registration socket (``<registry dir>/<driver>-reg.sock``) appears, because the kubelet dials the
endpoint as soon as it sees the registration socket.  A stale socket file left by an earlier run at
our own path is removed first; socket files are created mode 0660 (never world-writable).

A start that fails half-way (the registration path is taken by something that is not a socket)
stops what it started and removes the DRA socket it created.

Stop: the registration socket goes first (the kubelet deregisters), then the DRA socket, each
removed from disk.  Only our own paths are touched: with ``rolling_update_uid`` both socket names
carry the pod UID, so an old and a new pod serve side by side and each removes only its own.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from ..errors import SetupError
from ..loader import Backend
from ..node.prepare import ClaimPreparer
from .servers import (
    DRA_V1,
    DRA_V1BETA1,
    HEALTH_V1ALPHA1,
    MAX_HEALTH_STREAMS,
    HealthService,
    RegistrationService,
    add_registration,
    add_services,
)

log = logging.getLogger(__name__)

DEFAULT_REGISTRY_DIR = "/var/lib/kubelet/plugins_registry"
DEFAULT_PLUGINS_DIR = "/var/lib/kubelet/plugins"
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the NUL


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def registration_socket_path(*, registry_dir: str | Path, driver: str,
                             rolling_update_uid: str = "") -> Path:
    """The registration socket path, shortened like the Go helper when it would not fit."""
    registry = Path(registry_dir)
    if not rolling_update_uid:
        return registry / f"{driver}-reg.sock"
    short = _b64(hashlib.sha256(rolling_update_uid.encode()).digest()[:8])
    shortest = _b64(hashlib.sha256(f"{driver}\x00{rolling_update_uid}".encode()).digest()[:16])
    candidates = [
        f"{driver}-{rolling_update_uid}-reg.sock",
        f"{driver}-{short}-reg.sock",
        f"dra-{shortest}-reg.sock",
    ]
    for name in candidates:
        path = registry / name
        if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
            return path
    raise SetupError(f"registration socket path under {registry} is longer than "
                     f"{MAX_SOCKET_PATH} bytes")


def dra_socket_path(*, plugin_dir: str | Path, rolling_update_uid: str = "") -> Path:
    name = f"dra-{rolling_update_uid}.sock" if rolling_update_uid else "dra.sock"
    path = Path(plugin_dir) / name
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise SetupError(f"DRA socket path {path} is longer than {MAX_SOCKET_PATH} bytes")
    return path


def _remove_socket(path: Path) -> None:
    """Remove a socket at our own path; refuse to delete anything that is not a socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SetupError(f"{path} exists and is not a socket; refusing to replace it")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _serve_unix(path: Path, server: grpc.Server) -> None:
    """Serve ``server`` on a fresh socket at ``path``; on failure, nothing is left serving."""
    _remove_socket(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    try:
        with _umask(0o117):
            server.add_insecure_port(f"unix://{path}")
            server.start()
        os.chmod(path, 0o660)
    except BaseException:
        server.stop(grace=0).wait()
        with contextlib.suppress(OSError, SetupError):
            _remove_socket(path)
        raise


class KubeletPlugin:
    """The DRA and registration servers of one backend, with their sockets."""

    def __init__(
        self,
        *,
        backend: Backend,
        preparer: ClaimPreparer,
        registry_dir: str | Path = DEFAULT_REGISTRY_DIR,
        plugins_dir: str | Path = DEFAULT_PLUGINS_DIR,
        rolling_update_uid: str = "",
        health_poll_interval: float = 1.0,
        max_workers: int = 8,
    ) -> None:
        self.backend = backend
        self.preparer = preparer
        driver = backend.info.driver_name
        self.driver = driver
        self.dra_socket = dra_socket_path(plugin_dir=Path(plugins_dir) / driver,
                                          rolling_update_uid=rolling_update_uid)
        self.registration_socket = registration_socket_path(
            registry_dir=registry_dir, driver=driver, rolling_update_uid=rolling_update_uid)
        self.stopping = threading.Event()
        self.health: HealthService | None = None
        versions = [DRA_V1, DRA_V1BETA1]
        if backend.serves_health and backend.health() is not None:
            self.health = HealthService(backend=backend, stopping=self.stopping,
                                        poll_interval=health_poll_interval)
            versions.append(HEALTH_V1ALPHA1)
        self.registration = RegistrationService(
            driver_name=driver, endpoint=str(self.dra_socket), versions=versions)
        # health streams hold a thread each: they get their own, on top of the calls'
        streams = MAX_HEALTH_STREAMS if self.health is not None else 0
        self._dra_server = grpc.server(ThreadPoolExecutor(
            max_workers=max_workers + streams, thread_name_prefix=f"dra-{driver}"))
        self._reg_server = grpc.server(ThreadPoolExecutor(
            max_workers=2, thread_name_prefix=f"reg-{driver}"))

    def start(self) -> None:
        """Serve the DRA socket, then create the registration socket."""
        add_services(self._dra_server, preparer=self.preparer, health=self.health)
        _serve_unix(self.dra_socket, self._dra_server)
        add_registration(self._reg_server, self.registration)
        try:
            _serve_unix(self.registration_socket, self._reg_server)
        except BaseException:
            self._dra_server.stop(grace=0).wait()
            with contextlib.suppress(OSError, SetupError):
                _remove_socket(self.dra_socket)
            raise
        log.info("kubelet plugin serving", extra={
            "driver": self.driver, "dra_socket": str(self.dra_socket),
            "registration_socket": str(self.registration_socket),
            "versions": self.registration.versions})

    def stop(self, *, grace: float = 5.0) -> None:
        """Remove the registration socket, then stop serving and remove the DRA socket."""
        self.stopping.set()
        if self.health is not None:
            self.health.stop()
        self._reg_server.stop(grace=0).wait()
        with contextlib.suppress(SetupError):
            _remove_socket(self.registration_socket)
        self._dra_server.stop(grace=grace).wait()
        with contextlib.suppress(SetupError):
            _remove_socket(self.dra_socket)
        log.info("kubelet plugin stopped", extra={"driver": self.driver})
