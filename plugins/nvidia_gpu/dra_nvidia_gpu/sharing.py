"""GPU sharing: apply a claim's sharing strategy at prepare, undo it at unprepare.

Two strategies come from ``config.Sharing``:

* **TimeSlicing** — ``nvidia-smi compute-policy --set-timeslice`` on each GPU of the claim.  The
  setting belongs to the GPU, so several claims on one GPU share it: it is set when the first
  time-slicing claim on that GPU is prepared and reset to the default when the last one is
  unprepared.  Two claims that ask for different intervals on one GPU conflict.
* **MPS** — one MPS control daemon per claim, for the claim's set of GPUs (or MIG devices), with
  its own pipe and log directories under ``<run_dir>/mps/<claim uid>``.  The containers of the
  claim reach it through the CDI edits of ``ClaimSharing.edits()``: ``CUDA_MPS_PIPE_DIRECTORY``
  and ``CUDA_MPS_LOG_DIRECTORY`` and bind mounts of both directories.  A GPU serves one MPS
  daemon at a time, so a second MPS claim on it conflicts.

A GPU time-sliced by one claim cannot be given MPS by another, and the other way round: that is
a ``BackendError`` naming the GPU and the claim that holds it.  Claims without a sharing config
are not tracked.

What a claim applied is a ``ClaimSharing``, whose ``to_state()`` is JSON (camelCase, the
framework's converter) for ``PreparedDevice.state``; after a restart the backend hands each
persisted state to ``SharingManager.restore`` so that reference counts and daemons are known
again and a later unprepare undoes exactly what was done.  Nothing is re-applied on restore:
the GPU keeps its time slice and an MPS daemon outlives the plugin.

The hardware side is the small ``SharingControl`` interface; ``NvidiaSmiSharing`` implements it
with ``nvidia-smi`` and ``nvidia-cuda-mps-control`` through an injectable command runner, so
tests drive the manager with a fake and never run a command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from dra_framework.convert import structure, unstructure
from dra_framework.errors import BackendError, ConfigError
from dra_framework.models import ContainerEdits, Mount

from .config import MIB, Interval, Sharing, Strategy, parse_quantity

TIMESLICE_VALUES: Mapping[str, int] = {"Default": 0, "Short": 1, "Medium": 2, "Long": 3}
"""``nvidia-smi compute-policy --set-timeslice`` values of each interval."""

CONTAINER_PIPE_DIR = "/tmp/nvidia-mps"
CONTAINER_LOG_DIR = "/var/log/nvidia-mps"


@attrs.frozen
class MpsDaemon:
    """A running MPS control daemon: which GPUs it serves and where its pipes and logs are."""

    gpu_uuids: tuple[str, ...]
    pipe_dir: str
    log_dir: str


class SharingControl(Protocol):
    """What the manager needs from the GPU; ``NvidiaSmiSharing`` or a test fake."""

    def set_timeslice(self, gpu_uuid: str, interval: Interval) -> None: ...

    def reset_timeslice(self, gpu_uuid: str) -> None: ...

    def start_mps(self, gpu_uuids: Sequence[str], *, pipe_dir: str, log_dir: str,
                  active_thread_pct: int | None, pinned_limits: Mapping[str, int]
                  ) -> MpsDaemon:
        """Start a daemon for ``gpu_uuids``; ``pinned_limits`` maps a UUID to MiB."""
        ...

    def stop_mps(self, daemon: MpsDaemon) -> None: ...


class CommandRunner(Protocol):
    def __call__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 stdin: str | None = None) -> str: ...


def run_command(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                stdin: str | None = None) -> str:
    """Run a command, return its stdout; a failure is a ``BackendError`` with its output."""
    try:
        done = subprocess.run(list(argv), env=None if env is None else dict(env), input=stdin,
                              text=True, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BackendError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise BackendError(f"{' '.join(argv)} exited with {done.returncode}: {output}")
    return done.stdout


@attrs.define
class NvidiaSmiSharing:
    """``SharingControl`` with ``nvidia-smi`` and ``nvidia-cuda-mps-control``."""

    runner: CommandRunner = run_command
    nvidia_smi: str = "nvidia-smi"
    mps_control: str = "nvidia-cuda-mps-control"
    environ: Mapping[str, str] | None = None  # the base environment (default: os.environ)
    sleep: Callable[[float], None] = time.sleep
    ready_attempts: int = 10  # the daemon forks before it listens: retry the first command

    def set_timeslice(self, gpu_uuid: str, interval: Interval) -> None:
        value = TIMESLICE_VALUES[interval]
        self.runner([self.nvidia_smi, "compute-policy", "-i", gpu_uuid,
                     f"--set-timeslice={value}"])

    def reset_timeslice(self, gpu_uuid: str) -> None:
        self.set_timeslice(gpu_uuid, "Default")

    def _env(self, daemon: MpsDaemon) -> dict[str, str]:
        env = dict(os.environ if self.environ is None else self.environ)
        env.update(CUDA_VISIBLE_DEVICES=",".join(daemon.gpu_uuids),
                   CUDA_MPS_PIPE_DIRECTORY=daemon.pipe_dir,
                   CUDA_MPS_LOG_DIRECTORY=daemon.log_dir)
        return env

    def start_mps(self, gpu_uuids: Sequence[str], *, pipe_dir: str, log_dir: str,
                  active_thread_pct: int | None, pinned_limits: Mapping[str, int]
                  ) -> MpsDaemon:
        daemon = MpsDaemon(gpu_uuids=tuple(gpu_uuids), pipe_dir=pipe_dir, log_dir=log_dir)
        env = self._env(daemon)
        self.runner([self.mps_control, "-d"], env=env)
        commands = []
        if active_thread_pct is not None:
            commands.append(f"set_default_active_thread_percentage {active_thread_pct}")
        commands += [f"set_default_device_pinned_mem_limit {uuid} {mib}M"
                     for uuid, mib in pinned_limits.items()]
        try:
            for attempt in range(max(self.ready_attempts, 1)):
                try:
                    self.runner([self.mps_control], env=env,
                                stdin="\n".join([*commands, "get_server_list"]) + "\n")
                    break
                except BackendError:
                    if attempt + 1 >= self.ready_attempts:
                        raise
                    self.sleep(0.2)
        except BackendError:
            with contextlib.suppress(BackendError):
                self.stop_mps(daemon)
            raise
        return daemon

    def stop_mps(self, daemon: MpsDaemon) -> None:
        self.runner([self.mps_control], env=self._env(daemon), stdin="quit\n")


@attrs.frozen
class ClaimSharing:
    """What one claim applied; ``to_state()`` / ``from_state()`` round-trip through JSON."""

    claim_uid: str
    strategy: Strategy
    gpu_uuids: tuple[str, ...]
    interval: Interval | None = None
    mps: MpsDaemon | None = None

    def edits(self) -> ContainerEdits:
        """What a container of the claim needs to use the MPS daemon (nothing for slicing)."""
        if self.mps is None:
            return ContainerEdits()
        return ContainerEdits(
            env=(f"CUDA_MPS_PIPE_DIRECTORY={CONTAINER_PIPE_DIR}",
                 f"CUDA_MPS_LOG_DIRECTORY={CONTAINER_LOG_DIR}"),
            mounts=(
                Mount(host_path=self.mps.pipe_dir, container_path=CONTAINER_PIPE_DIR,
                      options=("rw", "nosuid", "nodev", "bind")),
                Mount(host_path=self.mps.log_dir, container_path=CONTAINER_LOG_DIR,
                      options=("ro", "nosuid", "nodev", "bind")),
            ),
        )

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = unstructure(self)
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ClaimSharing:
        try:
            return structure(dict(state), cls)
        except Exception as exc:
            raise BackendError(f"unreadable sharing state {dict(state)!r}: {exc}") from exc


class SharingManager:
    """Applies and undoes the sharing of claims, counting the claims on each GPU."""

    def __init__(self, *, control: SharingControl, run_dir: str) -> None:
        self.control = control
        self.run_dir = run_dir
        self._claims: dict[str, ClaimSharing] = {}
        self._lock = threading.Lock()

    def claims(self) -> dict[str, ClaimSharing]:
        with self._lock:
            return dict(self._claims)

    def _holders(self, gpu_uuid: str, *, besides: str) -> list[ClaimSharing]:
        return [c for uid, c in self._claims.items()
                if uid != besides and gpu_uuid in c.gpu_uuids]

    def prepare(self, *, claim_uid: str, gpu_uuids: Sequence[str], sharing: Sharing | None
                ) -> ClaimSharing | None:
        """Apply ``sharing`` for a claim on ``gpu_uuids``; None when there is nothing to do.

        Idempotent: preparing a claim again with the same request returns what was applied.
        """
        if sharing is None:
            return None
        uuids = tuple(gpu_uuids)
        interval = sharing.interval if sharing.strategy == "TimeSlicing" else None
        with self._lock:
            known = self._claims.get(claim_uid)
            if known is not None:
                if (known.strategy, known.gpu_uuids, known.interval) != (
                        sharing.strategy, uuids, interval):
                    raise BackendError(f"claim {claim_uid} already shares {known.gpu_uuids} "
                                       f"with {known.strategy}")
                return known
            self._check_conflicts(claim_uid, uuids, sharing.strategy, interval)
            if interval is not None:
                applied = ClaimSharing(claim_uid=claim_uid, strategy="TimeSlicing",
                                       gpu_uuids=uuids, interval=interval)
                self._set_timeslices(applied, interval)
            else:
                applied = ClaimSharing(claim_uid=claim_uid, strategy="MPS", gpu_uuids=uuids,
                                       mps=self._start_mps(claim_uid, uuids, sharing))
            self._claims[claim_uid] = applied
            return applied

    def _check_conflicts(self, claim_uid: str, uuids: tuple[str, ...], strategy: str,
                         interval: str | None) -> None:
        for uuid in uuids:
            for other in self._holders(uuid, besides=claim_uid):
                if other.strategy != strategy:
                    raise BackendError(
                        f"GPU {uuid} is shared with {other.strategy} by claim "
                        f"{other.claim_uid}; claim {claim_uid} asks for {strategy}")
                if strategy == "MPS":
                    raise BackendError(
                        f"GPU {uuid} already has the MPS daemon of claim {other.claim_uid}; "
                        f"claim {claim_uid} cannot start another one on it")
                if other.interval != interval:
                    raise BackendError(
                        f"GPU {uuid} is time-sliced with interval {other.interval} by claim "
                        f"{other.claim_uid}; claim {claim_uid} asks for {interval}")

    def _set_timeslices(self, applied: ClaimSharing, interval: Interval) -> None:
        done: list[str] = []
        try:
            for uuid in applied.gpu_uuids:
                if not self._holders(uuid, besides=applied.claim_uid):
                    self.control.set_timeslice(uuid, interval)
                    done.append(uuid)
        except Exception as exc:
            for uuid in done:  # roll back; the original error is the one to report
                with contextlib.suppress(Exception):
                    self.control.reset_timeslice(uuid)
            raise _backend_error(f"cannot time-slice GPUs of claim {applied.claim_uid}",
                                 exc) from exc

    def _claim_dir(self, claim_uid: str) -> str:
        return os.path.join(self.run_dir, "mps", claim_uid)

    def _start_mps(self, claim_uid: str, uuids: tuple[str, ...], sharing: Sharing) -> MpsDaemon:
        mps = sharing.mps
        limits = _pinned_limits(uuids, mps.default_pinned_device_memory_limit if mps else None,
                                mps.per_device_pinned_memory_limit if mps else None)
        pipe_dir = os.path.join(self._claim_dir(claim_uid), "pipe")
        log_dir = os.path.join(self._claim_dir(claim_uid), "log")
        try:
            os.makedirs(pipe_dir, exist_ok=True)
            os.makedirs(log_dir, exist_ok=True)
            return self.control.start_mps(
                uuids, pipe_dir=pipe_dir, log_dir=log_dir,
                active_thread_pct=mps.default_active_thread_percentage if mps else None,
                pinned_limits=limits)
        except Exception as exc:
            shutil.rmtree(self._claim_dir(claim_uid), ignore_errors=True)
            raise _backend_error(f"cannot start MPS for claim {claim_uid}", exc) from exc

    def unprepare(self, *, claim_uid: str) -> None:
        """Undo what the claim applied; a claim that is not known is already done.

        On a failure the claim stays known, so the kubelet's retry tries again.
        """
        with self._lock:
            applied = self._claims.get(claim_uid)
            if applied is None:
                return
            try:
                if applied.mps is not None:
                    self.control.stop_mps(applied.mps)
                    shutil.rmtree(self._claim_dir(claim_uid), ignore_errors=True)
                else:
                    self._reset_timeslices(applied)
            except Exception as exc:
                raise _backend_error(f"cannot undo the sharing of claim {claim_uid}",
                                     exc) from exc
            del self._claims[claim_uid]

    def _reset_timeslices(self, applied: ClaimSharing) -> None:
        failures: list[str] = []
        for uuid in applied.gpu_uuids:
            if self._holders(uuid, besides=applied.claim_uid):
                continue  # another claim still time-slices this GPU
            try:
                self.control.reset_timeslice(uuid)
            except Exception as exc:
                failures.append(f"{uuid}: {exc}")
        if failures:
            raise BackendError("cannot reset the time slice of " + "; ".join(failures))

    def restore(self, state: Mapping[str, Any]) -> ClaimSharing:
        """Know again a claim from its persisted ``to_state()``; applies nothing."""
        applied = ClaimSharing.from_state(state)
        with self._lock:
            return self._claims.setdefault(applied.claim_uid, applied)


def _backend_error(message: str, exc: Exception) -> Exception:
    if isinstance(exc, ConfigError):
        return exc
    return BackendError(f"{message}: {exc}")


def _pinned_limits(uuids: Sequence[str], default: str | None,
                   per_device: Mapping[str, str] | None) -> dict[str, int]:
    """UUID → MiB for the claim's devices; keys of ``per_device`` are UUIDs or indexes."""
    limits = {uuid: parse_quantity(default) // MIB for uuid in uuids} if default else {}
    for key, value in (per_device or {}).items():
        if key.isdigit():
            if int(key) >= len(uuids):
                raise ConfigError(f"the claim has {len(uuids)} device(s)",
                                  path=f"$.sharing.mps.perDevicePinnedMemoryLimit[{key!r}]")
            uuid = uuids[int(key)]
        elif key in uuids:
            uuid = key
        else:
            raise ConfigError("not a device of the claim",
                              path=f"$.sharing.mps.perDevicePinnedMemoryLimit[{key!r}]")
        limits[uuid] = parse_quantity(value) // MIB
    return limits
