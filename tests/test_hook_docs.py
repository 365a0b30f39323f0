"""The hook reference in docs/hooks.md matches the hookspecs, and every hook is tested."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from dra_framework import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("dra_"))


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_reference_shows_exact_signature(hook: str) -> None:
    signature = str(inspect.signature(getattr(hookspecs, hook))).replace("'", "")
    assert f"{hook}{signature}" in (ROOT / "docs" / "hooks.md").read_text()


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring_contract(hook: str) -> None:
    assert len(inspect.getdoc(getattr(hookspecs, hook)) or "") > 80


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_a_test(hook: str) -> None:
    here = Path(__file__).resolve()
    users = [p for p in (ROOT / "tests").rglob("test_*.py")
             if p != here and hook in p.read_text()]
    assert users, f"no test exercises {hook}"
