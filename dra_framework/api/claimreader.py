"""Claim reads with a live GET: the claim source when the watch cache is off.

Claims are read as raw JSON through ``rest.KubeApi`` rather than as generated models: the
framework works on plain dicts, which keeps it independent of the client's generation (v37
models are strict Pydantic classes and drop unknown fields) and skips model construction on the
prepare path.  Errors are claim errors: a missing claim fails that claim, not the batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ClaimMismatchError, TransientApiError
from ..models import ClaimRef
from .apiversions import V1, ResourceApi
from .rest import ApiError, KubeApi


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
