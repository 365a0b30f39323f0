"""JSON values of the fake API server, whatever their depth or the length of their numbers.

kube-apiserver keeps opaque ``parameters`` as bytes, so it stores and serves what ``json``'s
recursive C code cannot handle: lists nested thousands deep, integers of thousands of digits.
The fake decodes with ``dra_framework.api.jsondecode`` (an integer too long for ``int()`` is an
``OversizedInteger`` that keeps its text) and does the rest here, without recursion:

* ``dumps``: compact JSON, ``json.dumps`` when it can, else an encoder with its own stack that
  writes an ``OversizedInteger`` as its text; keys sorted on request, floats through a
  formatter on request (Go prints them differently from Python);
* ``clone`` (from ``dra_framework.api.jsondecode``): a deep copy that does not recurse.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from dra_framework.api.jsondecode import OversizedInteger, clone, loads

__all__ = ["OversizedInteger", "clone", "dumps", "loads"]


def dumps(value: Any, *, sort_keys: bool = False,
          number: Callable[[float], str] | None = None) -> str:
    """``value`` as compact JSON, non-ASCII characters as themselves."""
    if number is None:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                              sort_keys=sort_keys)
        except (RecursionError, TypeError, ValueError):
            pass
    out: list[str] = []
    work: list[tuple[bool, Any]] = [(False, value)]  # (is literal text, item)
    while work:
        literal, item = work.pop()
        if literal:
            out.append(item)
        elif isinstance(item, dict):
            keys = sorted(item) if sort_keys else list(item)
            work.append((True, "}"))
            for n in range(len(keys) - 1, -1, -1):
                work.append((False, item[keys[n]]))
                work.append((True, ("{" if n == 0 else ",") + _scalar(str(keys[n]), None) + ":"))
            if not keys:
                work.append((True, "{"))
        elif isinstance(item, (list, tuple)):
            work.append((True, "]"))
            for n in range(len(item) - 1, -1, -1):
                work.append((False, item[n]))
                if n:
                    work.append((True, ","))
            work.append((True, "["))
        else:
            out.append(_scalar(item, number))
    return "".join(out)


def _scalar(item: Any, number: Callable[[float], str] | None) -> str:
    if isinstance(item, OversizedInteger):
        return item.text
    if number is not None and isinstance(item, float):
        return number(item)
    return json.dumps(item, ensure_ascii=False)
