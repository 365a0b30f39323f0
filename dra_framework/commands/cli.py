"""The ``dra-framework`` command line.

Every ``serve`` flag can also come from an environment variable (``DRA_FRAMEWORK_<FLAG>``, shown
in ``--help``) or from a YAML config file (``--config``, keys named like the flags, with dashes or
underscores).  Precedence: command line, then environment, then config file, then default.
Backend options are ``--backend-option BACKEND.KEY=VALUE`` or, in the file, a mapping
``backend-options: {BACKEND: {KEY: VALUE}}``.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import click
import yaml

from .. import logs, metrics
from ..errors import DraError, SetupError
from ..kubelet.plugin import DEFAULT_PLUGINS_DIR, DEFAULT_REGISTRY_DIR
from ..loader import Backend, installed_backends
from .controller import Controller, ControllerConfig
from .doctor import doctor
from .serve import BOOT_ID_FILE, CLAIM_SOURCES, Node, ServeConfig, parse_backend_options

log = logging.getLogger("dra_framework")


def _load_config(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if not value:
        return
    try:
        data = yaml.safe_load(Path(value).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"cannot read {value}: {exc}") from exc
    if not isinstance(data, dict):
        raise click.BadParameter(f"{value}: expected a mapping of option names to values")
    defaults: dict[str, Any] = {}
    for key, val in data.items():
        name = str(key).replace("-", "_")
        if name == "backend_options":
            if not isinstance(val, dict) or not all(isinstance(o, dict) for o in val.values()):
                raise click.BadParameter(
                    f"{value}: backend-options must map each backend to a mapping of options")
            defaults["backend_option"] = [
                f"{backend}.{k}={_option_text(v)}"
                for backend, opts in val.items() for k, v in opts.items()
            ]
        elif name in ("backend", "backends"):
            defaults["backends"] = [val] if isinstance(val, str) else list(val)
        else:
            defaults[name] = val
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def _option_text(value: Any) -> str:
    """A backend option from the config file as the text a flag would carry: a string as it
    is, anything else in YAML, which the backend's option decoding reads back the same."""
    if isinstance(value, str):
        return value
    return str(yaml.safe_dump(value, default_flow_style=True, width=2**16)).strip().removesuffix(
        "\n...").strip()


def _env(name: str) -> str:
    return "DRA_FRAMEWORK_" + name.upper().replace("-", "_")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Kubernetes DRA drivers built from pluggable backends."""


_COMMON = [
    click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
                 callback=_load_config, envvar=_env("config"), show_envvar=True,
                 help="YAML file with default values for these options."),
    click.option("--backend-option", "backend_option", multiple=True,
                 envvar=_env("backend_option"), show_envvar=True,
                 help="BACKEND.KEY=VALUE option for a backend (repeatable)."),
    click.option("--kubeconfig", envvar=_env("kubeconfig"), show_envvar=True,
                 help="Kubeconfig file [default: in-cluster config, else ~/.kube/config]."),
    click.option("--metrics-address", default="", envvar=_env("metrics_address"),
                 show_envvar=True, help="HOST:PORT for Prometheus /metrics (empty: off)."),
    click.option("--log-format", type=click.Choice(["json", "text"]), default="text",
                 show_default=True, envvar=_env("log_format"), show_envvar=True),
    click.option("-v", "--verbose", "verbosity", count=True, help="More logs (-v debug)."),
]


def common_options(fn: Any) -> Any:
    """The options every long-running command shares (config file, API, logs, metrics)."""
    for option in reversed(_COMMON):
        fn = option(fn)
    return fn


def _run(make: Callable[[], Node | Controller], *, metrics_address: str) -> None:
    """Build and run a ``Node`` or ``Controller`` until SIGTERM/SIGINT; errors exit 1."""
    stop = threading.Event()

    def _on_signal(signum: int, _: Any) -> None:
        log.info("signal received, stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        if metrics_address:
            metrics.serve(metrics_address)
        make().run_until(stop)
    except DraError as exc:
        log.error(str(exc))
        raise SystemExit(1) from exc


@main.command()
@common_options
@click.option("--backend", "backends", multiple=True, envvar=_env("backend"), show_envvar=True,
              help="Backend to serve (repeat for several); see `dra-framework backends`.")
@click.option("--node-name", envvar=[_env("node_name"), "NODE_NAME"], show_envvar=True,
              help="Name of this node [default: $NODE_NAME].")
@click.option("--kubelet-registry-dir", default=DEFAULT_REGISTRY_DIR, show_default=True,
              envvar=_env("kubelet_registry_dir"), show_envvar=True)
@click.option("--kubelet-plugins-dir", default=DEFAULT_PLUGINS_DIR, show_default=True,
              envvar=_env("kubelet_plugins_dir"), show_envvar=True)
@click.option("--cdi-root", default="/var/run/cdi", show_default=True, envvar=_env("cdi_root"),
              show_envvar=True, help="Directory for the per-claim CDI specs.")
@click.option("--state-dir", envvar=_env("state_dir"), show_envvar=True,
              help="Root of the checkpoints [default: the kubelet plugins dir].")
@click.option("--rolling-update-uid", default="", envvar=_env("rolling_update_uid"),
              show_envvar=True, help="Pod UID: per-pod socket names for rolling updates.")
@click.option("--publish/--no-publish", default=True, show_default=True,
              envvar=_env("publish"), show_envvar=True,
              help="Publish this node's devices as ResourceSlices.")
@click.option("--resync-interval", type=float, default=60.0, show_default=True,
              envvar=_env("resync_interval"), show_envvar=True,
              help="Seconds between full ResourceSlice resyncs.")
@click.option("--claim-source", type=click.Choice(list(CLAIM_SOURCES)), default=None,
              envvar=_env("claim_source"), show_envvar=True,
              help="Where prepares read claims: pods (a watch of this node's pods, the claims "
                   "they use read ahead), cluster (a watch of every claim of the cluster: small "
                   "clusters only) or get (one GET per claim). [default: pods]")
@click.option("--claim-cache/--no-claim-cache", default=None, envvar=_env("claim_cache"),
              show_envvar=True,
              help="Deprecated: --claim-source cluster (--claim-cache) or get (--no-claim-cache).")
@click.option("--boot-id-file", default=BOOT_ID_FILE, show_default=True, hidden=True,
              envvar=_env("boot_id_file"))
@click.option("--print-config", is_flag=True,
              help="Print the effective settings as JSON and exit.")
def serve(
    backends: tuple[str, ...],
    backend_option: tuple[str, ...],
    node_name: str | None,
    kubeconfig: str | None,
    kubelet_registry_dir: str,
    kubelet_plugins_dir: str,
    cdi_root: str,
    state_dir: str | None,
    rolling_update_uid: str,
    metrics_address: str,
    publish: bool,
    resync_interval: float,
    claim_source: str | None,
    claim_cache: bool | None,
    log_format: str,
    verbosity: int,
    boot_id_file: str,
    print_config: bool,
) -> None:
    """Run the DRA kubelet plugin of each selected backend until SIGTERM/SIGINT."""
    logs.configure(fmt=log_format, verbosity=verbosity)
    try:
        config = ServeConfig(
            backends=tuple(backends), node_name=node_name or "", kubeconfig=kubeconfig,
            registry_dir=kubelet_registry_dir, plugins_dir=kubelet_plugins_dir,
            cdi_root=cdi_root, state_dir=state_dir, rolling_update_uid=rolling_update_uid,
            backend_options=parse_backend_options(backend_option), boot_id_file=boot_id_file,
            publish=publish, resync_interval=resync_interval,
            claim_source=claim_source or "", claim_cache=claim_cache,
        )
    except DraError as exc:
        log.error(str(exc))
        raise SystemExit(1) from exc
    if claim_cache is not None:
        log.warning(f"--{'' if claim_cache else 'no-'}claim-cache is deprecated; use "
                    f"--claim-source {config.claim_source}")
    if print_config:
        settings = {**attrs.asdict(config), "metrics_address": metrics_address,
                    "log_format": log_format, "verbosity": verbosity}
        click.echo(json.dumps(settings, indent=2, sort_keys=True))
        return
    _run(lambda: Node(config), metrics_address=metrics_address)


@main.command()
@common_options
@click.option("--backend", required=True, envvar=_env("backend"), show_envvar=True,
              help="Backend whose cluster-wide pools to publish.")
@click.option("--lease-namespace", default="default", show_default=True,
              envvar=[_env("lease_namespace"), "POD_NAMESPACE"], show_envvar=True,
              help="Namespace of the leader-election Lease.")
@click.option("--lease-name", default="", envvar=_env("lease_name"), show_envvar=True,
              help="Name of the Lease [default: <driver>-controller].")
@click.option("--identity", default=None, envvar=[_env("identity"), "POD_NAME"],
              show_envvar=True, help="This replica's name in the Lease [default: host + uuid].")
@click.option("--lease-duration", type=float, default=15.0, show_default=True,
              envvar=_env("lease_duration"))
@click.option("--renew-deadline", type=float, default=10.0, show_default=True,
              envvar=_env("renew_deadline"))
@click.option("--retry-period", type=float, default=2.0, show_default=True,
              envvar=_env("retry_period"))
@click.option("--resync-interval", type=float, default=60.0, show_default=True,
              envvar=_env("resync_interval"))
@click.option("--state-dir", envvar=_env("state_dir"), show_envvar=True,
              help="Directory for the backend's own files.")
def controller(
    backend: str, backend_option: tuple[str, ...], kubeconfig: str | None,
    metrics_address: str, log_format: str, verbosity: int, lease_namespace: str,
    lease_name: str, identity: str | None, lease_duration: float, renew_deadline: float,
    retry_period: float, resync_interval: float, state_dir: str | None,
) -> None:
    """Publish a backend's cluster-wide pools, with leader election among replicas."""
    logs.configure(fmt=log_format, verbosity=verbosity)
    try:
        config = ControllerConfig(
            backend=backend, kubeconfig=kubeconfig, lease_namespace=lease_namespace,
            lease_name=lease_name, identity=identity, lease_duration=lease_duration,
            renew_deadline=renew_deadline, retry_period=retry_period,
            resync_interval=resync_interval, state_dir=state_dir,
            backend_options=parse_backend_options(backend_option))
    except DraError as exc:
        log.error(str(exc))
        raise SystemExit(1) from exc
    _run(lambda: Controller(config), metrics_address=metrics_address)


main.add_command(doctor)


@main.command("backends")
def list_backends() -> None:
    """List installed backends: name, distribution, version, default driver name."""
    rows = []
    for b in installed_backends():
        try:
            driver = Backend.load(b.name).info.driver_name
        except (SetupError, Exception) as exc:  # a broken backend must not hide the others
            driver = f"<error: {exc}>"
        rows.append((b.name, b.distribution, b.version, driver))
    if not rows:
        click.echo("no backends installed")
        return
    header = ("BACKEND", "DISTRIBUTION", "VERSION", "DRIVER")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
