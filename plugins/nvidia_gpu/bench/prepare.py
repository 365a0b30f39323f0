"""Benchmark: prepare of one GPU claim through the kubelet socket (fake NVML, 8 H100s).

The production plugin stack (``PluginHarness``) serves the ``nvidia-gpu`` backend on the fake
NVML and the captured driver tree; claims come from ``FakeApiServer`` in its own process, each
used by a pod bound to the node and read ahead by the plugin's default claim source; the kubelet
stand-in runs in its own process.  Each
prepare builds the claim's CDI edits (device nodes, driver libraries and binaries); prints
p50/p99 of prepare and of unprepare.

    .venv/bin/python plugins/nvidia_gpu/bench/prepare.py [--n 500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "bench"))

from prepare import Kubelet, pct, remote_api, schedule  # noqa: E402

from dra_framework.testing.claims import Result  # noqa: E402
from dra_framework.testing.harness import PluginHarness, wait_for  # noqa: E402

DRIVER = "gpu.nvidia.dra-framework.io"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    work = REPO / ".bench-work"
    work.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="dra-nv-", dir=work))
    cdi = Path(tempfile.mkdtemp(prefix="dra-nv-cdi-", dir="/dev/shm"))
    with remote_api() as api, PluginHarness(
        root=root, api=api, backends=("nvidia-gpu",), cdi_root=cdi, publish=False,  # type: ignore[arg-type]
        backend_options={"nvidia-gpu": {"nvml": "fake-8", "health": "false"}},
    ) as h:
        node = h.node
        assert node is not None
        source = node.claim_sources[0]
        claims = [schedule(api, name=f"gpu-claim-{i}", results=[
            Result(request="gpu", device=f"gpu-{i % 8}", driver=DRIVER)])
            for i in range(args.n)]
        wait_for("the claims to reach the claim source", lambda: all(
            source.holds(c) for c in claims), timeout=60, interval=0.01)
        kubelet = Kubelet(h.registry_dir, DRIVER)
        try:
            prep, unprep = [], []
            for c in claims:
                prep.append(kubelet.call("prepare", [c]))
                unprep.append(kubelet.call("unprepare", [c]))
        finally:
            kubelet.close()
    print(f"nvidia-gpu prepare 1 GPU claim   p50 {pct(prep, .5):6.2f} ms  "
          f"p99 {pct(prep, .99):6.2f} ms  (n={len(prep)}, claims read ahead, fake NVML)")
    print(f"nvidia-gpu unprepare             p50 {pct(unprep, .5):6.2f} ms  "
          f"p99 {pct(unprep, .99):6.2f} ms")


if __name__ == "__main__":
    main()
