"""A kubelet stand-in in a process of its own, for benchmarks.

The real kubelet is another process; timing prepares from inside the plugin's process would
charge the client's gRPC work to the plugin (both share one interpreter lock).  This process
registers with the plugin like a kubelet, then reads JSON commands from stdin, one per line::

    {"op": "prepare" | "unprepare", "claims": [[namespace, name, uid], ...]}

and answers each with ``{"elapsed": seconds, "errors": [...]}`` on stdout.

    python bench/kubelet.py REGISTRY_DIR DRIVER
"""

from __future__ import annotations

import json
import sys
import time

from dra_framework.models import ClaimRef
from dra_framework.testing.kubelet import KubeletClient


def main() -> None:
    registry, driver = sys.argv[1], sys.argv[2]
    kubelet = KubeletClient(registry)
    conn = kubelet.register(driver)
    assert conn is not None
    print(json.dumps({"registered": conn.version}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        claims = [ClaimRef(namespace=ns, name=name, uid=uid) for ns, name, uid in cmd["claims"]]
        t = time.perf_counter()
        if cmd["op"] == "prepare":
            errors = [r.error for r in conn.prepare(claims).values() if r.error]
        else:
            errors = [e for e in conn.unprepare(claims).values() if e]
        elapsed = time.perf_counter() - t
        print(json.dumps({"elapsed": elapsed, "errors": errors}), flush=True)
    conn.close()
    kubelet.close()


if __name__ == "__main__":
    main()
