"""The node plugin's ClusterRole holds the rules docs/rbac.md explains, and no more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "dra_framework" / "rbac" / "node-plugin.yaml"
DOC = REPO / "docs" / "rbac.md"

EXPECTED = {
    ("resource.k8s.io", "resourceclaims"): {"get", "list", "watch"},
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


def test_controller_roles_cover_slices_and_its_lease() -> None:
    docs = list(yaml.safe_load_all((REPO / "dra_framework" / "rbac" / "controller.yaml")
                                   .read_text()))
    by_kind = {d["kind"]: granted(d) for d in docs}
    assert by_kind["ClusterRole"] == {
        ("resource.k8s.io", "resourceslices"): {"get", "list", "watch", "create", "update",
                                                "delete"}}
    assert by_kind["Role"] == {("coordination.k8s.io", "leases"): {"get", "create", "update"}}
    assert "controller.yaml" in DOC.read_text()
