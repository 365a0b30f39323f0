"""Assembling and running the kubelet plugins of one ``serve`` process.

``ServeConfig`` is everything ``dra-framework serve`` was told (flags, environment, config file).
``Node`` builds, for each selected backend, the chain backend → claim reader → preparer (with
start-up recovery) → kubelet plugin, starts them, and stops them in reverse order.  It is also
how tests and ``dra_framework.testing`` run plugins in-process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .errors import SetupError
from .kube import ClaimReader, load_api_client
from .loader import Backend
from .models import BackendSettings
from .plugin import DEFAULT_PLUGINS_DIR, DEFAULT_REGISTRY_DIR, KubeletPlugin
from .prepare import ClaimPreparer, ClaimSource
from .rest import KubeApi

log = logging.getLogger(__name__)

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


@attrs.frozen
class ServeConfig:
    """Settings of one ``serve`` process; see ``dra-framework serve --help``."""

    backends: tuple[str, ...]
    node_name: str
    kubeconfig: str | None = None
    registry_dir: str = DEFAULT_REGISTRY_DIR
    plugins_dir: str = DEFAULT_PLUGINS_DIR
    cdi_root: str = "/var/run/cdi"
    state_dir: str | None = None
    rolling_update_uid: str = ""
    backend_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    boot_id_file: str = BOOT_ID_FILE
    health_poll_interval: float = 1.0

    def state_root(self) -> Path:
        return Path(self.state_dir or self.plugins_dir)


def read_boot_id(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SetupError(f"cannot read the boot id from {path}: {exc}") from exc


class Node:
    """The running plugins of one process (one per backend)."""

    def __init__(self, config: ServeConfig, *, claims: ClaimSource | None = None) -> None:
        if not config.backends:
            raise SetupError("no backend selected; use --backend NAME")
        if not config.node_name:
            raise SetupError("the node name is not set; use --node-name or $NODE_NAME")
        self.config = config
        self._claims = claims
        self.backends: list[Backend] = []
        self.preparers: list[ClaimPreparer] = []
        self.plugins: list[KubeletPlugin] = []

    def _claim_source(self) -> ClaimSource:
        if self._claims is None:
            self._claims = ClaimReader(api=KubeApi(api_client=load_api_client(
                kubeconfig=self.config.kubeconfig)))
        return self._claims

    def start(self) -> None:
        """Load, set up, recover and start every backend; on failure stop what started."""
        cfg = self.config
        boot_id = read_boot_id(cfg.boot_id_file)
        try:
            drivers: set[str] = set()
            for name in cfg.backends:
                backend = Backend.load(name)
                backend_state = cfg.state_root() / "dra-framework" / name
                backend.setup(BackendSettings(
                    backend=name, node_name=cfg.node_name, state_dir=str(backend_state),
                    options=dict(cfg.backend_options.get(name, {}))))
                self.backends.append(backend)
                driver = backend.info.driver_name
                if driver in drivers:
                    raise SetupError(f"two backends use the driver name {driver!r}")
                drivers.add(driver)
                preparer = ClaimPreparer(
                    backend=backend, claims=self._claim_source(),
                    state_dir=cfg.state_root() / driver, cdi_root=cfg.cdi_root, boot_id=boot_id)
                self.preparers.append(preparer)
                preparer.recover()
                plugin = KubeletPlugin(
                    backend=backend, preparer=preparer, registry_dir=cfg.registry_dir,
                    plugins_dir=cfg.plugins_dir, rolling_update_uid=cfg.rolling_update_uid,
                    health_poll_interval=cfg.health_poll_interval)
                plugin.start()
                self.plugins.append(plugin)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop plugins (sockets removed), then shut backends down.  Slices are left alone."""
        for plugin in reversed(self.plugins):
            plugin.stop()
        for preparer in self.preparers:
            preparer.close()
        for backend in reversed(self.backends):
            try:
                backend.shutdown()
            except Exception:
                log.exception("backend shutdown failed", extra={"backend": backend.name})
        self.plugins.clear()
        self.preparers.clear()
        self.backends.clear()

    def run_until(self, stop: threading.Event) -> None:
        """Start, wait for ``stop``, then stop."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()


def parse_backend_options(values: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["example.devices=4"]`` → ``{"example": {"devices": "4"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        backend, dot, option = key.partition(".")
        if not sep or not dot or not backend or not option:
            raise SetupError(f"invalid --backend-option {item!r}; expected BACKEND.KEY=VALUE")
        out.setdefault(backend, {})[option] = value
    return out
