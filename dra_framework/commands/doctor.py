"""``dra-framework doctor``: check that a cluster and its credentials can run a driver.

It asks the API server, with the credentials the driver would use, what a driver needs:
which ``resource.k8s.io`` versions are served (and the one the framework would pick), whether
this node's ResourceSlices of each driver exist and their pools are complete, and whether the
RBAC rules allow what the driver does (SelfSubjectAccessReview).  Each finding is one line;
a check that passes says ``ok``; one that fails says ``missing`` or ``incomplete``, or
``cannot check`` with the reason.

Run it with the driver's service account (``kubectl exec`` into the driver pod) for the RBAC
lines to mean anything.  The server version is informational; every other check that fails
or cannot be made turns the exit code to 1.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import click

from ..api.apiversions import GROUP, ResourceApi, choose, dra_off_message, served_versions
from ..api.rest import ApiError, KubeApi
from ..errors import SetupError

SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


@attrs.frozen
class Permission:
    """One verb on one resource (and subresource) of one API group."""

    verb: str
    resource: str
    subresource: str = ""
    group: str = GROUP

    def __str__(self) -> str:
        sub = f"/{self.subresource}" if self.subresource else ""
        where = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {where}{sub}"


DRIVER_PERMISSIONS: tuple[Permission, ...] = (
    Permission("get", "resourceclaims"),
    *(Permission(verb, "pods", group="") for verb in ("list", "watch")),
    *(Permission(verb, "resourceclaims", "status") for verb in ("get", "update", "patch")),
    *(Permission(verb, "resourceslices")
      for verb in ("get", "list", "watch", "create", "update", "delete")),
    Permission("get", "nodes", group=""),
)
"""What a node-local driver does with the API with the default claim source (``pods``; see
``rbac/node-plugin.yaml``)."""


def run_doctor(*, api: KubeApi, node_name: str, drivers: Sequence[str],
               out: Callable[[str], None]) -> bool:
    """Run every check, writing one line per finding to ``out``; True when all passed."""
    try:
        _server_version(api, out)
    except SetupError as exc:
        out(str(exc))
        return False
    resource_api = _resource_versions(api, out)
    ok = resource_api is not None
    ok &= _slices(api, resource_api, node_name, drivers, out)
    ok &= _rbac(api, DRIVER_PERMISSIONS, out)
    out("all checks passed" if ok else "some checks failed")
    return ok


def _server_version(api: KubeApi, out: Callable[[str], None]) -> None:
    try:
        version = api.get("/version")
    except ApiError as exc:
        if exc.code == 0:
            raise SetupError(f"cannot reach the Kubernetes API server at "
                             f"{api.api_client.configuration.host}: {exc.message}") from exc
        out(f"server version: cannot check: {exc}")
        return
    out(f"server version: {version.get('gitVersion') or 'unknown'}")


def _resource_versions(api: KubeApi, out: Callable[[str], None]) -> ResourceApi | None:
    try:
        served = served_versions(api)
    except SetupError as exc:
        out(f"{GROUP} versions: cannot check: {exc}")
        return None
    out(f"{GROUP} versions served: {', '.join(served) or 'none'}")
    try:
        resource_api = choose(served)
    except SetupError:
        out(f"{GROUP} version used: none: {dra_off_message(served)}")
        return None
    out(f"{GROUP} version used: {resource_api.version}")
    return resource_api


def _slices(api: KubeApi, resource_api: ResourceApi | None, node_name: str,
            drivers: Sequence[str], out: Callable[[str], None]) -> bool:
    if not drivers:
        out("slices: no --driver given, not checked")
        return True
    if resource_api is None:
        out(f"slices: cannot check: {GROUP} is not usable")
        return False
    if not node_name:
        out("slices: cannot check: no node name (--node-name or $NODE_NAME)")
        return False
    ok = True
    for driver in drivers:
        what = f"slices of {driver} on {node_name}"
        try:
            listed = api.list(resource_api.path("resourceslices"),
                              field_selector=f"spec.nodeName={node_name},spec.driver={driver}")
        except ApiError as exc:
            out(f"{what}: cannot check: {exc}")
            ok = False
            continue
        items = resource_api.to_v1(listed).get("items") or []
        if not items:
            out(f"{what}: missing (no slices)")
            ok = False
            continue
        pools, complete = _pools(items)
        count = f"{len(items)} slice{'s' if len(items) > 1 else ''}"
        out(f"{what}: {'ok' if complete else 'incomplete'} ({count}; {pools})")
        ok &= complete
    return ok


def _pools(items: Sequence[dict[str, Any]]) -> tuple[str, bool]:
    """``pool P: generation G, n/N slices`` for each pool, and whether all are complete."""
    by_pool: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        pool = (item.get("spec") or {}).get("pool") or {}
        by_pool[str(pool.get("name", ""))].append(pool)
    parts, complete = [], True
    for name, pools in sorted(by_pool.items()):
        newest = max(int(p.get("generation") or 0) for p in pools)
        current = [p for p in pools if int(p.get("generation") or 0) == newest]
        expected = max(int(p.get("resourceSliceCount") or 0) for p in current)
        text = f"pool {name}: generation {newest}, {len(current)}/{expected} slices"
        if len(current) < len(pools):
            text += f" (+{len(pools) - len(current)} of older generations)"
        parts.append(text)
        complete &= len(current) == expected
    return "; ".join(parts), complete


def _rbac(api: KubeApi, permissions: Sequence[Permission],
          out: Callable[[str], None]) -> bool:
    ok = True
    for permission in permissions:
        attributes = {"group": permission.group, "resource": permission.resource,
                      "verb": permission.verb}
        if permission.subresource:
            attributes["subresource"] = permission.subresource
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": attributes}}
        try:
            answer = api.create(SSAR_PATH, review)
        except ApiError as exc:
            if exc.code == 404:
                out(f"rbac: cannot check: the server does not serve "
                    f"SelfSubjectAccessReview ({exc})")
                return False
            out(f"rbac {permission}: cannot check: {exc}")
            ok = False
            continue
        allowed = bool((answer.get("status") or {}).get("allowed"))
        out(f"rbac {permission}: {'ok' if allowed else 'missing'}")
        ok &= allowed
    return ok


@click.command("doctor")
@click.option("--kubeconfig", envvar="DRA_FRAMEWORK_KUBECONFIG", show_envvar=True,
              help="Kubeconfig file [default: in-cluster config, else ~/.kube/config].")
@click.option("--node-name", envvar=["DRA_FRAMEWORK_NODE_NAME", "NODE_NAME"], show_envvar=True,
              default="", help="Node whose ResourceSlices to check [default: $NODE_NAME].")
@click.option("--driver", "drivers", multiple=True,
              help="Driver whose ResourceSlices on the node to check (repeatable).")
def doctor(kubeconfig: str | None, node_name: str, drivers: tuple[str, ...]) -> None:
    """Check the cluster and these credentials: API versions, this node's slices, RBAC."""
    from ..api.kubeconfig import load_api_client

    try:
        api_client = load_api_client(kubeconfig=kubeconfig)
    except SetupError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from exc
    with api_client:
        ok = run_doctor(api=KubeApi(api_client=api_client), node_name=node_name,
                        drivers=drivers, out=click.echo)
    raise SystemExit(0 if ok else 1)
