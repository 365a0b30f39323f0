"""Run ``FakeApiServer`` in a process of its own: prints its URL, serves until stdin closes.

The benchmarks use it so that the API server's CPU time is not charged to the plugin under
test, as with a real kube-apiserver.
"""

from __future__ import annotations

import sys

from dra_framework.testing.fakeapi import FakeApiServer

if __name__ == "__main__":
    with FakeApiServer(bookmark_interval=None) as api:
        print(api.url, flush=True)
        sys.stdin.read()
