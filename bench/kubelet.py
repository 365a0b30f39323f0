"""A kubelet stand-in in a process of its own, for benchmarks.

The real kubelet is another process; timing prepares from inside the plugin's process would
charge the client's gRPC work to the plugin (both share one interpreter lock).  This process
registers with the plugin like a kubelet, then reads JSON commands from stdin, one per line::

    {"op": "prepare" | "unprepare", "claims": [[namespace, name, uid], ...]}
    {"op": "floor", "n": N}

and answers each with ``{"elapsed": seconds, "errors": [...]}`` on stdout, timing the gRPC call
alone (the kubelet's own work is not the plugin's); ``floor`` answers with the seconds of each
of N bare unary calls, ``GetInfo`` on the plugin's registration socket: what one gRPC round trip
over a unix socket costs between these two processes, the floor of any prepare.

    python bench/kubelet.py REGISTRY_DIR DRIVER
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import grpc

from dra_framework.kubelet._proto.dra.v1 import api_pb2 as dra_pb2
from dra_framework.kubelet._proto.dra.v1 import api_pb2_grpc as dra_grpc
from dra_framework.kubelet._proto.pluginregistration.v1 import api_pb2 as reg_pb2
from dra_framework.kubelet._proto.pluginregistration.v1 import api_pb2_grpc as reg_grpc
from dra_framework.testing.kubelet import KubeletClient


def floor(registry: str, n: int) -> list[float]:
    (socket,) = Path(registry).glob("*-reg.sock")
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        stub = reg_grpc.RegistrationStub(channel)
        request = reg_pb2.InfoRequest()
        stub.GetInfo(request, timeout=5)
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            stub.GetInfo(request, timeout=5)
            samples.append(time.perf_counter() - t)
    return samples


def main() -> None:
    registry, driver = sys.argv[1], sys.argv[2]
    kubelet = KubeletClient(registry)
    conn = kubelet.register(driver)
    assert conn is not None
    assert conn.version == "v1.DRAPlugin", conn.version
    print(json.dumps({"registered": conn.version}), flush=True)
    channel = grpc.insecure_channel(f"unix:{conn.endpoint}")
    dra = dra_grpc.DRAPluginStub(channel)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "floor":
            print(json.dumps({"samples": floor(registry, cmd["n"])}), flush=True)
            continue
        wire = [dra_pb2.Claim(namespace=ns, name=name, uid=uid) for ns, name, uid in cmd["claims"]]
        if cmd["op"] == "prepare":
            request = dra_pb2.NodePrepareResourcesRequest(claims=wire)
            call = dra.NodePrepareResources
        else:
            request = dra_pb2.NodeUnprepareResourcesRequest(claims=wire)
            call = dra.NodeUnprepareResources
        t = time.perf_counter()  # the call alone, as the kubelet (a Go program) would see it
        response = call(request, timeout=45)
        elapsed = time.perf_counter() - t
        errors = [r.error for r in response.claims.values() if r.error]
        if len(response.claims) != len(wire):
            errors.append(f"{len(wire)} claims asked, {len(response.claims)} answered")
        print(json.dumps({"elapsed": elapsed, "errors": errors}), flush=True)
    channel.close()
    conn.close()
    kubelet.close()


if __name__ == "__main__":
    main()
