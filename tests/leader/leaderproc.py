"""A leader elector in a real child process, for crash tests.

Run as a script, it contends for a Lease on the API server at ``--url`` and appends one line per
event to ``--markers``: ``<unix time> start <identity>`` when it begins leading and
``<unix time> stop <identity>`` when it stops.  SIGTERM stops it (releasing the lease);
SIGKILL leaves the lease to expire.  ``LeaderProcess`` starts and signals such a process.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

LEASE, RENEW, RETRY = 1.0, 0.6, 0.1


class LeaderProcess:
    """One child process running ``main()`` below."""

    def __init__(self, *, url: str, name: str, identity: str, markers: Path,
                 log_dir: Path) -> None:
        self.identity = identity
        self.log = log_dir / f"{identity}.log"
        args = [sys.executable, __file__, "--url", url, "--name", name,
                "--identity", identity, "--markers", str(markers)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=out)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def read_markers(markers: Path) -> list[tuple[float, str, str]]:
    """The ``(time, event, identity)`` lines written so far."""
    if not markers.exists():
        return []
    lines = [line.split() for line in markers.read_text().splitlines() if line.strip()]
    return [(float(t), event, who) for t, event, who in lines]


def main(argv: list[str] | None = None) -> None:
    from kubernetes import client

    from dra_framework.api.leader import LeaderElector
    from dra_framework.api.rest import KubeApi

    parser = argparse.ArgumentParser()
    for flag in ("--url", "--name", "--identity", "--markers"):
        parser.add_argument(flag, required=True)
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def mark(event: str) -> None:
        line = f"{time.time():.6f} {event} {opts.identity}\n".encode()
        fd = os.open(opts.markers, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def work(stop: threading.Event) -> None:
        mark("start")
        stop.wait()

    configuration = client.Configuration()
    configuration.host = opts.url
    api = KubeApi(api_client=client.ApiClient(configuration), timeout=2.0)
    elector = LeaderElector(api=api, namespace="default", name=opts.name,
                            identity=opts.identity, lease_duration=LEASE,
                            renew_deadline=RENEW, retry_period=RETRY,
                            on_started_leading=work, on_stopped_leading=lambda: mark("stop"))

    def on_term(signum: int, frame: FrameType | None) -> None:
        elector.stop()

    signal.signal(signal.SIGTERM, on_term)
    elector.run()


if __name__ == "__main__":
    main()
