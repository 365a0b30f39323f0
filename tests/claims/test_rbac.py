"""The node plugin's ClusterRoles hold the rules docs/rbac.md explains, and no more; each
claim source's requests, made through the plugin, are all covered by the roles it needs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from dra_framework.testing.claims import bound_pod
from dra_framework.testing.fakeapi import FakeApiServer, Request
from dra_framework.testing.harness import PluginHarness, wait_for

from .test_cache import gpu_claim

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "dra_framework" / "rbac" / "node-plugin.yaml"
CLAIM_WATCH = REPO / "dra_framework" / "rbac" / "node-plugin-claim-watch.yaml"
DOC = REPO / "docs" / "rbac.md"

EXPECTED = {
    ("resource.k8s.io", "resourceclaims"): {"get"},
    ("", "pods"): {"list", "watch"},
    ("resource.k8s.io", "resourceclaims/status"): {"get", "update", "patch"},
    ("resource.k8s.io", "resourceclaims/driver"): {"associated-node:update",
                                                   "associated-node:patch"},
    ("resource.k8s.io", "resourceslices"): {"get", "list", "watch", "create", "update",
                                            "delete"},
    ("", "nodes"): {"get"},
}


@pytest.fixture(scope="module")
def role() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(ROLE.read_text())
    return doc


def granted(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, "no names or URLs"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_is_a_cluster_role(role: dict[str, Any]) -> None:
    assert (role["apiVersion"], role["kind"]) == ("rbac.authorization.k8s.io/v1", "ClusterRole")
    assert role["metadata"]["name"] == "dra-framework-node-plugin"


@pytest.mark.parametrize(("group", "resource"), list(EXPECTED), ids=[r for _, r in EXPECTED])
def test_rule_is_granted(role: dict[str, Any], group: str, resource: str) -> None:
    assert granted(role).get((group, resource)) == EXPECTED[(group, resource)]


def test_nothing_else_is_granted(role: dict[str, Any]) -> None:
    rules = granted(role)
    assert set(rules) == set(EXPECTED)
    assert not any("*" in verbs for verbs in rules.values())


def test_every_rule_is_explained() -> None:
    text = DOC.read_text()
    for (_, resource), verbs in EXPECTED.items():
        rows = [line for line in text.splitlines() if line.startswith(f"| `{resource}`")]
        assert rows, f"{resource} is not in docs/rbac.md"
        for verb in verbs:
            assert any(f"`{verb}`" in row.split("|")[2] for row in rows), (
                f"{resource} {verb} is not explained")


def test_the_claim_watch_is_an_optional_role_of_its_own() -> None:
    role = yaml.safe_load(CLAIM_WATCH.read_text())
    assert (role["kind"], role["metadata"]["name"]) == (
        "ClusterRole", "dra-framework-node-plugin-claim-watch")
    assert granted(role) == {("resource.k8s.io", "resourceclaims"): {"list", "watch"}}
    text = DOC.read_text()
    assert "node-plugin-claim-watch.yaml" in text and "--claim-source cluster" in text
    rows = [line for line in text.splitlines() if line.startswith("| `resourceclaims`")]
    assert any("`list`, `watch`" in row.split("|")[2] for row in rows)


def asked(request: Request) -> tuple[str, str, str] | None:
    """The RBAC verb, API group and resource of a request (None: a discovery document)."""
    parts = [p for p in request.path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) > 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    if not rest:
        return None
    resource = "/".join([rest[0], *rest[2:3]])
    named = len(rest) > 1
    verb = {"PUT": "update", "PATCH": "patch", "POST": "create", "DELETE": "delete"}.get(
        request.method, "get" if named else "watch" if "watch=1" in request.query else "list")
    return verb, group, resource


@pytest.mark.parametrize(("source", "roles"), [
    pytest.param("pods", [ROLE], id="pods"),
    pytest.param("get", [ROLE], id="get"),
    pytest.param("cluster", [ROLE, CLAIM_WATCH], id="cluster"),
])
def test_what_each_claim_source_asks_for_is_granted(source: str, roles: list[Path]) -> None:
    allowed: dict[tuple[str, str], set[str]] = {}
    for role in roles:
        for rule, verbs in granted(yaml.safe_load(role.read_text())).items():
            allowed.setdefault(rule, set()).update(verbs)
    base = os.environ.get("DRA_TEST_TMP", "/tmp")
    with tempfile.TemporaryDirectory(prefix="dra-", dir=base) as root, \
            FakeApiServer(bookmark_interval=None) as server, \
            PluginHarness(root=root, api=server, claim_source=source,
                          backend_options={"example": {"status": "true"}}) as h:
        claim = h.add_claim(gpu_claim("c"))
        h.add_pod(bound_pod(claims=["c"]))
        conn = h.connect()
        assert conn.prepare([claim])[claim.uid].error == ""
        wait_for("the claim status", lambda: (server.get("resourceclaims", "c") or {})
                 .get("status", {}).get("devices"))
        assert conn.unprepare([claim])[claim.uid] == ""
        requests = {a for r in list(server.requests) if (a := asked(r)) is not None}
    assert requests, "the plugin asked for nothing"
    missing = {a for a in requests if a[0] not in allowed.get((a[1], a[2]), set())}
    assert missing == set()
    if source == "pods":
        assert ("watch", "", "pods") in requests


def test_controller_roles_cover_slices_and_its_lease() -> None:
    docs = list(yaml.safe_load_all((REPO / "dra_framework" / "rbac" / "controller.yaml")
                                   .read_text()))
    by_kind = {d["kind"]: granted(d) for d in docs}
    assert by_kind["ClusterRole"] == {
        ("resource.k8s.io", "resourceslices"): {"get", "list", "watch", "create", "update",
                                                "delete"}}
    assert by_kind["Role"] == {("coordination.k8s.io", "leases"): {"get", "create", "update"}}
    assert "controller.yaml" in DOC.read_text()
