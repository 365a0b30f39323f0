"""The tree shows the architecture: what import-linter's contracts (pyproject.toml, run by
``scripts/test``) cannot check about it.

The import rules themselves (layers, the command layer's single outside user, backends on the
contract only, where ``kubernetes`` / ``grpc`` / ``urllib3`` / ``pynvml`` may be imported) are
import-linter contracts.  Here: every layer named in the contract is a package on disk with a
docstring saying what it owns and what it may import, and every module opens with its design
docstring.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "dra_framework"
NVIDIA = ROOT / "plugins" / "nvidia_gpu" / "dra_nvidia_gpu"


def layers_contract() -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    found = [c for c in config["contracts"] if c["type"] == "layers"
             and c.get("containers") == ["dra_framework"]]
    assert len(found) == 1, "pyproject.toml has no layers contract for dra_framework"
    contract: dict[str, object] = found[0]
    return contract


def layer_packages() -> list[str]:
    """The subpackages named as layers (the lowest layer is the contract's top-level modules)."""
    layers = layers_contract()["layers"]
    assert isinstance(layers, list)
    names = [n.strip() for layer in layers for n in layer.replace(":", "|").split("|")]
    return [n for n in names if (CORE / n).is_dir()]


def docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def test_the_contract_names_every_layer_of_the_tree() -> None:
    contract = layers_contract()
    assert contract.get("exhaustive") is True
    assert set(layer_packages()) == {"commands", "kubelet", "api", "node"}


@pytest.mark.parametrize("package", ["commands", "kubelet", "api", "node"])
def test_each_layer_says_what_it_owns_and_may_import(package: str) -> None:
    text = docstring(CORE / package / "__init__.py")
    assert "Owns" in text and "May import" in text, f"{package}/__init__.py: {text!r}"


def source_modules() -> list[Path]:
    paths = [*CORE.rglob("*.py"), *NVIDIA.rglob("*.py")]
    return [p for p in sorted(paths) if "_proto" not in p.relative_to(ROOT).parts]


@pytest.mark.parametrize("path", source_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_opens_with_its_design_docstring(path: Path) -> None:
    assert docstring(path), f"{path.relative_to(ROOT)} has no module docstring"
