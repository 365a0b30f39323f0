"""Benchmark: the memory of a ``dra-framework serve`` process holding many devices and claims.

Starts the fake API server in a process of its own, then a real ``dra-framework serve --backend
example`` with ``--backend-option example.devices=N`` (publishing its ResourceSlices, with the
default claim source), and a kubelet stand-in (``bench/kubelet.py``); creates claims allocated
on the node, each used by a pod bound to it, prepares them in calls of 64, and prints the
process's resident memory (``VmRSS``) and its peak (``VmHWM``) from ``/proc`` after start-up,
after publishing and after the claims are prepared.

    .venv/bin/python bench/memory.py [--devices 1024] [--claims 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client
from prepare import DRIVER, Kubelet, RemoteApi, remote_api, schedule  # type: ignore[import-not-found]

from dra_framework.models import ClaimRef
from dra_framework.testing.claims import Result
from dra_framework.testing.harness import wait_for

REPO = Path(__file__).resolve().parents[1]


def memory(pid: int) -> tuple[float, float]:
    """``(VmRSS, VmHWM)`` of ``pid`` in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def slices(api: RemoteApi) -> int:
    """How many ResourceSlices of the node the API server holds."""
    cfg = client.Configuration()
    cfg.host = api.url
    resource = client.ResourceV1Api(client.ApiClient(cfg))
    answer = resource.list_resource_slice(field_selector="spec.nodeName=node-1",
                                          _preload_content=False)
    return len(json.loads(answer.data)["items"])


def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="dra-mem-", dir="/tmp"))
    with remote_api() as api:
        kubeconfig = api.write_kubeconfig(root / "kubeconfig")
        api.seed({"apiVersion": "v1", "kind": "Node",
                  "metadata": {"name": "node-1", "uid": "00000000-0000-4000-8000-00000000000a"}})
        boot = root / "boot_id"
        boot.write_text("11111111-1111-1111-1111-111111111111\n")
        registry = root / "plugins_registry"
        cmd = [sys.executable, "-m", "dra_framework.commands.cli", "serve",
               "--backend", "example", "--backend-option", f"example.devices={args.devices}",
               "--node-name", "node-1", "--kubeconfig", str(kubeconfig),
               "--kubelet-registry-dir", str(registry),
               "--kubelet-plugins-dir", str(root / "plugins"), "--cdi-root", str(root / "cdi"),
               "--boot-id-file", str(boot)]
        with open(root / "serve.log", "wb") as log:
            serve = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ})
        try:
            wait_for("the registration socket", lambda: list(registry.glob("*-reg.sock")),
                     timeout=60)
            rss, _ = memory(serve.pid)
            print(f"python {sys.version.split()[0]}; example backend, {args.devices} devices, "
                  f"{args.claims} claims")
            print(f"  after start-up                  VmRSS {rss:6.1f} MiB")
            expected = -(-args.devices // 128)  # 128 devices to a slice
            wait_for("the ResourceSlices", lambda: slices(api) >= expected, timeout=60)
            count = slices(api)
            time.sleep(1.0)
            rss, _ = memory(serve.pid)
            print(f"  after publishing {count} slices      VmRSS {rss:6.1f} MiB")
            kubelet = Kubelet(registry, DRIVER)
            try:
                claims: list[ClaimRef] = [
                    schedule(api, name=f"claim-{i}",
                             results=[Result("gpu", f"gpu-{i % args.devices}")])
                    for i in range(args.claims)]
                for start in range(0, len(claims), 64):
                    kubelet.call("prepare", claims[start:start + 64])
                time.sleep(1.0)
                rss, peak = memory(serve.pid)
                print(f"  with {args.claims} claims prepared    VmRSS {rss:6.1f} MiB  "
                      f"(peak {peak:.1f} MiB)")
                print(f"  goal VmRSS <= 80 MiB            {'met' if rss <= 80 else 'MISSED'}")
            finally:
                kubelet.close()
        finally:
            serve.terminate()
            serve.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1024)
    parser.add_argument("--claims", type=int, default=1000)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
