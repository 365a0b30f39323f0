#!/usr/bin/env python3
"""Read-only check of the NVIDIA GPU backend on a real GPU node.

Run from the repository root::

    python plugins/nvidia_gpu/scripts/real_gpu_check.py [--driver-root DIR] [--driver-name NAME]

It prints, one section each:

(a) NVML: driver and CUDA versions, the GPUs, their MIG mode, profiles and MIG devices;
(b) the ResourceSlice devices the backend would publish for this node, as the publisher renders
    them (``dra_framework.api.slices.device_json``), and the problems ``slicevalidation`` finds in
    the slices (also for the ``partitionable`` inventory, summarised);
(c) the CDI spec of one claim holding GPU 0 (``dra_framework.node.cdi.build_spec``), printed only,
    and which of its host paths are missing;
(d) timings: NVML init, enumeration, inventory, CDI edits;
(e) the result of one 2 s wait for NVML critical events, and the health the backend reports.

It only reads.  NVML is asked for information and registers for events; nothing is set: no
GPU settings, MIG mode, compute mode, persistence mode or reset, no ``nvidia-smi``, no MPS
daemon, and no file is written (``--fake`` lays out the captured node in a temporary directory
and removes it).  Each section catches its own errors, prints them and lets the next run.
Exit status: 0 when sections a-c worked, 1 when one failed, 2 when Python packages are missing.

Needs ``attrs``, ``cattrs``, ``pluggy``, ``PyYAML`` (what ``dra_framework`` imports) and
``nvidia-ml-py`` (``pynvml``; not with ``--fake``).  ``dra_framework`` and ``dra_nvidia_gpu``
are taken from this checkout when they are not installed.  ``--fake`` runs on the fake NVML of
the captured H100 (``dra_nvidia_gpu.testing``) and a copy of its driver tree, for testing this
script without a GPU.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import re
import socket
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
PLUGIN_DIR = HERE.parents[1]
REPO_DIR = HERE.parents[3]
DRIVER_ROOTS = ("/usr/local/nvidia", "/", "/run/nvidia/driver", "/home/kubernetes/bin/nvidia")
LIBRARY_DIRS = ("lib64", "lib/x86_64-linux-gnu", "lib", "usr/lib64", "usr/lib/x86_64-linux-gnu",
                "usr/lib", "usr/lib/aarch64-linux-gnu")
NVML_LIBRARY = "libnvidia-ml.so.1"
NODE_UID = "00000000-0000-0000-0000-000000000000"  # stands in for the Node's uid
PACKAGES = {"attrs": "attrs", "cattrs": "cattrs", "pluggy": "pluggy", "yaml": "PyYAML"}
HEALTH_WAIT_MS = 2000


# --- set-up ------------------------------------------------------------------------------
def _use_checkout() -> None:
    """Import ``dra_framework`` and ``dra_nvidia_gpu`` from this checkout if not installed."""
    for module, where in (("dra_framework", REPO_DIR), ("dra_nvidia_gpu", PLUGIN_DIR)):
        if importlib.util.find_spec(module) is None and (where / module).is_dir():
            sys.path.insert(0, str(where))


def missing_packages(*, fake: bool) -> list[str]:
    """pip names of the packages this check needs and cannot import."""
    wanted = dict(PACKAGES) if fake else {**PACKAGES, "pynvml": "nvidia-ml-py"}
    return [pip for module, pip in wanted.items() if importlib.util.find_spec(module) is None]


def find_driver_root() -> tuple[str, str | None]:
    """The first usual driver root holding ``libnvidia-ml.so.1``, and that library's path."""
    for root in DRIVER_ROOTS:
        for lib_dir in LIBRARY_DIRS:
            path = os.path.join(root, lib_dir, NVML_LIBRARY)
            if os.path.exists(path):
                return root, path
    return "/", None


def _node_name() -> str:
    """The host name as a DNS subdomain, which a pool name must be."""
    name = re.sub(r"[^a-z0-9.-]+", "-", socket.gethostname().lower()).strip("-.")
    return name or "node"


def _json(data: Any, indent: int = 0, width: int = 140) -> str:
    """Indented JSON in which every value that fits in ``width`` stays on one line."""
    flat = json.dumps(data, default=str)
    if len(flat) + indent <= width or not isinstance(data, (dict, list)) or not data:
        return flat
    pad = " " * (indent + 2)
    if isinstance(data, dict):
        items = [f"{pad}{json.dumps(k)}: {_json(v, indent + 2, width).lstrip()}"
                 for k, v in data.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + _json(v, indent + 2, width).lstrip() for v in data]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def _print_json(data: Any) -> None:
    print(_json(data))


class Check:
    """Runs the sections in order, each guarded, and records what worked and the timings."""

    def __init__(self) -> None:
        self.results: dict[str, str] = {}
        self.timings: dict[str, float] = {}

    def section(self, key: str, title: str, body: Callable[[], None]) -> bool:
        print(f"\n== ({key}) {title} ==", flush=True)
        try:
            body()
        except Exception as exc:
            traceback.print_exc(file=sys.stdout)
            print(f"!! section ({key}) failed: {type(exc).__name__}: {exc}")
            self.results[key] = f"FAILED: {type(exc).__name__}: {exc}"
            return False
        self.results[key] = "ok"
        return True

    def timed(self, label: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return fn()
        finally:
            self.timings[label] = time.perf_counter() - started


# --- the check -------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from dra_nvidia_gpu.cdiedits import HostLayout, common_edits, gpu_edits, merge_edits, mig_edits
    from dra_nvidia_gpu.health import HealthMonitor
    from dra_nvidia_gpu.inventory import build_inventory
    from dra_nvidia_gpu.nvml import PynvmlReader

    from dra_framework.api.slices import NodePool, device_json, node_pool_slices
    from dra_framework.api.slicevalidation import pool_problems
    from dra_framework.models import DriverInfo
    from dra_framework.node.cdi import build_spec, claim_device_name

    check = Check()
    state: dict[str, Any] = {}
    cleanup: list[Callable[[], None]] = []
    cdi_class = "claim"
    try:
        from dra_nvidia_gpu.backend import NvidiaGpuBackend

        cdi_class = NvidiaGpuBackend().dra_driver_info().cdi_class
    except Exception as exc:  # the backend module is optional for this check
        print(f"(backend not importable, CDI class {cdi_class!r}: {exc})")
    driver_info = DriverInfo(driver_name=args.driver_name, cdi_class=cdi_class)

    def nvml() -> None:
        if args.fake:
            from dra_nvidia_gpu.fakehost import build_fake_host
            from dra_nvidia_gpu.testing import FakePynvml

            module: Any = FakePynvml.from_capture()
            tmp = tempfile.TemporaryDirectory(prefix="real-gpu-check-")
            cleanup.append(tmp.cleanup)
            state["layout"] = build_fake_host(tmp.name)
            print("fake NVML from the H100 capture; driver tree of the capture under", tmp.name)
        else:
            module = None
            root, library = (args.driver_root, None) if args.driver_root else find_driver_root()
            print(f"driver root: {root}" + (f" (found {library})" if library else ""))
            state["layout"] = HostLayout(driver_root=root)
        try:
            from importlib.metadata import version

            print("nvidia-ml-py:", version("nvidia-ml-py"))
        except Exception:
            pass
        reader = check.timed("nvml_init", lambda: PynvmlReader(module=module))
        state["reader"] = reader
        cleanup.insert(0, reader.close)
        driver = check.timed("nvml_driver", reader.driver)
        gpus = check.timed("nvml_gpus", lambda: list(reader.gpus()))
        state["driver"], state["gpus"] = driver, gpus
        print(f"driver {driver.driver_version}, CUDA {driver.cuda_driver_version}, "
              f"{len(gpus)} GPU(s)")
        for gpu in gpus:
            print(f"GPU {gpu.index}: {gpu.name} {gpu.uuid} minor {gpu.minor} pci {gpu.pci_bus_id} "
                  f"{gpu.architecture} cc {gpu.cuda_compute_capability[0]}."
                  f"{gpu.cuda_compute_capability[1]} memory {gpu.memory_bytes} "
                  f"SMs {gpu.multiprocessor_count} MIG {'on' if gpu.mig_enabled else 'off'}")
            profiles = check.timed(f"nvml_mig_profiles_gpu{gpu.index}",
                                   functools.partial(reader.mig_profiles, gpu))
            for p in profiles:
                places = ",".join(str(pl.start) for pl in p.placements)
                print(f"  profile {p.name} id {p.id} slices {p.slice_count} x{p.instance_count}"
                      f" SMs {p.multiprocessor_count} {p.memory_mb} MB placements [{places}]")
            if gpu.mig_enabled:
                for mig in reader.mig_devices(gpu):
                    print(f"  MIG {mig.uuid} {mig.profile} gi {mig.gpu_instance_id} "
                          f"ci {mig.compute_instance_id} at {mig.placement.start}")

    def inventory() -> None:
        reader = state["reader"]
        sysfs = None if args.fake else args.sysfs_root
        inv = check.timed("inventory", lambda: build_inventory(reader, sysfs_root=sysfs))
        state["inventory"] = inv
        devices = [device_json(d) for d in inv.devices]
        _print_json({"devices": devices,
                     "sharedCounters": [{"name": c.name, "counters": dict(c.counters)}
                                        for c in inv.counter_sets]})
        problems = _problems(inv)
        print(f"{len(devices)} device(s); validation: "
              + ("no problems" if not problems else f"{len(problems)} problem(s)"))
        for problem in problems:
            print("  PROBLEM", problem)
        if problems:
            raise RuntimeError(f"{len(problems)} validation problem(s)")
        try:
            part = check.timed("inventory_partitionable",
                               lambda: build_inventory(reader, partitionable=True,
                                                       sysfs_root=sysfs))
            part_problems = _problems(part)
            print(f"partitionable: {len(part.devices)} device(s) "
                  f"{[d.name for d in part.devices]}, counter sets "
                  f"{[c.name for c in part.counter_sets]}; validation: "
                  + (f"{len(part_problems)} problem(s)" if part_problems else "no problems"))
            for problem in part_problems:
                print("  PROBLEM", problem)
            mig_like = [d for d in part.devices if d.consumes_counters][1:2]
            for device in mig_like:
                print("first MIG placement device:")
                _print_json(device_json(device))
        except Exception as exc:
            print(f"partitionable inventory failed: {type(exc).__name__}: {exc}")

    def _problems(inv: Any) -> list[str]:
        pool = NodePool(devices=inv.devices, counter_sets=inv.counter_sets)
        slices = node_pool_slices(driver=args.driver_name, node_name=args.node_name,
                                  node_uid=NODE_UID, pool=pool)
        return list(pool_problems(slices.objects(generation=1)))

    def cdi() -> None:
        inv, layout = state["inventory"], state["layout"]
        entries = [e for e in inv.published.values() if e.gpu.index == 0]
        if not entries:
            raise RuntimeError("GPU 0 publishes no device")
        entry = entries[0]
        common = check.timed("cdi_common_edits",
                             lambda: common_edits(layout=layout, driver=state["driver"]))
        mig = entry.mig

        def device_edits() -> Any:
            if mig is not None:
                return mig_edits(mig, parent_minor=entry.gpu.minor, layout=layout)
            return gpu_edits(entry.gpu, layout=layout)

        own = check.timed("cdi_device_edits", device_edits)
        name = claim_device_name(claim_uid=str(uuid.uuid4()), device=entry.name)
        spec = build_spec(kind=driver_info.cdi_kind, devices=[(name, merge_edits(common, own))])
        _print_json(spec)
        missing = [m["hostPath"] for d in spec["devices"]
                   for m in d["containerEdits"].get("mounts", [])
                   if not os.path.lexists(m["hostPath"])]
        missing += [n.get("hostPath") or n["path"] for d in spec["devices"]
                    for n in d["containerEdits"].get("deviceNodes", [])
                    if not os.path.lexists(n.get("hostPath") or n["path"])]
        print(f"CDI device {driver_info.cdi_kind}={name}; host paths missing: "
              + (", ".join(missing) if missing else "none"))

    def timings() -> None:
        for label, seconds in check.timings.items():
            print(f"{label:32} {seconds * 1000:9.2f} ms")

    def health() -> None:
        reader, gpus = state["reader"], state["gpus"]
        monitor = HealthMonitor(reader, gpus=gpus, on_change=lambda: None, pool=args.node_name,
                                taint_key=f"{args.driver_name}/unhealthy", autostart=False)
        started = time.perf_counter()
        event = reader.wait_event(HEALTH_WAIT_MS)
        waited = time.perf_counter() - started
        print(f"event wait ({HEALTH_WAIT_MS} ms): "
              + (f"{event}" if event is not None else "no event (timeout)")
              + f" after {waited:.3f} s")
        if event is not None:
            monitor.handle(event)
        names = {name: e.gpu.uuid for name, e in state["inventory"].published.items()} \
            if "inventory" in state else {f"gpu-{g.index}": g.uuid for g in gpus}
        for status in monitor.statuses(names):
            print(f"  {status.device}: {status.health.name} {status.message}".rstrip())

    try:
        ok = check.section("a", "NVML driver and GPUs", nvml)
        ok = ok and check.section("b", "ResourceSlice devices", inventory)
        ok = ok and check.section("c", "CDI spec for a claim holding GPU 0", cdi)
        check.section("d", "timings", timings)
        if "reader" in state:
            check.section("e", "health: one 2 s event wait", health)
    finally:
        for step in cleanup:
            try:
                step()
            except Exception as exc:
                print(f"cleanup: {type(exc).__name__}: {exc}")
    print("\n== summary ==")
    for key in "abcde":
        print(f"({key}) {check.results.get(key, 'not run')}")
    return 0 if all(check.results.get(k) == "ok" for k in "abc") else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--driver-root", default="",
                        help="where the driver files are (default: the first of "
                             f"{', '.join(DRIVER_ROOTS)} holding {NVML_LIBRARY})")
    parser.add_argument("--driver-name", default="gpu.nvidia.dra-framework.io",
                        help="the DRA driver name (ResourceSlice spec.driver, CDI vendor)")
    parser.add_argument("--node-name", default=_node_name(),
                        help="the node (pool) name (default: the host name)")
    parser.add_argument("--sysfs-root", default="/sys", help="where sysfs is (PCIe root)")
    parser.add_argument("--fake", action="store_true",
                        help="use the fake NVML of the captured H100, not the real one")
    args = parser.parse_args(argv)
    _use_checkout()
    missing = missing_packages(fake=args.fake)
    if missing:
        print("missing Python packages: " + " ".join(missing))
        print("install them with: python -m pip install " + " ".join(missing)
              + "   (or: pip install -e . -e plugins/nvidia_gpu)")
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
