"""The CDI container edits a CUDA container needs, read from the host.

What a container needs to run CUDA on one GPU or MIG device, without the NVIDIA runtime hook:

* **device nodes**, with the real major/minor of the host (``os.stat`` under ``dev_root``):
  ``/dev/nvidia<minor>`` of the GPU; for a MIG device also the ``/dev/nvidia-caps/nvidia-cap<N>``
  nodes of its GPU instance and compute instance, ``N`` read from the ``DeviceFileMinor:`` line
  of ``<proc_root>/driver/nvidia/capabilities/gpu<minor>/mig/gi<G>[/ci<C>]/access``; and, shared
  by every device, ``/dev/nvidiactl``, ``/dev/nvidia-uvm`` and ``/dev/nvidia-uvm-tools``.  A node
  that does not exist on the host yet (``nvidia-uvm`` appears on first use) gets its major from
  ``/proc/devices``: a node with type, major and minor needs no host file for the runtime to
  create it.  ``path`` is the container path; ``hostPath`` is set when ``dev_root`` is not
  ``/dev``.
* **driver files** under ``driver_root`` (``/`` on a plain host, ``/usr/local/nvidia`` or
  ``/run/nvidia/driver`` elsewhere): the compute, utility and video user-space libraries, found in
  the usual library directories and resolved through their ``.so.1`` → ``.so.<version>`` links
  (absolute links are read inside the driver root, as a chroot would), the binaries
  (``nvidia-smi``, the MPS control daemon and server, ...) and the GSP firmware directory.  Every
  file is bind-mounted read-only.  Optional files that are missing are skipped; a missing
  ``libcuda`` or ``libnvidia-ml`` is a ``BackendError``.  The discovery is cached per driver
  version in the ``HostLayout``.

Where the libraries go.  There is no ``update-ldcache`` hook here, so the libraries are mounted,
under their real name and their soname (``libcuda.so.580.159.04`` and ``libcuda.so.1``), into
``container_lib_dir``, by default ``/usr/lib/x86_64-linux-gnu``: glibc searches that directory
by default on Debian and Ubuntu images (the ``nvidia/cuda`` images among them) even when the
image's ``ld.so.cache`` does not list the file.  ``LD_LIBRARY_PATH`` is not set: a CDI ``env``
entry replaces the image's own value, and the CUDA images set theirs.  Images with another
default directory (``/usr/lib64`` on RHEL-based images) need ``container_lib_dir`` changed.

Environment.  ``NVIDIA_VISIBLE_DEVICES=void`` tells an NVIDIA runtime hook, if one is installed,
to inject nothing, so the devices are not injected twice; ``NVIDIA_DRIVER_CAPABILITIES`` says
which driver capabilities were mounted.  ``CUDA_VISIBLE_DEVICES`` is not set: the container has
the device nodes of its own devices only, so CUDA enumerates exactly those, and an index chosen
here would not match the container's numbering.

The framework's CDI writer takes per-device edits only, so the backend merges ``common_edits``
into each device's edits with ``merge_edits``, which drops duplicates.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterable
from typing import TypeVar

import attrs

from dra_framework.errors import BackendError
from dra_framework.models import ContainerEdits, DeviceNode, Mount

from .types import DriverInfo, GpuInfo, MigDevice

MOUNT_OPTIONS: tuple[str, ...] = ("ro", "nosuid", "nodev", "bind")

# (library base name, driver capability, required)
LIBRARIES: tuple[tuple[str, str, bool], ...] = (
    ("libnvidia-ml", "utility", True),
    ("libnvidia-cfg", "utility", False),
    ("libcuda", "compute", True),
    ("libcudadebugger", "compute", False),
    ("libnvidia-ptxjitcompiler", "compute", False),
    ("libnvidia-nvvm", "compute", False),
    ("libnvidia-gpucomp", "compute", False),
    ("libnvidia-allocator", "compute", False),
    ("libnvidia-opencl", "compute", False),
    ("libnvidia-pkcs11-openssl3", "compute", False),
    ("libnvcuvid", "video", False),
    ("libnvidia-encode", "video", False),
    ("libnvidia-opticalflow", "video", False),
)
BINARIES: tuple[str, ...] = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
)
LIBRARY_DIRS: tuple[str, ...] = (
    "lib64", "lib/x86_64-linux-gnu", "lib", "usr/lib64", "usr/lib/x86_64-linux-gnu", "usr/lib",
)
BINARY_DIRS: tuple[str, ...] = ("bin", "usr/bin", "usr/local/bin", "sbin", "usr/sbin")
FIRMWARE_DIRS: tuple[str, ...] = ("lib/firmware/nvidia", "usr/lib/firmware/nvidia",
                                  "firmware/nvidia")
CAPABILITY_ORDER: tuple[str, ...] = ("compute", "utility", "video")

T = TypeVar("T")

_MINOR_RE = re.compile(r"DeviceFileMinor:\s*(\d+)")
_SO_SUFFIX_RE = re.compile(r"[0-9][0-9.]*")


def _os_stat(path: str) -> os.stat_result:
    return os.stat(path)  # looked up at call time, so a patched ``os`` is honoured


@attrs.frozen
class DriverFiles:
    """What was found under the driver root for one driver version."""

    version: str
    mounts: tuple[Mount, ...]
    capabilities: tuple[str, ...]


@attrs.define(frozen=True)
class HostLayout:
    """Where the host's device nodes, driver files and ``/proc`` are, as this process sees them.

    ``stat`` is ``os.stat`` except in tests (a fake file system has no character devices).
    """

    dev_root: str = "/dev"
    driver_root: str = "/"
    proc_root: str = "/proc"
    container_lib_dir: str = "/usr/lib/x86_64-linux-gnu"
    container_bin_dir: str = "/usr/bin"
    stat: Callable[[str], os.stat_result] = attrs.field(default=_os_stat, eq=False, repr=False)
    _cache: dict[str, DriverFiles] = attrs.field(
        factory=dict, init=False, eq=False, repr=False)

    # -- device nodes ------------------------------------------------------------------------

    def proc_devices(self) -> dict[str, int]:
        """Character-device majors from ``/proc/devices``: name → major."""
        majors: dict[str, int] = {}
        try:
            with open(posixpath.join(self.proc_root, "devices"), encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return majors
        for line in text.splitlines():
            if line.strip().lower().startswith("block devices"):
                break
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                majors.setdefault(parts[1], int(parts[0]))
        return majors

    def device_node(self, name: str, *, driver_name: str, minor: int) -> DeviceNode:
        """The node ``/dev/<name>``; ``driver_name``/``minor`` are used when it is not there."""
        container_path = posixpath.join("/dev", name)
        host_path = posixpath.join(self.dev_root, name)
        try:
            st = self.stat(host_path)
        except FileNotFoundError:
            major = self.proc_devices().get(driver_name)
            if major is None:
                raise BackendError(
                    f"{host_path} does not exist and /proc/devices has no {driver_name!r}: "
                    "is the NVIDIA kernel module loaded?") from None
            return DeviceNode(path=container_path, type="c", major=major, minor=minor,
                              permissions="rw")
        except OSError as exc:
            raise BackendError(f"cannot stat {host_path}: {exc}") from exc
        if not stat.S_ISCHR(st.st_mode):
            raise BackendError(f"{host_path} is not a character device")
        return DeviceNode(
            path=container_path,
            host_path=None if self.dev_root.rstrip("/") == "/dev" else host_path,
            type="c",
            major=os.major(st.st_rdev),
            minor=os.minor(st.st_rdev),
            file_mode=stat.S_IMODE(st.st_mode),
            permissions="rw",
        )

    def mig_cap_minor(self, *, parent_minor: int, gi: int, ci: int | None = None) -> int:
        """``DeviceFileMinor`` of a GPU instance's (or compute instance's) capability file."""
        rel = f"driver/nvidia/capabilities/gpu{parent_minor}/mig/gi{gi}"
        if ci is not None:
            rel += f"/ci{ci}"
        path = posixpath.join(self.proc_root, rel, "access")
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise BackendError(f"cannot read MIG capability {path}: {exc}") from exc
        match = _MINOR_RE.search(text)
        if match is None:
            raise BackendError(f"no DeviceFileMinor in {path}: {text.strip()!r}")
        return int(match.group(1))

    # -- driver files ------------------------------------------------------------------------

    def driver_files(self, version: str) -> DriverFiles:
        """The driver's libraries, binaries and firmware as read-only mounts (cached)."""
        found = self._cache.get(version)
        if found is None:
            found = self._discover(version)
            self._cache[version] = found
        return found

    def _host(self, rel: str) -> str:
        return posixpath.join(self.driver_root, rel.lstrip("/"))

    def _resolve(self, rel: str) -> str | None:
        """Follow symlinks of ``rel`` inside the driver root; the real relative path or None."""
        parts = [p for p in rel.split("/") if p]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = "/".join([*done, part])
            host = self._host(candidate)
            if not os.path.lexists(host):
                return None
            if os.path.islink(host):
                hops += 1
                if hops > 40:
                    return None
                target = os.readlink(host)
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p] + parts
                continue
            done.append(part)
        return "/".join(done)

    def _regular(self, rel: str) -> str | None:
        real = self._resolve(rel)
        return real if real is not None and os.path.isfile(self._host(real)) else None

    def _find_library(self, base: str, version: str) -> tuple[str, list[str]] | None:
        """(real file, soname links next to it) of ``base``, relative to the driver root."""
        for libdir in LIBRARY_DIRS:
            host_dir = self._host(libdir)
            if not os.path.isdir(host_dir):
                continue
            prefix = base + ".so."
            names = sorted(n for n in os.listdir(host_dir)
                           if n.startswith(prefix) and _SO_SUFFIX_RE.fullmatch(n[len(prefix):]))
            resolved = {n: self._regular(f"{libdir}/{n}") for n in names}
            real = resolved.get(f"{prefix}{version}") or next(
                (r for r in resolved.values() if r is not None), None)
            if real is None:
                continue
            real_name = posixpath.basename(real)
            links = [n for n, r in resolved.items() if r == real and n != real_name]
            return real, links
        return None

    def _discover(self, version: str) -> DriverFiles:
        mounts: list[Mount] = []
        capabilities: set[str] = set()
        missing: list[str] = []
        for base, capability, required in LIBRARIES:
            found = self._find_library(base, version)
            if found is None:
                if required:
                    missing.append(base)
                continue
            real, links = found
            capabilities.add(capability)
            for name in [posixpath.basename(real), *links]:
                mounts.append(_ro_mount(self._host(real),
                                        posixpath.join(self.container_lib_dir, name)))
        if missing:
            raise BackendError(
                f"NVIDIA driver {version}: {', '.join(missing)} not found under driver root "
                f"{self.driver_root} (looked in {', '.join(LIBRARY_DIRS)})")
        for binary in BINARIES:
            path = next((r for d in BINARY_DIRS if (r := self._regular(f"{d}/{binary}"))), None)
            if path is not None:
                mounts.append(_ro_mount(self._host(path),
                                        posixpath.join(self.container_bin_dir, binary)))
        for fw in FIRMWARE_DIRS:
            fw_dir = self._resolve(f"{fw}/{version}")
            if fw_dir is not None and os.path.isdir(self._host(fw_dir)):
                mounts.append(_ro_mount(self._host(fw_dir), f"/lib/firmware/nvidia/{version}"))
                break
        caps = tuple(c for c in CAPABILITY_ORDER if c in capabilities)
        return DriverFiles(version=version, mounts=tuple(mounts), capabilities=caps)


def _ro_mount(host_path: str, container_path: str) -> Mount:
    return Mount(host_path=host_path, container_path=container_path, options=MOUNT_OPTIONS)


def gpu_edits(gpu: GpuInfo, *, layout: HostLayout) -> ContainerEdits:
    """The edits of one full GPU: its ``/dev/nvidia<minor>`` node."""
    return ContainerEdits(device_nodes=(
        layout.device_node(f"nvidia{gpu.minor}", driver_name="nvidia", minor=gpu.minor),))


def mig_edits(mig: MigDevice, *, parent_minor: int, layout: HostLayout) -> ContainerEdits:
    """The edits of one MIG device: its parent's node and its GI and CI capability nodes."""
    gi_minor = layout.mig_cap_minor(parent_minor=parent_minor, gi=mig.gpu_instance_id)
    ci_minor = layout.mig_cap_minor(parent_minor=parent_minor, gi=mig.gpu_instance_id,
                                    ci=mig.compute_instance_id)
    nodes = [layout.device_node(f"nvidia{parent_minor}", driver_name="nvidia",
                                minor=parent_minor)]
    for minor in (gi_minor, ci_minor):
        nodes.append(layout.device_node(f"nvidia-caps/nvidia-cap{minor}",
                                        driver_name="nvidia-caps", minor=minor))
    return ContainerEdits(device_nodes=tuple(nodes))


def common_edits(*, layout: HostLayout, driver: DriverInfo) -> ContainerEdits:
    """Edits every device of a claim shares: control and UVM nodes, driver files, env."""
    files = layout.driver_files(driver.driver_version)
    nodes = (
        layout.device_node("nvidiactl", driver_name="nvidiactl", minor=255),
        layout.device_node("nvidia-uvm", driver_name="nvidia-uvm", minor=0),
        layout.device_node("nvidia-uvm-tools", driver_name="nvidia-uvm", minor=1),
    )
    env = ("NVIDIA_VISIBLE_DEVICES=void",
           f"NVIDIA_DRIVER_CAPABILITIES={','.join(files.capabilities)}")
    return ContainerEdits(env=env, device_nodes=nodes, mounts=files.mounts)


def merge_edits(*edits: ContainerEdits) -> ContainerEdits:
    """Concatenate edits, dropping duplicates.

    Env entries are keyed by variable name, device nodes by container path and mounts by
    container path: a later entry replaces an earlier one in the earlier one's place.  Hooks and
    additional GIDs drop exact repeats.
    """
    env: dict[str, str] = {}
    nodes: dict[str, DeviceNode] = {}
    mounts: dict[str, Mount] = {}
    for e in edits:
        for entry in e.env:
            env[entry.split("=", 1)[0]] = entry
        for node in e.device_nodes:
            nodes[node.path] = node
        for mount in e.mounts:
            mounts[mount.container_path] = mount
    return ContainerEdits(
        env=tuple(env.values()),
        device_nodes=tuple(nodes.values()),
        mounts=tuple(mounts.values()),
        hooks=_unique(h for e in edits for h in e.hooks),
        additional_gids=_unique(g for e in edits for g in e.additional_gids),
    )


def _unique(items: Iterable[T]) -> tuple[T, ...]:
    return tuple(dict.fromkeys(items))
