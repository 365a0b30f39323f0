"""Assembling and running the kubelet plugins of one ``serve`` process.

``ServeConfig`` is everything ``dra-framework serve`` was told (flags, environment, config file).
``Node`` discovers the served ``resource.k8s.io`` version, then builds for each selected backend
the chain backend → claim source → preparer (with start-up recovery) → kubelet plugin, plus the
claim status writer and the node's ResourceSlice publisher; it stops them in reverse order.  It
is also how tests and ``dra_framework.testing`` run plugins in-process.

The claim source (``--claim-source``, docs/claim-sources.md): ``pods`` (default) is one
``PodClaimCache`` for the process, fed by a watch of this node's pods, with a view per driver;
``cluster`` is a ``ClaimCache`` per driver, a watch of every claim of the cluster; ``get`` is a
live read per claim.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..api.apiversions import V1, ResourceApi, discover_patiently
from ..api.claimcache import ClaimCache
from ..api.claimreader import ClaimReader
from ..api.claimstatus import ClaimStatusWriter
from ..api.kubeconfig import load_api_client
from ..api.podclaims import PodClaimCache
from ..api.publisher import SlicePublisher
from ..api.rest import KubeApi
from ..api.slices import NodePool
from ..errors import SetupError
from ..kubelet.plugin import DEFAULT_PLUGINS_DIR, DEFAULT_REGISTRY_DIR, KubeletPlugin
from ..loader import Backend
from ..models import BackendSettings
from ..node.ports import ClaimSource
from ..node.prepare import ClaimPreparer

log = logging.getLogger(__name__)

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
CLAIM_SOURCES = ("pods", "cluster", "get")
"""``--claim-source`` values: this node's pods, a cluster-wide claim watch, a GET per claim."""


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
    publish: bool = True
    resync_interval: float = 60.0
    claim_source: str = ""
    """One of ``CLAIM_SOURCES``; empty: ``pods``, unless ``claim_cache`` says otherwise."""
    claim_cache: bool | None = None
    """Deprecated: True is ``claim_source="cluster"``, False is ``"get"``."""

    def __attrs_post_init__(self) -> None:
        legacy = {None: "", True: "cluster", False: "get"}[self.claim_cache]
        source = self.claim_source or legacy or "pods"
        if source not in CLAIM_SOURCES:
            raise SetupError(f"unknown claim source {source!r}; expected one of "
                             f"{', '.join(CLAIM_SOURCES)}")
        if legacy and legacy != source:
            raise SetupError(f"--claim-source {source} contradicts the deprecated "
                             f"--{'' if self.claim_cache else 'no-'}claim-cache")
        object.__setattr__(self, "claim_source", source)

    def state_root(self) -> Path:
        return Path(self.state_dir or self.plugins_dir)


def read_boot_id(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SetupError(f"cannot read the boot id from {path}: {exc}") from exc


class Node:
    """The running plugins of one process (one per backend), with their API-side companions.

    Per backend: claim source → preparer (checkpoint, CDI) → kubelet plugin, a claim status
    writer and a ResourceSlice publisher for the node-local pool.  ``claims`` replaces the
    claim sources and the API plane with a given one (tests without an API server).
    """

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
        self.claim_sources: list[ClaimCache | PodClaimCache] = []
        """The claim sources that keep claims in memory (each has ``wait_synced``, ``holds``,
        ``cached``, ``hits``, ``misses``): the ``PodClaimCache``, or a ``ClaimCache`` per
        backend; none with ``--claim-source get``."""
        self.pod_claims: PodClaimCache | None = None
        self.status_writers: list[ClaimStatusWriter] = []
        self.publishers: list[SlicePublisher] = []
        self.api: KubeApi | None = None
        self.resource_api: ResourceApi = V1

    def _connect(self, stop: threading.Event | None) -> None:
        if self._claims is None and self.api is None:
            self.api = KubeApi(api_client=load_api_client(kubeconfig=self.config.kubeconfig))
            self.resource_api = discover_patiently(self.api, stop=stop)
            log.info("using the resource API", extra={
                "group_version": self.resource_api.group_version})

    def start(self, *, stop: threading.Event | None = None) -> None:
        """Load, set up, recover and start every backend; on failure stop what started.

        An API server that cannot be reached yet is waited for (until ``stop`` is set).
        """
        cfg = self.config
        boot_id = read_boot_id(cfg.boot_id_file)
        try:
            # local mistakes (names, options) are reported before the API is contacted
            loaded = [(name, Backend.load(name)) for name in cfg.backends]
            drivers: set[str] = set()
            triggers: list[_Trigger] = []
            for name, backend in loaded:
                triggers.append(_Trigger())
                backend_state = cfg.state_root() / "dra-framework" / name
                backend.setup(BackendSettings(
                    backend=name, node_name=cfg.node_name, state_dir=str(backend_state),
                    options=dict(cfg.backend_options.get(name, {})),
                    inventory_changed=triggers[-1]))
                self.backends.append(backend)
                driver = backend.info.driver_name
                if driver in drivers:
                    raise SetupError(f"two backends use the driver name {driver!r}")
                drivers.add(driver)
            self._connect(stop)
            if self.api is not None and cfg.claim_source == "pods":
                self.pod_claims = PodClaimCache(
                    api=self.api, node_name=cfg.node_name, drivers=sorted(drivers),
                    resources=self.resource_api).start()
                self.claim_sources.append(self.pod_claims)
            for backend, changed in zip(self.backends, triggers, strict=True):
                self._start_backend(backend, boot_id=boot_id, changed=changed)
        except BaseException:
            self.stop()
            raise

    def _start_backend(self, backend: Backend, *, boot_id: str, changed: _Trigger) -> None:
        cfg, driver = self.config, backend.info.driver_name
        claims, status = self._claims, None
        if self.api is not None:
            status = ClaimStatusWriter(api=self.api, driver=driver,
                                       resources=self.resource_api)
            self.status_writers.append(status)
            if self.pod_claims is not None:
                claims = self.pod_claims.for_driver(driver)
            elif cfg.claim_source == "cluster":
                cache = ClaimCache(api=self.api, driver=driver, node_name=cfg.node_name,
                                   resources=self.resource_api).start()
                self.claim_sources.append(cache)
                claims = cache
            else:
                claims = ClaimReader(api=self.api, resources=self.resource_api)
        assert claims is not None
        preparer = ClaimPreparer(
            backend=backend, claims=claims, state_dir=cfg.state_root() / driver,
            cdi_root=cfg.cdi_root, boot_id=boot_id, observer=status)
        self.preparers.append(preparer)
        preparer.recover()
        plugin = KubeletPlugin(
            backend=backend, preparer=preparer, registry_dir=cfg.registry_dir,
            plugins_dir=cfg.plugins_dir, rolling_update_uid=cfg.rolling_update_uid,
            health_poll_interval=cfg.health_poll_interval)
        plugin.start()
        self.plugins.append(plugin)
        if self.api is not None and cfg.publish:
            publisher = SlicePublisher(
                api=self.api, resource_api=self.resource_api, driver=driver,
                node_name=cfg.node_name, resync_interval=cfg.resync_interval,
                pools=lambda: NodePool(devices=backend.inventory(),
                                       counter_sets=backend.counter_sets()))
            changed.target = publisher.trigger
            publisher.start()
            self.publishers.append(publisher)

    @property
    def caches(self) -> list[ClaimCache | PodClaimCache]:
        """``claim_sources``, by its former name."""
        return self.claim_sources

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until every watching claim source has made its first list (of claims, or of
        this node's pods); for tests and benchmarks."""
        return all(source.wait_synced(timeout) for source in self.claim_sources)

    def stop(self) -> None:
        """Stop plugins (sockets removed), then the API plane, then backends.

        ResourceSlices are left as they are: deleting them would break a rolling update, and
        the kubelet removes them itself when no plugin of the driver comes back.
        """
        for plugin in reversed(self.plugins):
            plugin.stop()
        for publisher in self.publishers:
            publisher.stop()
        for preparer in self.preparers:
            preparer.close()
        for writer in self.status_writers:
            writer.stop()
        for source in self.claim_sources:
            source.stop()
        for backend in reversed(self.backends):
            try:
                backend.shutdown()
            except Exception:
                log.exception("backend shutdown failed", extra={"backend": backend.name})
        for items in (self.plugins, self.publishers, self.preparers, self.status_writers,
                      self.claim_sources, self.backends):
            items.clear()
        self.pod_claims = None

    def run_until(self, stop: threading.Event) -> None:
        """Start, wait for ``stop``, then stop."""
        self.start(stop=stop)
        try:
            stop.wait()
        finally:
            self.stop()


class _Trigger:
    """``BackendSettings.inventory_changed``: forwards to the publisher once it exists."""

    def __init__(self) -> None:
        self.target: Callable[[], None] | None = None

    def __call__(self) -> None:
        if self.target is not None:
            self.target()


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
