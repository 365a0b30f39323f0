"""Which ``resource.k8s.io`` version the cluster serves, and conversion at the edge.

The rest of the framework sees one model: ``resource.k8s.io/v1`` objects as plain dicts.
``ResourceApi`` names the version actually used and converts objects between it and v1 when
they cross the API boundary (``to_v1`` on what is read, ``from_v1`` on what is written).
"""

from __future__ import annotations

from typing import Any

import attrs

from .rest import path as rest_path

GROUP = "resource.k8s.io"


@attrs.frozen
class ResourceApi:
    """The served ``resource.k8s.io`` version and its conversions to and from v1."""

    version: str = "v1"

    @property
    def group_version(self) -> str:
        return f"{GROUP}/{self.version}"

    def path(self, resource: str, *, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        return rest_path(group_version=self.group_version, resource=resource,
                         namespace=namespace, name=name, subresource=subresource)

    def to_v1(self, obj: dict[str, Any]) -> dict[str, Any]:
        """An object (or a list) as served → its v1 form."""
        return obj

    def from_v1(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A v1 object → the form the served version expects."""
        return obj


V1 = ResourceApi("v1")
