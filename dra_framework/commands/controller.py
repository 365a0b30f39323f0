"""``dra-framework controller``: publishes a backend's cluster-wide pools, one replica at a time.

Some resources live outside any node (license seats, network-attached accelerators): their
pools are published with ``allNodes``, a ``nodeSelector`` or per-device node selection, not by
the kubelet plugin of one node.  The controller runs as a Deployment with several replicas;
a ``coordination.k8s.io`` Lease (``LeaderElector``) makes sure that only the leader writes.
When leadership is lost, publishing stops at once; the slices stay, and the next leader takes
them over (an unchanged inventory means it writes nothing).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ..api.apiversions import discover_patiently
from ..api.kubeconfig import load_api_client
from ..api.leader import LeaderElector
from ..api.publisher import SlicePublisher
from ..api.rest import KubeApi
from ..errors import SetupError
from ..loader import Backend
from ..models import BackendSettings

log = logging.getLogger(__name__)


@attrs.frozen
class ControllerConfig:
    """Settings of one ``controller`` process; see ``dra-framework controller --help``."""

    backend: str
    kubeconfig: str | None = None
    lease_namespace: str = "default"
    lease_name: str = ""
    identity: str | None = None
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    resync_interval: float = 60.0
    state_dir: str | None = None
    backend_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)


class Controller:
    """Leader election plus, while leading, a publisher of the backend's cluster pools."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.backend: Backend | None = None
        self.elector: LeaderElector | None = None
        self.publisher: SlicePublisher | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        cfg = self.config
        backend = Backend.load(cfg.backend)
        check_backend_has_pools(backend)
        state = Path(cfg.state_dir or Path(tempfile.gettempdir()) / "dra-framework-controller")
        backend.setup(BackendSettings(
            backend=cfg.backend, node_name="", state_dir=str(state / cfg.backend),
            options=dict(cfg.backend_options.get(cfg.backend, {})),
            inventory_changed=self._inventory_changed))
        self.backend = backend
        driver = backend.info.driver_name
        api = KubeApi(api_client=load_api_client(kubeconfig=cfg.kubeconfig))
        resource_api = discover_patiently(api, stop=self._stopping)

        def lead(stop: threading.Event) -> None:
            publisher = SlicePublisher(
                api=api, resource_api=resource_api, driver=driver, node_name=None,
                pools=backend.cluster_pools, resync_interval=cfg.resync_interval)
            self.publisher = publisher
            log.info("leading: publishing cluster pools", extra={"driver": driver})
            publisher.start()
            try:
                stop.wait()
            finally:
                publisher.stop()
                self.publisher = None
                log.info("no longer leading: stopped publishing", extra={"driver": driver})

        self.elector = LeaderElector(
            api=api, namespace=cfg.lease_namespace,
            name=cfg.lease_name or f"{driver}-controller", identity=cfg.identity,
            lease_duration=cfg.lease_duration, renew_deadline=cfg.renew_deadline,
            retry_period=cfg.retry_period, on_started_leading=lead)
        self.elector.start()

    def _inventory_changed(self) -> None:
        publisher = self.publisher
        if publisher is not None:
            publisher.trigger()

    def stop(self) -> None:
        """Stop publishing and release the lease so that a standby takes over at once."""
        self._stopping.set()
        if self.elector is not None:
            self.elector.stop()
            self.elector = None
        if self.backend is not None:
            try:
                self.backend.shutdown()
            except Exception:
                log.exception("backend shutdown failed", extra={"backend": self.backend.name})
            self.backend = None

    def run_until(self, stop: threading.Event) -> None:
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()


def check_backend_has_pools(backend: Backend) -> None:
    """A backend without ``dra_cluster_pools`` has nothing for the controller to publish."""
    if not backend.pm.hook.dra_cluster_pools.get_hookimpls():
        raise SetupError(f"backend {backend.name} publishes no cluster pools "
                         "(it does not implement dra_cluster_pools)")
