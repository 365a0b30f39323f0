"""Decoding the JSON the API server sends, whatever its depth or the size of its numbers.

Opaque ``parameters`` of a ResourceClaim (``runtime.RawExtension``) are any JSON object a user
wrote, and kube-apiserver keeps them as bytes: a claim can carry lists nested thousands deep or
an integer of thousands of digits.  ``json.loads`` fails on both, with ``RecursionError`` past
the interpreter's recursion limit and ``ValueError`` for an integer longer than
``sys.get_int_max_str_digits()`` (4300 digits by default).  One such claim of any driver must
not make the documents around it unreadable (a list of claims, a watch stream), so everything
the API plane reads is decoded here: ``loads`` for a whole text, ``raw_decode`` for one value
inside a text.

* Fast path: the C decoder of ``json``, unchanged in result and in cost for ordinary text.
* When it gives up on depth or on an integer's size, a parser that keeps its own stack (no
  recursion) builds the same values, in time linear in the text: containers near the top are
  still tried with the C decoder first, so a list of claims with one hostile item pays the slow
  parse for that item only.
* An integer too long for ``int()`` becomes an ``OversizedInteger``: it keeps the text but is no
  number (neither ``int``, ``float`` nor ``str``, without ``__int__``, ``__float__`` or
  ``__index__``), so a typed decoder downstream refuses it with an error that names it instead
  of storing a changed value, and ``json.dumps`` refuses it instead of writing something else.

Everything else is what ``json.loads`` does (``NaN`` and ``Infinity`` accepted, a float too large
for a double is ``inf``, the last of duplicate keys wins); malformed text raises
``json.JSONDecodeError`` (a ``ValueError``).  Decoded values may nest deeper than the recursion
limit, so code that walks opaque parameters must not recurse (``dra_framework.node.allocation``
refuses them past its own depth limit); ``clone`` copies them without recursion.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, final

import attrs

__all__ = ["OversizedInteger", "clone", "loads", "raw_decode"]

_DECODER: Final = json.JSONDecoder()
_SCANSTRING: Final = json.decoder.scanstring  # type: ignore[attr-defined]
_WS: Final = re.compile(r"[ \t\n\r]*")
_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_C_DEPTH: Final = 8
"""Containers less deeply nested than this are tried whole with the C decoder first."""
_NOTHING: Final = object()


@final
@attrs.frozen(repr=False)
class OversizedInteger:
    """A JSON integer too long for ``int()``; ``text`` is its exact spelling.

    Deliberately not a number: whoever expects an ``int`` or a ``float`` gets a type error
    naming this class, never a value that differs from the one written.
    """

    text: str

    @property
    def digits(self) -> int:
        """How many digits the integer has."""
        return len(self.text) - self.text.startswith("-")

    def __repr__(self) -> str:
        return f"<{self.digits}-digit integer, too long to convert: {self.text[:16]}...>"


def loads(data: str | bytes | bytearray) -> Any:
    """The value of the JSON document ``data`` (UTF-8/16/32 bytes, or text)."""
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        raise
    except (RecursionError, ValueError):  # too deep, or an integer too long for int()
        pass
    text = data if isinstance(data, str) else bytes(data).decode(
        json.detect_encoding(data), "surrogatepass")
    value, end = _parse(text, _skip(text, 0), tried=True)
    end = _skip(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def raw_decode(text: str, index: int = 0) -> tuple[Any, int]:
    """The JSON value that starts at ``text[index]`` (no whitespace before it) and the index
    just after it, like ``json.JSONDecoder.raw_decode``."""
    try:
        return _DECODER.raw_decode(text, index)
    except json.JSONDecodeError:
        raise
    except (RecursionError, ValueError):
        return _parse(text, index, tried=True)


def _skip(text: str, index: int) -> int:
    match = _WS.match(text, index)
    return match.end() if match else index


def _parse(text: str, index: int, *, tried: bool = False) -> tuple[Any, int]:
    """Parse the value at ``index`` with an explicit stack; ``tried``: the C decoder already
    failed on it as a whole."""
    stack: list[list[Any] | dict[str, Any]] = []
    keys: list[str] = []  # the key awaiting its value, for each open object ("" for a list)
    i = index
    while True:
        char = text[i:i + 1]
        value: Any = _NOTHING
        if char == "{" or char == "[":
            if len(stack) < _C_DEPTH and not tried:
                try:
                    value, i = _DECODER.raw_decode(text, i)
                except json.JSONDecodeError:
                    raise
                except (RecursionError, ValueError):
                    pass
            tried = False
            if value is _NOTHING:
                closer = "}" if char == "{" else "]"
                j = _skip(text, i + 1)
                if text[j:j + 1] == closer:
                    value, i = ({} if char == "{" else []), j + 1
                elif char == "{":
                    stack.append({})
                    key, i = _key(text, j)
                    keys.append(key)
                    continue
                else:
                    stack.append([])
                    keys.append("")
                    i = j
                    continue
        else:
            value, i = _scalar(text, i)
        while True:  # store the value in its container; close the containers that end here
            if not stack:
                return value, i
            top = stack[-1]
            if isinstance(top, list):
                top.append(value)
            else:
                top[keys[-1]] = value
            i = _skip(text, i)
            char = text[i:i + 1]
            if char == ",":
                i = _skip(text, i + 1)
                if isinstance(top, dict):
                    keys[-1], i = _key(text, i)
                break
            if char == ("]" if isinstance(top, list) else "}"):
                value, i = stack.pop(), i + 1
                keys.pop()
                continue
            raise json.JSONDecodeError("Expecting ',' delimiter", text, i)


def _key(text: str, i: int) -> tuple[str, int]:
    """An object's key at ``i`` and the index of its value (after the ``:``)."""
    if text[i:i + 1] != '"':
        raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
    key, i = _SCANSTRING(text, i + 1)
    i = _skip(text, i)
    if text[i:i + 1] != ":":
        raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
    return key, _skip(text, i + 1)


def _scalar(text: str, i: int) -> tuple[Any, int]:
    """A string, number or literal at ``i`` (the C decoder does not recurse for these)."""
    try:
        return _DECODER.raw_decode(text, i)
    except json.JSONDecodeError:
        raise
    except ValueError:
        match = _NUMBER.match(text, i)
        if match is None or match.group(1) or match.group(2):
            raise
        return OversizedInteger(match.group(0)), match.end()


def clone(value: Any) -> Any:
    """A deep copy of the dicts and lists in ``value`` (other values are immutable)."""
    if not isinstance(value, (dict, list)):
        return value
    root: Any = {} if isinstance(value, dict) else []
    work: list[tuple[Any, Any]] = [(value, root)]
    while work:
        source, target = work.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, child in items:
            copied = {} if isinstance(child, dict) else [] if isinstance(child, list) else child
            if isinstance(target, dict):
                target[key] = copied
            else:
                target.append(copied)
            if copied is not child:
                work.append((child, copied))
    return root
