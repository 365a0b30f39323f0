"""Writing a Kubernetes object back without changing the bytes of its RawExtension fields.

Opaque ``parameters`` (and ``status.devices[].data``) of a ResourceClaim are
``runtime.RawExtension`` values: kube-apiserver stores their bytes exactly as the first writer
sent them and compares *bytes* when it checks that ``spec`` or ``status.allocation`` did not
change.  Two facts make that awkward for a JSON client:

* every JSON answer re-encodes those bytes compactly (Go's ``json.Marshal`` compacts the output
  of ``MarshalJSON``, escaping ``<``, ``>`` and ``&``), so a claim whose parameters were written
  with whitespace (Python's ``json.dumps`` defaults) is *served* without it;
* every patch (merge, strategic, JSON) re-serialises the stored object the same way, so any
  patch of such a claim's status is refused as an immutable-field change.

Only a full ``PUT`` whose RawExtension bytes equal the stored ones goes through.  This module
gives the status writer the pieces for that:

* ``scan`` finds the exact source text of every RawExtension value in a JSON document (by path,
  without descending into the values themselves, which may be of any depth and hold integers
  of any length: ``jsondecode`` finds where they end);
* ``dumps`` serialises an object compactly with sorted keys (as ``rest.dumps`` does), splicing
  given source texts in verbatim at their paths;
* ``restyle`` re-lays out a compact value the way common serialisers would have written it
  (``STYLES``), so that a writer can reproduce the stored bytes from the served ones: the first
  style, ``server``, is the served text itself, which is right for everything written compactly
  (kubectl, client-go, this framework);
* ``guesses`` orders the combinations of layouts worth trying for a claim's
  ``status.allocation`` parameters, grouped by config source (``allocation_sources``): all the
  values from one source were usually written by one client, and ``apply_guess`` lays them out.

Paths are tuples of keys and list indices from the document root.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from .jsondecode import raw_decode

RawPath = tuple[str | int, ...]

STYLES: tuple[str, ...] = ("server", "python", "python-compact", "python-indent-2",
                           "python-indent-4")
"""Layouts ``restyle`` knows, most likely first.

``server``: as served.  ``python``: ``json.dumps`` defaults (``", "`` and ``": "``).
``python-compact``: ``json.dumps(separators=(",", ":"))``.  ``python-indent-N``: a value of a
document written with ``json.dumps(indent=N)`` (see ``restyle``'s ``depth``).  The
``python*`` styles also write strings as Python does (``<``, ``>``, ``&`` plain, non-ASCII as
``\\uXXXX``); key order and numbers are kept.
"""

_MAX_RAW_DEPTH = 8
"""No RawExtension field of a ``resource.k8s.io`` object lies deeper than this."""
_WS = re.compile(r"[ \t\n\r]*")
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]|[^\s{}\[\],:"]+', re.DOTALL)
_OPEN = {"{", "["}
_CLOSE = {"}", "]"}


def is_raw_path(path: RawPath) -> bool:
    """True for the RawExtension fields of ``resource.k8s.io`` objects."""
    if len(path) >= 2 and path[-1] == "parameters" and path[-2] == "opaque":
        return True
    return (len(path) == 4 and path[0] == "status" and path[1] == "devices"
            and isinstance(path[2], int) and path[3] == "data")


def scan(text: str) -> dict[RawPath, str]:
    """Map the path of each RawExtension value in the JSON ``text`` to its exact source text.

    Values nested inside a RawExtension value are not looked at.  ``text`` must be valid JSON
    (``ValueError`` otherwise).
    """
    found: dict[RawPath, str] = {}
    if '"parameters"' not in text and '"data"' not in text:
        return found
    _walk(text, _skip(text, 0), (), found)
    return found


def _skip(text: str, i: int) -> int:
    m = _WS.match(text, i)
    return m.end() if m else i


def _walk(text: str, i: int, path: RawPath, found: dict[RawPath, str]) -> int:
    """Parse the value at ``i``; record RawExtension spans below it; return its end."""
    opener = text[i:i + 1]
    if opener not in _OPEN or len(path) >= _MAX_RAW_DEPTH:
        end: int = raw_decode(text, i)[1]
        return end
    closer = "}" if opener == "{" else "]"
    j = _skip(text, i + 1)
    index = 0
    if text[j:j + 1] == closer:
        return j + 1
    while True:
        key: str | int
        if opener == "{":
            if text[j:j + 1] != '"':
                raise ValueError(f"expected a key at offset {j}")
            key, j = json.decoder.scanstring(text, j + 1)  # type: ignore[attr-defined]
            j = _skip(text, j)
            if text[j:j + 1] != ":":
                raise ValueError(f"expected ':' at offset {j}")
            j = _skip(text, j + 1)
        else:
            key, index = index, index + 1
        child = (*path, key)
        if is_raw_path(child):
            end = raw_decode(text, j)[1]
            found[child] = text[j:end]
        else:
            end = _walk(text, j, child, found)
        j = _skip(text, end)
        sep = text[j:j + 1]
        if sep == ",":
            j = _skip(text, j + 1)
        elif sep == closer:
            return j + 1
        else:
            raise ValueError(f"expected ',' or {closer!r} at offset {j}")


def dumps(obj: Any, raw: Mapping[RawPath, str] | None = None) -> bytes:
    """Compact JSON with sorted keys; at each path of ``raw`` present in ``obj``, the given
    text verbatim instead of the value.  ``obj`` itself is not modified."""
    if not raw:
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    nonce = secrets.token_hex(12)
    splices: dict[str, str] = {}
    for n, (path, text) in enumerate(raw.items()):
        token = f"@rawjson-{nonce}-{n}@"
        replaced = _replace_at(obj, path, token)
        if replaced is not obj:
            obj = replaced
            splices[json.dumps(token)] = text
    out = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    for token, text in splices.items():
        out = out.replace(token, text, 1)
    return out.encode()


def _replace_at(node: Any, path: RawPath, value: Any) -> Any:
    """``node`` with ``value`` at ``path`` (copies along the path), or ``node`` itself when
    the path does not exist in it."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict) and isinstance(head, str) and head in node:
        child = _replace_at(node[head], rest, value)
        return node if child is node[head] and rest else {**node, head: child}
    if isinstance(node, list) and isinstance(head, int) and 0 <= head < len(node):
        child = _replace_at(node[head], rest, value)
        if child is node[head] and rest:
            return node
        copy = list(node)
        copy[head] = child
        return copy
    return node


def restyle(text: str, style: str, *, depth: int = 0) -> str:
    """The JSON value ``text`` (as a server printed it) laid out in ``style`` (see ``STYLES``).

    ``depth`` matters to the indented styles only: how deep the value sat in the document
    that was serialised (``spec.devices.config[0].opaque.parameters`` of a ResourceClaim is at
    depth 6), since ``json.dumps(doc, indent=N)`` indents a nested value's lines by that much.
    """
    if style == "server":
        return text
    layouts = {"python": (", ", ": ", 0), "python-compact": (",", ":", 0),
               "python-indent-2": (",", ": ", 2), "python-indent-4": (",", ": ", 4)}
    if style not in layouts:
        raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")
    item_sep, key_sep, indent = layouts[style]
    tokens = _TOKENS.findall(text)
    out: list[str] = []
    level = depth
    for k, tok in enumerate(tokens):
        if tok in _OPEN:
            out.append(tok)
            if indent and k + 1 < len(tokens) and tokens[k + 1] not in _CLOSE:
                level += 1
                out.append("\n" + " " * (indent * level))
        elif tok in _CLOSE:
            if indent and k > 0 and tokens[k - 1] not in _OPEN:
                level -= 1
                out.append("\n" + " " * (indent * level))
            out.append(tok)
        elif tok == ",":
            out.append(item_sep + ("\n" + " " * (indent * level) if indent else ""))
        elif tok == ":":
            out.append(key_sep)
        elif tok.startswith('"'):
            out.append(json.dumps(json.loads(tok)))
        else:
            out.append(tok)
    return "".join(out)


# --- guessing how status.allocation parameters were first written ----------------------

Layout = tuple[str, int]
"""A ``STYLES`` name and the ``depth`` for ``restyle``."""

Guess = tuple[tuple[str, Layout], ...]
"""A layout per config source: ``(("FromClaim", ("python", 0)), ("FromClass", ("server", 0)))``."""

_PLAIN: tuple[Layout, ...] = (("server", 0), ("python", 0), ("python-compact", 0))
# Where parameters were first written: a DeviceClass's spec.config[].opaque.parameters is at
# depth 5; a claim's spec.devices.config[].opaque.parameters at 6, a template's at 7.  The
# scheduler copies those bytes unchanged into the claim's status.allocation.
_DEPTHS = {"FromClass": (5,), "FromClaim": (6, 7)}
_ALLOCATION_CONFIG = ("status", "allocation", "devices", "config")


def layouts(source: str) -> tuple[Layout, ...]:
    """The layouts worth trying for parameters of a config entry from ``source``."""
    depths = _DEPTHS.get(source, (5, 6, 7))
    return _PLAIN + tuple((f"python-indent-{n}", d) for n in (2, 4) for d in depths)


def allocation_sources(obj: Mapping[str, Any], raw: Mapping[RawPath, str]
                       ) -> dict[RawPath, str]:
    """The ``status.allocation`` paths of ``raw``, each with its config entry's ``source``."""
    configs = ((((obj.get("status") or {}).get("allocation") or {}).get("devices") or {})
               .get("config") or [])
    sources: dict[RawPath, str] = {}
    for path in raw:
        if path[:4] == _ALLOCATION_CONFIG and len(path) > 4:
            index = path[4]
            entry = configs[index] if isinstance(index, int) and index < len(configs) else {}
            sources[path] = str(entry.get("source") or "") if isinstance(entry, Mapping) else ""
    return sources


def guesses(groups: Sequence[str], *, limit: int) -> list[Guess]:
    """Up to ``limit`` layout combinations for ``groups`` (sources), most likely first: fewest
    departures from ``server``; among equals, the first group (``FromClaim`` sorts before
    ``FromClass``: users' own clients write claims more often than classes) varies first."""
    choices = [list(enumerate(layouts(g))) for g in groups]
    combos = sorted(itertools.product(*choices),
                    key=lambda c: (sum(i for i, _ in c), [-i for i, _ in c]))
    return [tuple(zip(groups, (layout for _, layout in combo), strict=True))
            for combo in combos[:limit]]


def apply_guess(raw: Mapping[RawPath, str], sources: Mapping[RawPath, str],
                guess: Guess) -> dict[RawPath, str]:
    """``raw`` with each ``status.allocation`` value laid out as ``guess`` says for its source."""
    by_source = dict(guess)
    out = dict(raw)
    for path, source in sources.items():
        style, depth = by_source[source]
        out[path] = restyle(raw[path], style, depth=depth)
    return out
