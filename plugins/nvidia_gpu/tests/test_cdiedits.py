"""CDI edits from a fake host built from the real H100 capture (testdata/h100)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from dra_nvidia_gpu.cdiedits import (
    MOUNT_OPTIONS,
    HostLayout,
    common_edits,
    gpu_edits,
    merge_edits,
    mig_edits,
)
from dra_nvidia_gpu.fakehost import capability_files, driver_tree
from dra_nvidia_gpu.types import DriverInfo, GpuInfo, MigDevice, MigPlacement
from pyfakefs.fake_filesystem import FakeFilesystem

from dra_framework.errors import BackendError
from dra_framework.models import ContainerEdits, DeviceNode, Hook, Mount

CAPTURE = Path(__file__).resolve().parents[1] / "dra_nvidia_gpu" / "testdata" / "h100"
DRIVER_ROOT_TXT = (CAPTURE / "driver-root.txt").read_text()
PROBE = json.loads((CAPTURE / "nvml_probe.json").read_text())

ROOT = "/usr/local/nvidia"
VERSION = PROBE["driver_version"]
DRIVER = DriverInfo(driver_version=VERSION, cuda_driver_version="13.0")
LIB = "/usr/lib/x86_64-linux-gnu"
UUID = PROBE["devices"][0]["uuid"]
GPU = GpuInfo(index=0, minor=PROBE["devices"][0]["minor_number"], uuid=UUID,
              name="NVIDIA H100 80GB HBM3", brand="Nvidia", architecture="Hopper",
              cuda_compute_capability=(9, 0), memory_bytes=85520809984,
              pci_bus_id="0000:00:06.0", mig_enabled=False)
CAP_FILE = "DeviceFileMinor: {minor}\nDeviceFileMode: 292\nDeviceFileModify: 1\n"


class FakeDevices:
    """Character devices for the fake file system: pyfakefs only makes regular files."""

    def __init__(self, fs: FakeFilesystem) -> None:
        self.fs = fs
        self.nodes: dict[str, tuple[int, int, int]] = {}

    def add(self, path: str, major: int, minor: int, mode: int = 0o666) -> None:
        self.fs.create_file(path)
        self.nodes[path] = (major, minor, mode)

    def stat(self, path: str) -> os.stat_result:
        st = os.stat(path)
        if path not in self.nodes:
            return st
        major, minor, mode = self.nodes[path]
        return os.stat_result((stat.S_IFCHR | mode, st.st_ino, st.st_dev, 1, 0, 0, 0, 0, 0, 0),
                              {"st_rdev": os.makedev(major, minor)})


@pytest.fixture
def host(fs: FakeFilesystem) -> FakeDevices:
    for kind, path, target in driver_tree(DRIVER_ROOT_TXT):
        if kind == "d" and not os.path.lexists(path):
            fs.create_dir(path)
        elif kind == "f" and not os.path.lexists(path):
            fs.create_file(path)
        elif kind == "l":
            fs.create_symlink(path, target)
    devices = FakeDevices(fs)
    for node in PROBE["device_nodes"]:
        if node["char"]:
            devices.add(node["path"], node["major"], node["minor"], int(node["mode"], 8))
    fs.create_file("/proc/devices", contents="Character devices:\n" + PROBE["proc_devices"]
                   + "\nBlock devices:\n  8 sd\n")
    for path, content in capability_files(DRIVER_ROOT_TXT):
        fs.create_file(path, contents=content)
    return devices


@pytest.fixture
def layout(host: FakeDevices) -> HostLayout:
    return HostLayout(driver_root=ROOT, stat=host.stat)


def _proc_major(name: str) -> int:
    for line in PROBE["proc_devices"].splitlines():
        number, _, driver = line.partition(" ")
        if driver == name:
            return int(number)
    raise KeyError(name)


def _ro(host_path: str, container_path: str) -> Mount:
    return Mount(host_path=host_path, container_path=container_path, options=MOUNT_OPTIONS)


def test_gpu_node_has_captured_major_minor(layout: HostLayout) -> None:
    assert gpu_edits(GPU, layout=layout) == ContainerEdits(device_nodes=(
        DeviceNode(path="/dev/nvidia0", type="c", major=195, minor=0, file_mode=0o666,
                   permissions="rw"),))


def test_common_nodes_env_and_driver_files(layout: HostLayout) -> None:
    edits = common_edits(layout=layout, driver=DRIVER)
    uvm = _proc_major("nvidia-uvm")
    assert uvm == 238
    assert edits.device_nodes == (
        DeviceNode(path="/dev/nvidiactl", type="c", major=195, minor=255, file_mode=0o666,
                   permissions="rw"),
        DeviceNode(path="/dev/nvidia-uvm", type="c", major=uvm, minor=0, file_mode=0o666,
                   permissions="rw"),
        DeviceNode(path="/dev/nvidia-uvm-tools", type="c", major=uvm, minor=1,
                   file_mode=0o666, permissions="rw"),
    )
    assert edits.env == ("NVIDIA_VISIBLE_DEVICES=void",
                         "NVIDIA_DRIVER_CAPABILITIES=compute,utility,video")
    real = f"{ROOT}/lib64/{{}}.so.{VERSION}"
    expected_libs = [
        ("libnvidia-ml", ["1"]), ("libnvidia-cfg", ["1"]), ("libcuda", ["1"]),
        ("libcudadebugger", ["1"]), ("libnvidia-ptxjitcompiler", ["1"]),
        ("libnvidia-nvvm", ["4"]), ("libnvidia-gpucomp", []), ("libnvidia-allocator", ["1"]),
        ("libnvidia-opencl", ["1"]), ("libnvidia-pkcs11-openssl3", []),
        ("libnvcuvid", ["1"]), ("libnvidia-encode", ["1"]), ("libnvidia-opticalflow", ["1"]),
    ]
    expected = []
    for base, sonames in expected_libs:
        for suffix in [VERSION, *sonames]:
            expected.append(_ro(real.format(base), f"{LIB}/{base}.so.{suffix}"))
    for binary in ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced",
                   "nvidia-cuda-mps-control", "nvidia-cuda-mps-server"):
        expected.append(_ro(f"{ROOT}/bin/{binary}", f"/usr/bin/{binary}"))
    expected.append(_ro(f"{ROOT}/firmware/nvidia/{VERSION}", f"/lib/firmware/nvidia/{VERSION}"))
    assert list(edits.mounts) == expected
    # graphics libraries of the capture are not part of the compute/utility/video set
    assert not any("GLX" in m.host_path or "EGL" in m.host_path for m in edits.mounts)


def test_mig_device_gets_parent_and_cap_nodes(fs: FakeFilesystem, host: FakeDevices,
                                              layout: HostLayout) -> None:
    caps = "/proc/driver/nvidia/capabilities/gpu0/mig"
    fs.create_file(f"{caps}/gi3/access", contents=CAP_FILE.format(minor=30))
    fs.create_file(f"{caps}/gi3/ci0/access", contents=CAP_FILE.format(minor=31))
    caps_major = _proc_major("nvidia-caps")
    host.add("/dev/nvidia-caps/nvidia-cap30", caps_major, 30, 0o444)
    host.add("/dev/nvidia-caps/nvidia-cap31", caps_major, 31, 0o444)
    mig = MigDevice(parent_index=0, parent_uuid=UUID, uuid="MIG-1234", profile="1g.10gb",
                    gpu_instance_id=3, compute_instance_id=0,
                    placement=MigPlacement(start=0, size=1), memory_bytes=10 << 30,
                    multiprocessor_count=16)
    edits = mig_edits(mig, parent_minor=0, layout=layout)
    assert edits.device_nodes == (
        DeviceNode(path="/dev/nvidia0", type="c", major=195, minor=0, file_mode=0o666,
                   permissions="rw"),
        DeviceNode(path="/dev/nvidia-caps/nvidia-cap30", type="c", major=241, minor=30,
                   file_mode=0o444, permissions="rw"),
        DeviceNode(path="/dev/nvidia-caps/nvidia-cap31", type="c", major=241, minor=31,
                   file_mode=0o444, permissions="rw"),
    )


def test_mig_without_capability_file_is_an_error(layout: HostLayout) -> None:
    mig = MigDevice(parent_index=0, parent_uuid=UUID, uuid="MIG-1", profile="1g.10gb",
                    gpu_instance_id=9, compute_instance_id=0,
                    placement=MigPlacement(start=0, size=1), memory_bytes=1,
                    multiprocessor_count=16)
    with pytest.raises(BackendError, match="gpu0/mig/gi9/access"):
        mig_edits(mig, parent_minor=0, layout=layout)


def test_captured_global_cap_file_format_parses(layout: HostLayout) -> None:
    # mig/config of the capture: "DeviceFileMinor: 1" → /dev/nvidia-caps/nvidia-cap1 (241, 1)
    text = Path("/proc/driver/nvidia/capabilities/mig/config").read_text()
    assert text.startswith("DeviceFileMinor: 1\n")
    node = layout.device_node("nvidia-caps/nvidia-cap1", driver_name="nvidia-caps", minor=1)
    assert (node.major, node.minor, node.file_mode) == (241, 1, 0o400)


def test_missing_uvm_nodes_use_proc_devices(fs: FakeFilesystem, layout: HostLayout) -> None:
    fs.remove("/dev/nvidia-uvm")
    fs.remove("/dev/nvidia-uvm-tools")
    nodes = common_edits(layout=layout, driver=DRIVER).device_nodes
    assert nodes[1:] == (
        DeviceNode(path="/dev/nvidia-uvm", type="c", major=238, minor=0, permissions="rw"),
        DeviceNode(path="/dev/nvidia-uvm-tools", type="c", major=238, minor=1,
                   permissions="rw"),
    )


def test_node_missing_everywhere_is_an_error(fs: FakeFilesystem, layout: HostLayout) -> None:
    fs.remove("/dev/nvidia0")
    fs.remove("/proc/devices")
    with pytest.raises(BackendError, match="/dev/nvidia0 does not exist"):
        gpu_edits(GPU, layout=layout)


def test_not_a_character_device_is_an_error(fs: FakeFilesystem) -> None:
    fs.create_file("/dev/nvidia0")
    with pytest.raises(BackendError, match="not a character device"):
        gpu_edits(GPU, layout=HostLayout())


def test_dev_root_elsewhere_sets_host_path(fs: FakeFilesystem, host: FakeDevices) -> None:
    host.add("/host/dev/nvidia0", 195, 0)
    layout = HostLayout(dev_root="/host/dev", driver_root=ROOT, stat=host.stat)
    (node,) = gpu_edits(GPU, layout=layout).device_nodes
    assert (node.path, node.host_path, node.major, node.minor) == (
        "/dev/nvidia0", "/host/dev/nvidia0", 195, 0)


def test_missing_required_library_is_an_error(fs: FakeFilesystem, layout: HostLayout) -> None:
    fs.remove(f"{ROOT}/lib64/libcuda.so.1")
    fs.remove(f"{ROOT}/lib64/libcuda.so.{VERSION}")
    with pytest.raises(BackendError, match=r"libcuda not found under driver root"):
        common_edits(layout=layout, driver=DRIVER)


def test_missing_optional_files_are_skipped(fs: FakeFilesystem, layout: HostLayout) -> None:
    fs.remove(f"{ROOT}/bin/nvidia-debugdump")
    for name in ("libnvcuvid.so.1", f"libnvcuvid.so.{VERSION}", "libnvidia-encode.so.1",
                 f"libnvidia-encode.so.{VERSION}", "libnvidia-opticalflow.so.1",
                 f"libnvidia-opticalflow.so.{VERSION}"):
        fs.remove(f"{ROOT}/lib64/{name}")
    edits = common_edits(layout=layout, driver=DRIVER)
    targets = {m.container_path for m in edits.mounts}
    assert "/usr/bin/nvidia-debugdump" not in targets
    assert f"{LIB}/libnvcuvid.so.1" not in targets
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in edits.env


def test_absolute_links_resolve_inside_driver_root(fs: FakeFilesystem,
                                                   host: FakeDevices) -> None:
    lib = "/host/usr/lib/x86_64-linux-gnu"
    for base in ("libcuda", "libnvidia-ml"):
        fs.create_file(f"{lib}/{base}.so.550.1")
        fs.create_symlink(f"{lib}/{base}.so.1", f"/usr/lib/x86_64-linux-gnu/{base}.so.550.1")
    layout = HostLayout(driver_root="/host", stat=host.stat)
    files = layout.driver_files("550.1")
    assert [(m.host_path, m.container_path) for m in files.mounts] == [
        (f"{lib}/libnvidia-ml.so.550.1", f"{LIB}/libnvidia-ml.so.550.1"),
        (f"{lib}/libnvidia-ml.so.550.1", f"{LIB}/libnvidia-ml.so.1"),
        (f"{lib}/libcuda.so.550.1", f"{LIB}/libcuda.so.550.1"),
        (f"{lib}/libcuda.so.550.1", f"{LIB}/libcuda.so.1"),
    ]
    assert files.capabilities == ("compute", "utility")


def test_driver_files_are_cached_per_version(fs: FakeFilesystem, layout: HostLayout) -> None:
    first = layout.driver_files(VERSION)
    fs.remove(f"{ROOT}/bin/nvidia-smi")
    assert layout.driver_files(VERSION) is first
    assert "/usr/bin/nvidia-smi" not in {
        m.container_path for m in HostLayout(driver_root=ROOT).driver_files(VERSION).mounts}


def test_merge_drops_duplicates(layout: HostLayout) -> None:
    common = common_edits(layout=layout, driver=DRIVER)
    gpu = gpu_edits(GPU, layout=layout)
    hook = Hook(hook_name="createContainer", path="/bin/true")
    extra = ContainerEdits(env=("NVIDIA_VISIBLE_DEVICES=void", "A=1"), hooks=(hook,),
                           additional_gids=(44,))
    merged = merge_edits(gpu, common, extra, merge_edits(gpu, common),
                         ContainerEdits(env=("A=2",), hooks=(hook,), additional_gids=(44,)))
    assert merged.device_nodes == gpu.device_nodes + common.device_nodes
    assert merged.mounts == common.mounts
    assert merged.env == (*common.env, "A=2")
    assert merged.hooks == (hook,)
    assert merged.additional_gids == (44,)
