"""A node in a box: prepare and unprepare a claim end to end, printing each step.

``python -m dra_framework.testing.demo [--backend NAME] [--driver DRIVER]`` starts a fake API
server, the real plugin of the backend (example by default) and a kubelet-wire client in
temporary directories, registers the plugin like a kubelet, stores an allocated claim, prepares
it through the DRA socket, shows the answer and the CDI spec the runtime would read, and
unprepares it.  Nothing outside the temporary directory is touched.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from .claims import Config, Result, allocated_claim
from .harness import PluginHarness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="example")
    parser.add_argument("--driver", default="gpu.example.com")
    parser.add_argument("--device", default="gpu-0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dra-demo-") as tmp, PluginHarness(
        root=Path(tmp), backends=(args.backend,)
    ) as node:
        print(f"fake API server at {node.api.url}; plugin state under {tmp}")
        conn = node.connect(args.driver)
        print(f"registered {conn.driver_name}: versions {', '.join(conn.supported_versions)}; "
              f"the kubelet picked {conn.version}")
        claim = node.add_claim(allocated_claim(
            name="demo-claim", results=[Result(request="gpu", device=args.device,
                                               driver=args.driver)],
            configs=[Config(driver=args.driver, parameters={
                "apiVersion": f"{args.driver}/v1", "kind": "GpuConfig",
                "sharing": {"strategy": "TimeSlicing"}})]))
        result = conn.prepare([claim])[claim.uid]
        if result.error:
            print(f"prepare failed: {result.error}")
            raise SystemExit(1)
        for dev in result.devices:
            print(f"prepared {dev.pool_name}/{dev.device_name} for request "
                  f"{','.join(dev.request_names)}: {', '.join(dev.cdi_device_ids)}")
        for spec in node.cdi_specs():
            print(f"CDI spec {spec.name}:")
            print(json.dumps(json.loads(spec.read_text()), indent=2))
        print(f"unprepare: {conn.unprepare([claim])[claim.uid] or 'ok'}; "
              f"CDI specs left: {len(node.cdi_specs())}")


if __name__ == "__main__":
    main()
