"""Claim reads with a live GET: the claim source when the watch cache is off.

Claims are read as raw JSON through ``rest.KubeApi`` rather than as generated models: the
framework works on plain dicts, which keeps it independent of the client's generation (v37
models are strict Pydantic classes and drop unknown fields) and skips model construction on the
prepare path.  The answer is decoded whatever the claim's opaque parameters hold (nesting, long
integers: see ``jsondecode``); checking them is the preparer's business.

A read is one request (no retries: the kubelet retries the whole call) bounded by ``timeout``
in all, so that a hung API server cannot push a prepare past the kubelet's deadline.  Errors
are claim errors: a missing claim fails that claim, not the batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ClaimError, ClaimMismatchError, TransientApiError
from ..models import ClaimRef
from .apiversions import V1, ResourceApi
from .rest import ApiError, KubeApi


class ClaimReader:
    """Reads ResourceClaims from ``resource.k8s.io/v1`` as plain dicts; a ``ClaimSource``."""

    def __init__(self, *, api: KubeApi, resources: ResourceApi = V1) -> None:
        self._api = api
        self._resources = resources

    def lookup(self, claim: ClaimRef) -> Mapping[str, Any] | None:
        """Nothing is held in memory: every claim is read with ``get``."""
        return None

    def get(self, claim: ClaimRef, *, timeout: float | None = None) -> Mapping[str, Any]:
        """The claim named by ``claim`` (by namespace/name), read within ``timeout`` seconds
        (``None``: the ``KubeApi``'s own); errors are claim errors."""
        url = self._resources.path("resourceclaims", namespace=claim.namespace,
                                   name=claim.name)
        where = f"ResourceClaim {claim.namespace}/{claim.name}"
        try:
            obj = self._api.get(url, timeout=timeout)
        except ApiError as exc:
            if exc.code == 404:
                raise ClaimMismatchError(f"{where} not found in the API") from exc
            if exc.code in (401, 403):
                raise TransientApiError(
                    f"reading {where} is forbidden ({exc.code} {exc.reason}); "
                    "check the driver's RBAC") from exc
            if exc.reason == "Timeout":
                limit = self._api.timeout if timeout is None else timeout
                raise TransientApiError(
                    f"reading {where} timed out: the API server did not answer within "
                    f"{limit:g} s") from exc
            raise TransientApiError(f"reading {where} failed: {exc}") from exc
        try:
            return self._resources.to_v1(obj, kind="ResourceClaim")
        except RecursionError as exc:  # converting from a beta version copies the claim
            raise ClaimError(f"{where} nests too deeply to convert from "
                             f"{self._resources.group_version}") from exc
