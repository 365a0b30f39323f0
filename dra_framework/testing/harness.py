"""A whole node in one process: fake API server, real plugin, kubelet-wire client.

``PluginHarness`` is what a backend author's end-to-end test needs::

    with PluginHarness(root=tmp_path, backends=("my-backend",)) as h:
        claim = h.add_claim(allocated_claim(name="c", results=[Result("gpu", "dev-0")]))
        result = h.connect("my.driver.example.com").prepare([claim])[claim.uid]

The plugin is the production stack (``dra_framework.commands.serve.Node``), reading claims through
the real ``kubernetes`` client from ``FakeApiServer`` over HTTP and answering over real unix
sockets.
``restart`` stops and starts the plugin on the same directories, as a pod restart would.
``claim_source`` picks the plugin's claim source as ``--claim-source`` does (default ``pods``:
add the pod that uses a claim with ``add_pod(bound_pod(claims=[...]))`` and the claim is read
ahead; without one, each claim is read when prepared).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..commands.serve import Node, ServeConfig
from ..models import ClaimRef
from .fakeapi import FakeApiServer
from .kubelet import KubeletClient, PluginConnection


def wait_for(what: str, check: Callable[[], Any], *, timeout: float = 10.0,
             interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; return that, or fail naming ``what``.

    Tests of a running plugin use it for what happens in the background (slices published,
    claim status written)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class PluginHarness:
    """A fake API server, one plugin process-equivalent and a kubelet, under ``root``."""

    def __init__(
        self,
        *,
        root: str | Path,
        backends: tuple[str, ...] = ("example",),
        node_name: str = "node-1",
        backend_options: Mapping[str, Mapping[str, Any]] | None = None,
        api: FakeApiServer | None = None,
        boot_id: str = "00000000-0000-0000-0000-000000000001",
        rolling_update_uid: str = "",
        cdi_root: str | Path | None = None,
        claim_cache: bool | None = None,
        publish: bool = True,
        claim_source: str = "",
    ) -> None:
        self.root = Path(root)
        self.registry_dir = self.root / "plugins_registry"
        self.plugins_dir = self.root / "plugins"
        self.cdi_root = Path(cdi_root) if cdi_root else self.root / "cdi"
        self.boot_id_file = self.root / "boot_id"
        self.kubeconfig = self.root / "kubeconfig"
        self._own_api = api is None
        self.api = api or FakeApiServer()
        self.config = ServeConfig(
            backends=backends, node_name=node_name, kubeconfig=str(self.kubeconfig),
            registry_dir=str(self.registry_dir), plugins_dir=str(self.plugins_dir),
            cdi_root=str(self.cdi_root), boot_id_file=str(self.boot_id_file),
            backend_options=dict(backend_options or {}), rolling_update_uid=rolling_update_uid,
            health_poll_interval=0.05, claim_source=claim_source, claim_cache=claim_cache,
            publish=publish,
        )
        self.boot_id = boot_id
        self.node: Node | None = None
        self.kubelet = KubeletClient(self.registry_dir)
        self._connections: list[PluginConnection] = []

    def __enter__(self) -> PluginHarness:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._own_api:
            self.api.start()
        self.api.write_kubeconfig(self.kubeconfig)
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.kubelet.close()
        if self._own_api:
            self.api.stop()

    def start(self, *, boot_id: str | None = None) -> None:
        """Start the plugin (recovering its checkpoint) with ``boot_id`` as the node's boot."""
        if boot_id is not None:
            self.boot_id = boot_id
        self.boot_id_file.write_text(self.boot_id + "\n")
        if self.api.get("nodes", self.config.node_name) is None:
            self.api.seed({"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": self.config.node_name, "uid": str(uuid.uuid4())}})
        self.node = Node(self.config)
        self.node.start()
        self.node.wait_ready(10)

    def stop(self) -> None:
        for conn in self._connections:
            with contextlib.suppress(Exception):
                conn.close()
        self._connections.clear()
        if self.node is not None:
            self.node.stop()
            self.node = None

    def restart(self, *, boot_id: str | None = None) -> None:
        self.stop()
        self.start(boot_id=boot_id)

    def connect(self, driver_name: str = "gpu.example.com", *,
                timeout: float = 10.0) -> PluginConnection:
        """Register the driver's plugin like a kubelet and return the connection."""
        conn = self.kubelet.register(driver_name, timeout=timeout)
        assert conn is not None
        self._connections.append(conn)
        return conn

    def add_claim(self, obj: Mapping[str, Any]) -> ClaimRef:
        """Store a claim object in the API server; return its identity for the kubelet."""
        self.api.seed(dict(obj))
        meta = obj["metadata"]
        return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])

    def add_pod(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store a Pod object (``claims.bound_pod``) in the API server, bound to its node as
        the scheduler leaves it; returns the stored object.  The plugin's default claim source
        reads the claims it names from then on."""
        return self.api.seed(dict(obj))

    def delete_claim(self, claim: ClaimRef) -> None:
        """Delete a claim through the API as the control plane would: finalizer, then object."""
        from kubernetes import client

        api = client.ResourceV1Api(self.api.api_client())
        api.patch_namespaced_resource_claim(
            claim.name, claim.namespace, {"metadata": {"finalizers": None}})
        api.delete_namespaced_resource_claim(claim.name, claim.namespace)

    def cdi_specs(self) -> list[Path]:
        """The CDI spec files currently under the CDI root."""
        return sorted(self.cdi_root.glob("*.json")) if self.cdi_root.exists() else []

    def state_dir(self, driver_name: str = "gpu.example.com") -> Path:
        return self.plugins_dir / driver_name

    def backend_state_dir(self, backend: str = "example") -> Path:
        return self.plugins_dir / "dra-framework" / backend
