"""``dra-framework serve`` settings from flags, environment and config file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dra_framework.commands.cli import main


def effective(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["serve", "--print-config", *args], env=env or {},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def test_defaults() -> None:
    cfg = effective(["--backend", "example"], env={"NODE_NAME": "n1"})
    assert cfg["backends"] == ["example"]
    assert cfg["node_name"] == "n1"
    assert cfg["registry_dir"] == "/var/lib/kubelet/plugins_registry"
    assert cfg["plugins_dir"] == "/var/lib/kubelet/plugins"
    assert cfg["cdi_root"] == "/var/run/cdi"
    assert cfg["state_dir"] is None and cfg["metrics_address"] == ""
    assert cfg["log_format"] == "text"


def test_every_flag_from_environment() -> None:
    env = {
        "DRA_FRAMEWORK_BACKEND": "example other",
        "DRA_FRAMEWORK_BACKEND_OPTION": "example.devices=4",
        "DRA_FRAMEWORK_NODE_NAME": "node-env",
        "DRA_FRAMEWORK_KUBECONFIG": "/k",
        "DRA_FRAMEWORK_KUBELET_REGISTRY_DIR": "/reg",
        "DRA_FRAMEWORK_KUBELET_PLUGINS_DIR": "/plug",
        "DRA_FRAMEWORK_CDI_ROOT": "/cdi",
        "DRA_FRAMEWORK_STATE_DIR": "/state",
        "DRA_FRAMEWORK_ROLLING_UPDATE_UID": "pod-uid",
        "DRA_FRAMEWORK_METRICS_ADDRESS": ":9400",
        "DRA_FRAMEWORK_LOG_FORMAT": "json",
    }
    cfg = effective([], env=env)
    assert cfg["backends"] == ["example", "other"]
    assert cfg["backend_options"] == {"example": {"devices": "4"}}
    assert (cfg["node_name"], cfg["kubeconfig"], cfg["registry_dir"], cfg["plugins_dir"],
            cfg["cdi_root"], cfg["state_dir"], cfg["rolling_update_uid"],
            cfg["metrics_address"], cfg["log_format"]) == (
        "node-env", "/k", "/reg", "/plug", "/cdi", "/state", "pod-uid", ":9400", "json")


def test_config_file_and_precedence(tmp_path: Path) -> None:
    cfg_file = tmp_path / "serve.yaml"
    cfg_file.write_text(
        "backend: example\n"
        "node-name: from-file\n"
        "cdi_root: /file/cdi\n"
        "log-format: json\n"
        "backend-options:\n  example:\n    devices: 2\n")
    cfg = effective(["--config", str(cfg_file)])
    assert cfg["backends"] == ["example"] and cfg["node_name"] == "from-file"
    assert cfg["cdi_root"] == "/file/cdi" and cfg["log_format"] == "json"
    assert cfg["backend_options"] == {"example": {"devices": "2"}}
    # environment beats the file, the command line beats both
    cfg = effective(["--config", str(cfg_file), "--cdi-root", "/flag/cdi"],
                    env={"DRA_FRAMEWORK_NODE_NAME": "from-env",
                         "DRA_FRAMEWORK_CDI_ROOT": "/env/cdi"})
    assert cfg["node_name"] == "from-env" and cfg["cdi_root"] == "/flag/cdi"


@pytest.mark.parametrize("args,message", [
    pytest.param(["--backend", "nope", "--node-name", "n"], "unknown backend 'nope'",
                 id="unknown-backend"),
    pytest.param(["--node-name", "n"], "no backend selected", id="no-backend"),
    pytest.param(["--backend", "example"], "node name is not set", id="no-node-name"),
    pytest.param(["--backend", "example", "--node-name", "n", "--backend-option", "devices=2"],
                 "expected BACKEND.KEY=VALUE", id="bad-backend-option"),
    pytest.param(["--backend", "example", "--node-name", "n", "--backend-option",
                  "example.devices=lots"], "options of backend example", id="bad-option-value"),
])
def test_setup_errors_exit_1_with_message(args: list[str], message: str,
                                          tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.write_text("b\n")
    result = CliRunner().invoke(main, ["serve", *args, "--boot-id-file", str(boot),
                                       "--kubelet-plugins-dir", str(tmp_path / "p"),
                                       "--kubelet-registry-dir", str(tmp_path / "r"),
                                       "--kubeconfig", str(tmp_path / "none")], env={})
    assert result.exit_code == 1
    assert message in result.output


def test_bad_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(bad)])
    assert result.exit_code == 2 and "expected a mapping" in result.output


def test_backend_options_from_the_config_file_keep_their_yaml_meaning(tmp_path: Path) -> None:
    from dra_framework.backends.example import ExampleOptions
    from dra_framework.convert import structure_options

    cfg_file = tmp_path / "serve.yaml"
    cfg_file.write_text(
        "backend: example\nnode-name: n\n"
        "backend-options:\n  example: {devices: 3, health: false, driver-name: '1.10',"
        " prepare-delay: 0.5}\n")
    options = effective(["--config", str(cfg_file)])["backend_options"]["example"]
    decoded = structure_options(options, ExampleOptions, backend="example")
    assert (decoded.devices, decoded.health, decoded.driver_name, decoded.prepare_delay) == (
        3, False, "1.10", 0.5)


def test_backend_options_that_are_not_a_mapping_are_refused(tmp_path: Path) -> None:
    cfg_file = tmp_path / "serve.yaml"
    cfg_file.write_text("backend: example\nbackend-options: {example: [devices]}\n")
    result = CliRunner().invoke(main, ["serve", "--print-config", "--config", str(cfg_file)])
    assert result.exit_code == 2 and "backend-options must map each backend" in result.output
