"""Decoding API answers: the same values as ``json.loads``, at any depth and integer length."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dra_framework.api import jsondecode
from dra_framework.api.jsondecode import OversizedInteger
from dra_framework.convert import structure_config
from dra_framework.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-v1.35"
DEPTH = 3000
DIGITS = 5000
BIG = "7" * DIGITS

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=4),
    max_leaves=30)


def nested(depth: int, leaf: Any = None) -> Any:
    value: Any = [] if leaf is None else [leaf]
    for _ in range(depth - 1):
        value = [value]
    return value


def depth_of(value: Any) -> int:
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    return depth


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_captured_answers_decode_as_json_loads_does(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    assert jsondecode.loads(data) == json.loads(data)


@settings(max_examples=200)
@given(value=json_values, indent=st.sampled_from([None, 1]))
def test_the_stack_parser_agrees_with_json_loads(value: Any, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    assert jsondecode._parse(text, 0, tried=True) == (json.loads(text), len(text))
    assert jsondecode.raw_decode(f"xx{text}yy", 2) == (json.loads(text), 2 + len(text))


def test_deeper_than_the_recursion_limit() -> None:
    text = "[" * DEPTH + "]" * DEPTH
    with pytest.raises(RecursionError):
        json.loads(text)
    assert depth_of(jsondecode.loads(text)) == DEPTH
    assert depth_of(jsondecode.loads(text.encode())) == DEPTH
    obj = jsondecode.loads('{"a": {"b": ' + text + '}, "c": [1, {"d": 2}]}')
    assert depth_of(obj["a"]["b"]) == DEPTH and obj["c"] == [1, {"d": 2}]


@pytest.mark.parametrize("spelling", [BIG, "-" + BIG])
def test_an_integer_too_long_for_int_keeps_its_text(spelling: str) -> None:
    assert len(spelling.lstrip("-")) > sys.get_int_max_str_digits()
    obj = jsondecode.loads('{"n": ' + spelling + ', "small": 12, "f": 1.5}')
    assert obj["n"] == OversizedInteger(spelling) and obj["n"].digits == DIGITS
    assert obj["small"] == 12 and obj["f"] == 1.5
    assert jsondecode.loads(spelling) == OversizedInteger(spelling)


def test_depth_and_long_integers_together_in_a_list_of_items() -> None:
    hostile = '{"p": ' + "[" * DEPTH + BIG + "]" * DEPTH + "}"
    items = jsondecode.loads('{"items": [{"a": 1}, ' + hostile + ', {"b": 2}]}')["items"]
    assert items[0] == {"a": 1} and items[2] == {"b": 2}
    inner = items[1]["p"]
    for _ in range(DEPTH):
        inner = inner[0]
    assert inner == OversizedInteger(BIG)


def test_an_oversized_integer_is_no_number() -> None:
    value = jsondecode.loads(BIG)
    assert not isinstance(value, (int, float, str))
    for convert in (int, float, complex):
        with pytest.raises(TypeError):
            convert(value)
    with pytest.raises(TypeError):
        json.dumps(value)
    assert str(DIGITS) in repr(value) and len(repr(value)) < 100


@attrs.frozen
class Params:
    count: int
    ratio: float = 0.0


@pytest.mark.parametrize("field", ["count", "ratio"])
def test_a_typed_decoder_refuses_an_oversized_integer_by_name(field: str) -> None:
    params = jsondecode.loads(f'{{"count": 1, "{field}": {BIG}}}')
    with pytest.raises(ConfigError) as err:
        structure_config(params, Params)
    assert f"$.{field}" in str(err.value) and "OversizedInteger" in str(err.value)


@pytest.mark.parametrize("text", [
    "", "[1,]", '{"a": 1,}', '{"a" 1}', "[1 2]", "[1] x", "[" * DEPTH,
    "[" * DEPTH + "]" * (DEPTH - 1), "[" * DEPTH + "]" * (DEPTH + 1), "[" * DEPTH + "}",
    "[" * DEPTH + '"unterminated' + "]" * DEPTH, "[" * DEPTH + BIG + "x" + "]" * DEPTH,
], ids=["empty", "trailing-comma", "trailing-comma-object", "no-colon", "no-comma",
        "extra-data", "unclosed-deep", "underclosed-deep", "overclosed-deep", "wrong-closer",
        "bad-string-deep", "bad-number-deep"])
def test_malformed_text_is_a_decode_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        jsondecode.loads(text)


def test_invalid_utf8_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        jsondecode.loads(b'["\xff"' + b"[" * DEPTH + b"]" * DEPTH + b"]")
