"""Dependencies point one way, and heavy or hardware imports stay in the few modules that
need them (the STYLE contract, checked on the source)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "dra_framework"
NVIDIA = ROOT / "plugins" / "nvidia_gpu" / "dra_nvidia_gpu"

ALLOWED = {
    "kubernetes": {"kube.py", "rest.py", "testing/envtest.py", "testing/fakeapi.py",
                   "testing/harness.py"},
    "grpc": {"servers.py", "plugin.py", "testing/kubelet.py"},
    "urllib3": {"rest.py", "claimcache.py"},
}
# What each layer of the core must not import (CLI → servers/publisher → state → cdi/models).
LAYERS = {
    "models.py": {"checkpoint", "prepare", "servers", "plugin", "serve", "cli", "publisher"},
    "cdi.py": {"checkpoint", "prepare", "servers", "plugin", "serve", "cli", "publisher"},
    "checkpoint.py": {"prepare", "servers", "plugin", "serve", "cli", "publisher"},
    "prepare.py": {"servers", "plugin", "serve", "cli", "publisher"},
    "publisher.py": {"prepare", "servers", "plugin", "serve", "cli"},
    "servers.py": {"serve", "cli", "publisher"},
}


def imports(path: Path) -> set[str]:
    """Top-level names of absolute imports, and local module names of relative ones."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found |= {node.module.split(".")[0]} if node.module else {
                    a.name for a in node.names}
    return found


def core_modules() -> list[Path]:
    return [p for p in sorted(CORE.rglob("*.py")) if "_proto" not in p.parts]


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_never_imports_a_backend_distribution(path: Path) -> None:
    assert "dra_nvidia_gpu" not in imports(path)


@pytest.mark.parametrize("library", sorted(ALLOWED))
def test_heavy_imports_stay_where_they_belong(library: str) -> None:
    users = {str(p.relative_to(CORE)) for p in core_modules() if library in imports(p)}
    assert users <= ALLOWED[library], f"{library} imported by {sorted(users - ALLOWED[library])}"


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_dependencies_point_one_way(module: str) -> None:
    found = imports(CORE / module) & LAYERS[module]
    assert not found, f"{module} imports {sorted(found)}"


def test_pynvml_only_in_the_nvml_module() -> None:
    users = {p.name for p in sorted(NVIDIA.rglob("*.py")) if "pynvml" in imports(p)}
    assert users == {"nvml.py"}
