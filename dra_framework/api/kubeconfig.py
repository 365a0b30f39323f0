"""Kubernetes client configuration: kubeconfig file, in-cluster service account, or the default.

The ``kubernetes`` client is imported here, in ``rest`` and in the testing helpers only: the
framework reads and writes the API as raw JSON through ``rest.KubeApi`` and uses the official
client for its connection, authentication and configuration loading.
"""

from __future__ import annotations

import os

from kubernetes import client, config

from ..errors import SetupError


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

