"""Fixtures of the envtest suite: one real etcd + kube-apiserver per session.

Without ``$KUBEBUILDER_ASSETS`` (or with an unusable one) the ``control_plane`` fixture skips,
and with it every test here, with the reason from ``dra_framework.testing.envtest``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dra_framework.testing.envtest import EnvtestControlPlane, skip_reason

NAMESPACE = "dra-envtest"


@pytest.fixture(scope="session")
def control_plane() -> Iterator[EnvtestControlPlane]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with EnvtestControlPlane() as plane:
        yield plane


@pytest.fixture(scope="session")
def api_client(control_plane: EnvtestControlPlane) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` as the control plane's admin."""
    api = control_plane.api_client()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def namespace(api_client: Any) -> Iterator[str]:
    """A namespace of the suite's own: ``default`` may not exist yet right after start."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": NAMESPACE}}, _preload_content=False)
    yield NAMESPACE
    # No namespace controller runs, so it stays Terminating until the control plane stops.
    core.delete_namespace(NAMESPACE, _preload_content=False)
