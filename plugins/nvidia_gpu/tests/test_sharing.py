"""Time slicing and MPS through SharingManager, with a fake SharingControl."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from dra_nvidia_gpu.config import Sharing, decode
from dra_nvidia_gpu.sharing import (
    CONTAINER_LOG_DIR,
    CONTAINER_PIPE_DIR,
    ClaimSharing,
    MpsDaemon,
    NvidiaSmiSharing,
    SharingManager,
)

from dra_framework.errors import BackendError, ConfigError
from dra_framework.models import ContainerEdits, Mount

DRIVER = "gpu.nvidia.com"
GPU0 = "GPU-48579475-7923-b1a9-35e7-c49638cc9ac5"
GPU1 = "GPU-00000000-0000-0000-0000-000000000001"


class FakeControl:
    """Records every call; ``fail`` names calls that raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail: set[tuple[str, str]] = set()

    def _check(self, what: str, arg: str) -> None:
        if (what, arg) in self.fail:
            raise BackendError(f"{what} {arg} failed")

    def set_timeslice(self, gpu_uuid: str, interval: str) -> None:
        self._check("set", gpu_uuid)
        self.calls.append(("set_timeslice", gpu_uuid, interval))

    def reset_timeslice(self, gpu_uuid: str) -> None:
        self._check("reset", gpu_uuid)
        self.calls.append(("reset_timeslice", gpu_uuid))

    def start_mps(self, gpu_uuids: Sequence[str], *, pipe_dir: str, log_dir: str,
                  active_thread_pct: int | None, pinned_limits: Mapping[str, int]
                  ) -> MpsDaemon:
        self._check("start", ",".join(gpu_uuids))
        self.calls.append(("start_mps", tuple(gpu_uuids), pipe_dir, log_dir, active_thread_pct,
                           dict(pinned_limits)))
        return MpsDaemon(gpu_uuids=tuple(gpu_uuids), pipe_dir=pipe_dir, log_dir=log_dir)

    def stop_mps(self, daemon: MpsDaemon) -> None:
        self._check("stop", ",".join(daemon.gpu_uuids))
        self.calls.append(("stop_mps", daemon.gpu_uuids))


def sharing(strategy: str, **fields: Any) -> Sharing:
    body: dict[str, Any] = {"strategy": strategy}
    if strategy == "TimeSlicing" and fields:
        body["timeSlicing"] = fields
    elif strategy == "MPS":
        body["mps"] = fields
    config = decode({"apiVersion": f"{DRIVER}/v1", "kind": "GpuConfig", "sharing": body},
                    driver=DRIVER)
    assert config.sharing is not None
    return config.sharing


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def manager(control: FakeControl, tmp_path: Path) -> SharingManager:
    return SharingManager(control=control, run_dir=str(tmp_path))


def test_no_sharing_does_nothing(manager: SharingManager, control: FakeControl) -> None:
    assert manager.prepare(claim_uid="a", gpu_uuids=[GPU0], sharing=None) is None
    manager.unprepare(claim_uid="a")
    manager.unprepare(claim_uid="never-prepared")
    assert control.calls == []


def test_two_claims_time_slice_one_gpu(manager: SharingManager, control: FakeControl) -> None:
    slicing = sharing("TimeSlicing", interval="Medium")
    first = manager.prepare(claim_uid="a", gpu_uuids=[GPU0], sharing=slicing)
    manager.prepare(claim_uid="b", gpu_uuids=[GPU0], sharing=slicing)
    assert control.calls == [("set_timeslice", GPU0, "Medium")]
    assert first is not None and first.edits() == ContainerEdits()
    manager.unprepare(claim_uid="a")
    assert control.calls == [("set_timeslice", GPU0, "Medium")]
    manager.unprepare(claim_uid="b")
    assert control.calls[-1] == ("reset_timeslice", GPU0)
    assert manager.claims() == {}


def test_reset_only_the_gpus_no_one_else_holds(manager: SharingManager,
                                               control: FakeControl) -> None:
    slicing = sharing("TimeSlicing")
    manager.prepare(claim_uid="a", gpu_uuids=[GPU0, GPU1], sharing=slicing)
    manager.prepare(claim_uid="b", gpu_uuids=[GPU1], sharing=slicing)
    manager.unprepare(claim_uid="a")
    assert control.calls == [("set_timeslice", GPU0, "Default"),
                             ("set_timeslice", GPU1, "Default"), ("reset_timeslice", GPU0)]


def test_prepare_is_idempotent(manager: SharingManager, control: FakeControl) -> None:
    slicing = sharing("TimeSlicing", interval="Short")
    first = manager.prepare(claim_uid="a", gpu_uuids=[GPU0], sharing=slicing)
    assert manager.prepare(claim_uid="a", gpu_uuids=[GPU0], sharing=slicing) == first
    assert len(control.calls) == 1
    with pytest.raises(BackendError, match="claim a already shares"):
        manager.prepare(claim_uid="a", gpu_uuids=[GPU0], sharing=sharing("MPS"))


def test_mps_start_and_stop(manager: SharingManager, control: FakeControl,
                            tmp_path: Path) -> None:
    applied = manager.prepare(
        claim_uid="a", gpu_uuids=[GPU0, GPU1],
        sharing=sharing("MPS", defaultActiveThreadPercentage=40,
                        defaultPinnedDeviceMemoryLimit="10Gi",
                        perDevicePinnedMemoryLimit={"1": "1.5Gi"}))
    pipe, log = tmp_path / "mps" / "a" / "pipe", tmp_path / "mps" / "a" / "log"
    assert control.calls == [("start_mps", (GPU0, GPU1), str(pipe), str(log), 40,
                              {GPU0: 10240, GPU1: 1536})]
    assert pipe.is_dir() and log.is_dir()
    assert applied is not None
    assert applied.edits() == ContainerEdits(
        env=(f"CUDA_MPS_PIPE_DIRECTORY={CONTAINER_PIPE_DIR}",
             f"CUDA_MPS_LOG_DIRECTORY={CONTAINER_LOG_DIR}"),
        mounts=(Mount(host_path=str(pipe), container_path=CONTAINER_PIPE_DIR,
                      options=("rw", "nosuid", "nodev", "bind")),
                Mount(host_path=str(log), container_path=CONTAINER_LOG_DIR,
                      options=("ro", "nosuid", "nodev", "bind"))))
    manager.unprepare(claim_uid="a")
    assert control.calls[-1] == ("stop_mps", (GPU0, GPU1))
    assert not (tmp_path / "mps" / "a").exists()


def test_mps_limits_by_uuid(manager: SharingManager, control: FakeControl) -> None:
    manager.prepare(claim_uid="a", gpu_uuids=[GPU0, GPU1],
                    sharing=sharing("MPS", perDevicePinnedMemoryLimit={GPU1: "2Gi"}))
    assert control.calls[0][4:] == (None, {GPU1: 2048})


def test_restore_after_restart(control: FakeControl, tmp_path: Path) -> None:
    before = SharingManager(control=control, run_dir=str(tmp_path))
    slicing = sharing("TimeSlicing", interval="Long")
    persisted = []
    for uid, uuids, how in [("a", [GPU0], slicing), ("b", [GPU0], slicing),
                            ("c", [GPU1], sharing("MPS", defaultActiveThreadPercentage=10))]:
        applied = before.prepare(claim_uid=uid, gpu_uuids=uuids, sharing=how)
        assert applied is not None
        persisted.append(json.dumps(applied.to_state()))

    restarted = FakeControl()
    after = SharingManager(control=restarted, run_dir=str(tmp_path))
    for text in persisted + persisted[:1]:  # one state per device: a claim may come twice
        after.restore(json.loads(text))
    assert after.claims() == before.claims()
    assert restarted.calls == []  # nothing is re-applied

    after.unprepare(claim_uid="a")
    assert restarted.calls == []
    after.unprepare(claim_uid="b")
    after.unprepare(claim_uid="c")
    assert restarted.calls == [("reset_timeslice", GPU0), ("stop_mps", (GPU1,))]
    after.restore(json.loads(persisted[2]))
    with pytest.raises(BackendError, match="MPS daemon of claim c"):  # restored claims count
        after.prepare(claim_uid="d", gpu_uuids=[GPU1], sharing=sharing("MPS"))


def test_unreadable_state_is_an_error(manager: SharingManager) -> None:
    with pytest.raises(BackendError, match="unreadable sharing state"):
        manager.restore({"claimUid": "a", "strategy": "Nope", "gpuUuids": []})


CONFLICTS = [
    pytest.param(sharing("TimeSlicing"), [GPU0], sharing("MPS"), [GPU0],
                 "GPU .* is shared with TimeSlicing by claim first; claim second asks for MPS",
                 id="mps-on-sliced"),
    pytest.param(sharing("MPS"), [GPU1, GPU0], sharing("TimeSlicing"), [GPU0],
                 "GPU .* is shared with MPS by claim first; claim second asks for TimeSlicing",
                 id="slicing-on-mps"),
    pytest.param(sharing("MPS"), [GPU0], sharing("MPS"), [GPU0],
                 "already has the MPS daemon of claim first", id="two-mps"),
    pytest.param(sharing("TimeSlicing", interval="Short"), [GPU0],
                 sharing("TimeSlicing", interval="Long"), [GPU0, GPU1],
                 "time-sliced with interval Short by claim first; claim second asks for Long",
                 id="intervals"),
]


@pytest.mark.parametrize(("first", "first_gpus", "second", "second_gpus", "message"),
                         CONFLICTS)
def test_conflicting_strategies(manager: SharingManager, control: FakeControl,
                                first: Sharing, first_gpus: list[str], second: Sharing,
                                second_gpus: list[str], message: str) -> None:
    manager.prepare(claim_uid="first", gpu_uuids=first_gpus, sharing=first)
    calls = list(control.calls)
    with pytest.raises(BackendError, match=message):
        manager.prepare(claim_uid="second", gpu_uuids=second_gpus, sharing=second)
    assert control.calls == calls
    assert set(manager.claims()) == {"first"}


BAD_LIMITS = [
    pytest.param({"2": "1Gi"}, "perDevicePinnedMemoryLimit['2']: the claim has 2 device",
                 id="index-out-of-range"),
    pytest.param({"GPU-other": "1Gi"}, "perDevicePinnedMemoryLimit['GPU-other']: not a device",
                 id="foreign-uuid"),
]


@pytest.mark.parametrize(("limits", "message"), BAD_LIMITS)
def test_bad_per_device_limits(manager: SharingManager, control: FakeControl,
                               limits: dict[str, str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        manager.prepare(claim_uid="a", gpu_uuids=[GPU0, GPU1],
                        sharing=sharing("MPS", perDevicePinnedMemoryLimit=limits))
    assert control.calls == [] and manager.claims() == {}


def test_failed_time_slice_rolls_back(manager: SharingManager, control: FakeControl) -> None:
    control.fail.add(("set", GPU1))
    with pytest.raises(BackendError, match=f"cannot time-slice GPUs of claim a: set {GPU1}"):
        manager.prepare(claim_uid="a", gpu_uuids=[GPU0, GPU1], sharing=sharing("TimeSlicing"))
    assert control.calls == [("set_timeslice", GPU0, "Default"), ("reset_timeslice", GPU0)]
    assert manager.claims() == {}


def test_failed_mps_start_leaves_nothing(manager: SharingManager, control: FakeControl,
                                         tmp_path: Path) -> None:
    control.fail.add(("start", GPU0))
    with pytest.raises(BackendError, match="cannot start MPS for claim a"):
        manager.prepare(claim_uid="a", gpu_uuids=[GPU0], sharing=sharing("MPS"))
    assert manager.claims() == {} and not (tmp_path / "mps" / "a").exists()


def test_failed_undo_is_retried(manager: SharingManager, control: FakeControl) -> None:
    manager.prepare(claim_uid="a", gpu_uuids=[GPU0], sharing=sharing("TimeSlicing"))
    control.fail.add(("reset", GPU0))
    with pytest.raises(BackendError, match="cannot reset the time slice of GPU-"):
        manager.unprepare(claim_uid="a")
    assert "a" in manager.claims()
    control.fail.clear()
    manager.unprepare(claim_uid="a")
    assert control.calls[-1] == ("reset_timeslice", GPU0) and manager.claims() == {}


def test_state_is_camel_case_json() -> None:
    applied = ClaimSharing(claim_uid="a", strategy="MPS", gpu_uuids=(GPU0,),
                           mps=MpsDaemon(gpu_uuids=(GPU0,), pipe_dir="/p", log_dir="/l"))
    assert applied.to_state() == {"claimUid": "a", "strategy": "MPS", "gpuUuids": [GPU0],
                                  "mps": {"gpuUuids": [GPU0], "pipeDir": "/p", "logDir": "/l"}}


# -- the nvidia-smi / MPS control commands ---------------------------------------------------

class Runner:
    def __init__(self, failures: int = 0) -> None:
        self.calls: list[tuple[list[str], dict[str, str] | None, str | None]] = []
        self.failures = failures

    def __call__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 stdin: str | None = None) -> str:
        self.calls.append((list(argv), None if env is None else dict(env), stdin))
        if stdin and self.failures:
            self.failures -= 1
            raise BackendError("Cannot find MPS control daemon process")
        return ""


@pytest.mark.parametrize(("interval", "value"),
                         [("Default", 0), ("Short", 1), ("Medium", 2), ("Long", 3)])
def test_nvidia_smi_timeslice(interval: Any, value: int) -> None:
    runner = Runner()
    NvidiaSmiSharing(runner=runner).set_timeslice(GPU0, interval)
    assert runner.calls == [(["nvidia-smi", "compute-policy", "-i", GPU0,
                              f"--set-timeslice={value}"], None, None)]


def test_mps_control_commands() -> None:
    runner = Runner(failures=1)
    sleeps: list[float] = []
    control = NvidiaSmiSharing(runner=runner, environ={"PATH": "/usr/bin"}, sleep=sleeps.append)
    daemon = control.start_mps([GPU0, GPU1], pipe_dir="/run/p", log_dir="/run/l",
                               active_thread_pct=25, pinned_limits={GPU0: 4096})
    assert daemon == MpsDaemon(gpu_uuids=(GPU0, GPU1), pipe_dir="/run/p", log_dir="/run/l")
    env = {"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": f"{GPU0},{GPU1}",
           "CUDA_MPS_PIPE_DIRECTORY": "/run/p", "CUDA_MPS_LOG_DIRECTORY": "/run/l"}
    setup = (f"set_default_active_thread_percentage 25\n"
             f"set_default_device_pinned_mem_limit {GPU0} 4096M\nget_server_list\n")
    assert runner.calls == [(["nvidia-cuda-mps-control", "-d"], env, None),
                            (["nvidia-cuda-mps-control"], env, setup),
                            (["nvidia-cuda-mps-control"], env, setup)]
    assert sleeps == [0.2]
    control.stop_mps(daemon)
    assert runner.calls[-1] == (["nvidia-cuda-mps-control"], env, "quit\n")


def test_mps_daemon_that_never_answers_is_stopped() -> None:
    runner = Runner(failures=100)
    control = NvidiaSmiSharing(runner=runner, environ={}, sleep=lambda _: None,
                               ready_attempts=3)
    with pytest.raises(BackendError, match="Cannot find MPS control daemon"):
        control.start_mps([GPU0], pipe_dir="/p", log_dir="/l", active_thread_pct=None,
                          pinned_limits={})
    assert [c[2] for c in runner.calls] == [None] + ["get_server_list\n"] * 3 + ["quit\n"]


def test_real_runner_reports_failures() -> None:
    from dra_nvidia_gpu.sharing import run_command

    assert run_command(["sh", "-c", "echo ok"]) == "ok\n"
    with pytest.raises(BackendError, match="exited with 3: boom"):
        run_command(["sh", "-c", "echo boom >&2; exit 3"])
    with pytest.raises(BackendError, match="no-such-binary"):
        run_command([os.path.join("/nonexistent", "no-such-binary")])
