"""Access to the Kubernetes API: client configuration and claim reads.

The ``kubernetes`` client is imported here and in the testing helpers only.  Claims are read as
raw JSON (``_preload_content=False``) rather than as generated models: the framework works on
plain dicts, which keeps it independent of the client's generation (v37 models are strict
Pydantic classes and drop unknown fields) and skips model construction on the prepare path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .errors import ClaimMismatchError, TransientApiError
from .models import ClaimRef


def load_api_client(*, kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient from ``kubeconfig`` if given, else in-cluster config, else ~/.kube/config."""
    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=cfg)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=cfg)
    else:
        config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, 16)
    return client.ApiClient(configuration=cfg)


class ClaimReader:
    """Reads ResourceClaims from ``resource.k8s.io/v1`` as plain dicts."""

    def __init__(self, *, api_client: client.ApiClient, timeout: float = 10.0) -> None:
        self._api = client.ResourceV1Api(api_client)
        self._timeout = timeout

    def get(self, claim: ClaimRef) -> Mapping[str, Any]:
        """The claim named by ``claim`` (by namespace/name); errors are claim errors."""
        try:
            resp: Any = self._api.read_namespaced_resource_claim(
                claim.name, claim.namespace, _preload_content=False,
                _request_timeout=self._timeout,
            )
            data: Mapping[str, Any] = json.loads(resp.data)
            return data
        except ApiException as exc:
            if exc.status == 404:
                raise ClaimMismatchError(
                    f"ResourceClaim {claim.namespace}/{claim.name} not found in the API"
                ) from exc
            if exc.status in (401, 403):
                raise TransientApiError(
                    f"reading ResourceClaim {claim.namespace}/{claim.name} is forbidden "
                    f"({exc.status} {exc.reason}); check the driver's RBAC"
                ) from exc
            raise TransientApiError(
                f"reading ResourceClaim {claim.namespace}/{claim.name} failed: "
                f"{exc.status} {exc.reason}"
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise TransientApiError(
                f"reading ResourceClaim {claim.namespace}/{claim.name} failed: {exc}"
            ) from exc
