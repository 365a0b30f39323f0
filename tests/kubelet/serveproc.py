"""Running ``dra-framework serve`` as a real child process, for crash and concurrency tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dra_framework.testing.kubelet import KubeletClient, PluginConnection


class ServeProcess:
    """One ``dra-framework serve --backend example`` process on the directories under ``root``."""

    def __init__(self, root: Path, *, kubeconfig: Path, crash_at: str = "",
                 rolling_update_uid: str = "", options: tuple[str, ...] = (),
                 extra_args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.registry_dir = root / "plugins_registry"
        self.plugins_dir = root / "plugins"
        self.cdi_root = root / "cdi"
        self.log = root / f"serve-{rolling_update_uid or 'main'}.log"
        boot = root / "boot_id"
        if not boot.exists():
            boot.write_text("11111111-1111-1111-1111-111111111111\n")
        env = {**os.environ, "NODE_NAME": "node-1", "DRA_FRAMEWORK_CRASH_AT": crash_at}
        args = [sys.executable, "-m", "dra_framework.commands.cli", "serve", "--backend", "example",
                "--kubeconfig", str(kubeconfig), "--kubelet-registry-dir", str(self.registry_dir),
                "--kubelet-plugins-dir", str(self.plugins_dir), "--cdi-root", str(self.cdi_root),
                "--boot-id-file", str(boot), "--log-format", "json"]
        if rolling_update_uid:
            args += ["--rolling-update-uid", rolling_update_uid]
        for opt in options:
            args += ["--backend-option", opt]
        args += list(extra_args)
        self.reg_socket = self.registry_dir / (
            f"gpu.example.com-{rolling_update_uid}-reg.sock" if rolling_update_uid
            else "gpu.example.com-reg.sock")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=log)
        self.kubelet = KubeletClient(self.registry_dir)
        self.conn: PluginConnection | None = None

    def connect(self, timeout: float = 30.0) -> PluginConnection:
        deadline = time.monotonic() + timeout
        while not self.reg_socket.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(self.log.read_text())
            time.sleep(0.02)
        time.sleep(0.05)
        self.conn = self.kubelet.register("gpu.example.com", timeout=timeout)
        assert self.conn is not None
        return self.conn

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> int:
        if self.conn is not None:
            self.conn.close()
        self.kubelet.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)
