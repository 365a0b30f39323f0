"""Access to the Kubernetes API: client configuration and claim reads.

The ``kubernetes`` client is imported here, in ``rest`` and in the testing helpers only.
Claims are read as raw JSON through ``rest.KubeApi`` rather than as generated models: the
framework works on plain dicts, which keeps it independent of the client's generation (v37
models are strict Pydantic classes and drop unknown fields) and skips model construction on the
prepare path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config

from .apiversions import V1, ResourceApi
from .errors import ClaimMismatchError, SetupError, TransientApiError
from .models import ClaimRef
from .rest import ApiError, KubeApi


def load_api_client(*, kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient from ``kubeconfig`` if given, else in-cluster config, else ~/.kube/config."""
    cfg = client.Configuration()
    try:
        _load(cfg, kubeconfig)
    except (config.ConfigException, OSError, ValueError) as exc:
        where = kubeconfig or ("the in-cluster service account"
                               if os.environ.get("KUBERNETES_SERVICE_HOST") else "~/.kube/config")
        raise SetupError(f"cannot load the Kubernetes client configuration from {where}: "
                         f"{exc}") from exc
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, 16)
    return client.ApiClient(configuration=cfg)


def _load(cfg: client.Configuration, kubeconfig: str | None) -> None:
    if kubeconfig:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=cfg)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=cfg)
    else:
        config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]


class ClaimReader:
    """Reads ResourceClaims from ``resource.k8s.io/v1`` as plain dicts."""

    def __init__(self, *, api: KubeApi, resources: ResourceApi = V1) -> None:
        self._api = api
        self._resources = resources

    def get(self, claim: ClaimRef) -> Mapping[str, Any]:
        """The claim named by ``claim`` (by namespace/name); errors are claim errors."""
        url = self._resources.path("resourceclaims", namespace=claim.namespace,
                                   name=claim.name)
        try:
            return self._resources.to_v1(self._api.get(url), kind="ResourceClaim")
        except ApiError as exc:
            where = f"ResourceClaim {claim.namespace}/{claim.name}"
            if exc.code == 404:
                raise ClaimMismatchError(f"{where} not found in the API") from exc
            if exc.code in (401, 403):
                raise TransientApiError(
                    f"reading {where} is forbidden ({exc.code} {exc.reason}); "
                    "check the driver's RBAC") from exc
            raise TransientApiError(f"reading {where} failed: {exc}") from exc
