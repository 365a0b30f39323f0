"""A real ``serve`` process removes its sockets on SIGTERM and SIGINT and exits 0."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from dra_framework.node.checkpoint import database_path
from dra_framework.testing.fakeapi import FakeApiServer

from .serveproc import ServeProcess

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_removes_sockets(signum: int, short_tmp: Path, api: FakeApiServer) -> None:
    proc = ServeProcess(short_tmp, kubeconfig=api.write_kubeconfig(short_tmp / "kubeconfig"))
    proc.connect().close()
    dra = proc.plugins_dir / "gpu.example.com" / "dra.sock"
    assert proc.reg_socket.exists() and dra.exists()
    proc.proc.send_signal(signum)
    assert proc.wait() == 0
    assert not proc.reg_socket.exists() and not dra.exists()
    # the checkpoint and the slices' source of truth stay: only sockets go
    assert database_path(proc.plugins_dir / "gpu.example.com") is not None
    proc.kubelet.close()
