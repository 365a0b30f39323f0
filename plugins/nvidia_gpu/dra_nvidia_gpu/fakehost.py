"""A GPU node on disk, built from the real H100 capture: for demos and end-to-end tests.

``build_fake_host(root)`` lays out under ``root`` what the backend reads from a GPU node —
the driver root (every file and symlink of ``testdata/h100/driver-root.txt``, empty), the
``/dev/nvidia*`` nodes, ``/proc/devices`` and the MIG capability files — and returns a
``HostLayout`` over it whose ``stat`` reports the captured character-device numbers (creating
real device nodes would need privileges).  With the backend option ``nvml=fake`` the whole
backend runs on this and on ``testing.FakePynvml``.

The captured node had MIG mode off, so it has no per-instance capability files.  On a real
node the driver adds ``<proc>/driver/nvidia/capabilities/gpu<minor>/mig/gi<G>/access`` (and
``.../ci<C>/access``) when a MIG instance is created and removes them with it; here
``add_mig_capabilities`` / ``remove_mig_capabilities`` do that, giving each new file the next
free ``DeviceFileMinor``.  The backend calls them with ``nvml=fake*`` only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat as statmod
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from .cdiedits import HostLayout

_DATA = resources.files("dra_nvidia_gpu") / "testdata" / "h100"
DRIVER_ROOT = "/usr/local/nvidia"


def capture() -> dict[str, Any]:
    """The NVML probe of the captured H100 node."""
    data: dict[str, Any] = json.loads((_DATA / "nvml_probe.json").read_text())
    return data


def driver_tree(text: str) -> Iterator[tuple[str, str, str]]:
    """(type, absolute path, symlink target) of each entry of ``driver-root.txt``."""
    section = ""
    for line in text.splitlines():
        if line.startswith("# "):
            section = line
            continue
        fields = line.split()
        if section.startswith("# find") and len(fields) >= 4:
            target = line.split(" -> ", 1)[1].strip() if " -> " in line else ""
            yield fields[0], fields[3], target
        elif section.startswith("# firmware") and len(fields) == 3:
            yield fields[0], fields[2], ""


def capability_files(text: str) -> Iterator[tuple[str, str]]:
    """(path, content) of each ``/proc/driver/nvidia/capabilities`` file of the capture."""
    for line in text.splitlines():
        if line.startswith("/proc/driver/nvidia/capabilities/"):
            path, _, content = line.partition(": ")
            yield path, content.replace(" DeviceFile", "\nDeviceFile").strip() + "\n"


def build_fake_host(root: str | os.PathLike[str]) -> HostLayout:
    """Create the captured node's files under ``root``; a ``HostLayout`` that reads them."""
    base = Path(root)
    text = (_DATA / "driver-root.txt").read_text()
    for kind, path, target in driver_tree(text):
        where = base / path.lstrip("/")
        if kind == "d":
            where.mkdir(parents=True, exist_ok=True)
        elif kind == "f":
            where.parent.mkdir(parents=True, exist_ok=True)
            where.touch()
        elif kind == "l" and not where.is_symlink():
            where.parent.mkdir(parents=True, exist_ok=True)
            where.symlink_to(target)
    probe = capture()
    nodes: dict[str, tuple[int, int, int]] = {}
    for node in probe["device_nodes"]:
        where = base / node["path"].lstrip("/")
        if node["char"]:
            where.parent.mkdir(parents=True, exist_ok=True)
            where.touch()
            nodes[str(where)] = (node["major"], node["minor"], int(node["mode"], 8))
        else:
            where.mkdir(parents=True, exist_ok=True)
    proc = base / "proc"
    proc.mkdir(parents=True, exist_ok=True)
    (proc / "devices").write_text("Character devices:\n" + probe["proc_devices"]
                                  + "\nBlock devices:\n  8 sd\n")
    for path, content in capability_files(text):
        where = base / path.lstrip("/")
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(content)

    def fake_stat(path: str | os.PathLike[str]) -> os.stat_result:
        st = os.stat(path)
        found = nodes.get(os.fspath(path))
        if found is None:
            return st
        major, minor, mode = found
        return os.stat_result((statmod.S_IFCHR | mode, st.st_ino, st.st_dev, 1, 0, 0, 0, 0, 0,
                               0), {"st_rdev": os.makedev(major, minor)})

    return HostLayout(dev_root=str(base / "dev"), driver_root=str(base / DRIVER_ROOT.lstrip("/")),
                      proc_root=str(proc), stat=fake_stat)


_CAP_MINOR = re.compile(r"DeviceFileMinor:\s*(\d+)")


def _caps_dir(layout: HostLayout) -> Path:
    return Path(layout.proc_root) / "driver" / "nvidia" / "capabilities"


def add_mig_capabilities(layout: HostLayout, *, parent_minor: int, gi: int, ci: int) -> None:
    """Create the capability files of MIG GPU instance ``gi`` / compute instance ``ci`` of
    the GPU ``/dev/nvidia<parent_minor>``, as the driver does; files already there are kept."""
    caps = _caps_dir(layout)
    used = {int(m.group(1)) for f in caps.rglob("*") if f.is_file()
            for m in [_CAP_MINOR.search(f.read_text())] if m}
    gi_dir = caps / f"gpu{parent_minor}" / "mig" / f"gi{gi}"
    for where in (gi_dir / "access", gi_dir / f"ci{ci}" / "access"):
        if where.exists():
            continue
        minor = max(used, default=2) + 1
        used.add(minor)
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(f"DeviceFileMinor: {minor}\nDeviceFileMode: 292\n"
                         "DeviceFileModify: 1\n")


def remove_mig_capabilities(layout: HostLayout, *, parent_minor: int, gi: int) -> None:
    """Remove the capability files of MIG GPU instance ``gi`` (its compute instances' too)."""
    shutil.rmtree(_caps_dir(layout) / f"gpu{parent_minor}" / "mig" / f"gi{gi}",
                  ignore_errors=True)
