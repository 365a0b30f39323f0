"""What ``jsondecode.loads`` costs next to ``json.loads``: prints microseconds per decode.

Ordinary answers take the fast path (``json.loads`` itself); the figures show what the
wrapper adds to it, and what the stack parser costs when a claim's parameters need it.

    python bench/jsondecode.py
"""

from __future__ import annotations

import functools
import json
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dra_framework.api import jsondecode

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "kube-v1.35"


def per_call(fn: Callable[[], Any]) -> float:
    """Microseconds per call, best of five runs of about 0.2 s each."""
    number, _ = timeit.Timer(fn).autorange()
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def hostile(claim: dict[str, Any], parameters: str) -> bytes:
    config = claim["status"]["allocation"]["devices"]["config"]
    config[-1]["opaque"]["parameters"] = "@P@"
    return json.dumps(claim, separators=(",", ":")).replace('"@P@"', parameters).encode()


def main() -> None:
    claim = (FIXTURES / "resourceclaim-allocated.json").read_bytes()
    listed = b'{"kind":"ResourceClaimList","items":[' + b",".join([claim] * 100) + b"]}"
    cases = {
        f"typical claim ({len(claim)} B)": claim,
        f"list of 100 claims ({len(listed)} B)": listed,
        "claim, parameters 3,000 deep": hostile(json.loads(claim), "[" * 3000 + "]" * 3000),
        "claim, a 5,000-digit integer": hostile(json.loads(claim), '{"n":' + "7" * 5000 + "}"),
    }
    print(f"{'document':40} {'json.loads':>12} {'jsondecode':>12}")
    for name, data in cases.items():
        try:
            plain = f"{per_call(functools.partial(json.loads, data)):10.1f}us"
        except (RecursionError, ValueError) as exc:
            plain = type(exc).__name__
        ours = per_call(functools.partial(jsondecode.loads, data))
        print(f"{name:40} {plain:>12} {ours:10.1f}us")


if __name__ == "__main__":
    main()
