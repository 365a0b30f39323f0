"""``--claim-source`` and its deprecated predecessor ``--claim-cache/--no-claim-cache``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from dra_framework.commands.cli import main
from dra_framework.commands.serve import ServeConfig
from dra_framework.errors import SetupError

BASE = ["serve", "--print-config", "--backend", "example", "--node-name", "n"]


def run(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [*BASE, *args], env=env or {})


def effective(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize(("args", "env", "source"), [
    pytest.param([], {}, "pods", id="default"),
    pytest.param(["--claim-source", "cluster"], {}, "cluster", id="cluster"),
    pytest.param(["--claim-source", "get"], {}, "get", id="get"),
    pytest.param([], {"DRA_FRAMEWORK_CLAIM_SOURCE": "get"}, "get", id="environment"),
    pytest.param(["--claim-source", "pods"], {"DRA_FRAMEWORK_CLAIM_SOURCE": "get"}, "pods",
                 id="flag-beats-environment"),
])
def test_the_claim_source(args: list[str], env: dict[str, str], source: str) -> None:
    result = run(args, env)
    assert effective(result)["claim_source"] == source
    assert "deprecated" not in result.output


@pytest.mark.parametrize(("args", "env", "source"), [
    pytest.param(["--no-claim-cache"], {}, "get", id="no-claim-cache"),
    pytest.param(["--claim-cache"], {}, "cluster", id="claim-cache"),
    pytest.param([], {"DRA_FRAMEWORK_CLAIM_CACHE": "false"}, "get", id="environment"),
    pytest.param(["--no-claim-cache", "--claim-source", "get"], {}, "get", id="agreeing"),
])
def test_the_deprecated_flag_still_works_and_warns(args: list[str], env: dict[str, str],
                                                   source: str) -> None:
    result = run(args, env)
    assert effective(result)["claim_source"] == source
    assert f"claim-cache is deprecated; use --claim-source {source}" in result.stderr


def test_the_config_file_names_the_source(tmp_path: Path) -> None:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("claim-source: cluster\n")
    assert effective(run(["--config", str(cfg)]))["claim_source"] == "cluster"
    cfg.write_text("claim-cache: false\n")
    assert effective(run(["--config", str(cfg)]))["claim_source"] == "get"


def test_contradicting_flags_are_refused() -> None:
    result = run(["--no-claim-cache", "--claim-source", "pods"])
    assert result.exit_code == 1
    assert "--claim-source pods contradicts the deprecated --no-claim-cache" in result.output


def test_an_unknown_source_is_refused() -> None:
    result = run(["--claim-source", "etcd"])
    assert result.exit_code == 2 and "'etcd' is not one of" in result.output


@pytest.mark.parametrize(("kw", "source"), [
    pytest.param({}, "pods", id="default"),
    pytest.param({"claim_cache": True}, "cluster", id="claim-cache"),
    pytest.param({"claim_cache": False}, "get", id="no-claim-cache"),
    pytest.param({"claim_source": "cluster"}, "cluster", id="claim-source"),
])
def test_serve_config_callers_of_either_name(kw: dict[str, Any], source: str) -> None:
    assert ServeConfig(backends=("example",), node_name="n", **kw).claim_source == source


def test_serve_config_refuses_an_unknown_source() -> None:
    with pytest.raises(SetupError, match="unknown claim source 'watch'"):
        ServeConfig(backends=("example",), node_name="n", claim_source="watch")
