"""rawjson: RawExtension spans found, spliced back verbatim, and re-laid out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dra_framework.api import rawjson

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=20)


def served(value: Any) -> str:
    """How kube-apiserver prints a stored RawExtension: compact, ``<>&`` escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_restyle_reproduces_pythons_layouts(value: Any) -> None:
    text = served(value)
    assert rawjson.restyle(text, "server") == text
    assert rawjson.restyle(text, "python") == json.dumps(value)
    assert rawjson.restyle(text, "python-compact") == json.dumps(value, separators=(",", ":"))
    assert rawjson.restyle(text, "python-indent-2") == json.dumps(value, indent=2)
    assert rawjson.restyle(text, "python-indent-4") == json.dumps(value, indent=4)


def test_restyle_at_depth_matches_a_nested_value() -> None:
    value = {"a": [1, {"b": {}}], "c": "<&>"}
    doc = {"spec": {"config": [{"opaque": {"parameters": value}}]}}
    for indent in (2, 4):
        spans = rawjson.scan(json.dumps(doc, indent=indent))
        nested = spans[("spec", "config", 0, "opaque", "parameters")]
        assert rawjson.restyle(served(value), f"python-indent-{indent}", depth=5) == nested


def test_restyle_refuses_unknown_styles() -> None:
    with pytest.raises(ValueError, match="unknown style"):
        rawjson.restyle("{}", "yaml")


DOC = {
    "spec": {"devices": {"config": [{"opaque": {"driver": "d", "parameters": {
        "opaque": {"parameters": "nested, not a span of its own"}}}}]}},
    "metadata": {"parameters": {"not under": "opaque"}},
    "status": {"devices": [{"driver": "e"}, {"driver": "d", "data": {"b": 1, "a": 2}}],
               "allocation": {"devices": {"config": [{"opaque": {"parameters": []}}]}}},
    "data": {"top-level data is not raw": True},
}


@pytest.mark.parametrize("indent", [None, 1, 3], ids=["compact", "indent-1", "indent-3"])
def test_scan_finds_raw_values_and_dumps_splices_them(indent: int | None) -> None:
    text = json.dumps(DOC, indent=indent)
    spans = rawjson.scan(text)
    assert sorted(spans, key=str) == sorted([
        ("spec", "devices", "config", 0, "opaque", "parameters"),
        ("status", "devices", 1, "data"),
        ("status", "allocation", "devices", "config", 0, "opaque", "parameters"),
    ], key=str)
    for path, span in spans.items():
        node: Any = DOC
        for part in path:
            node = node[part]
        assert json.loads(span) == node
    body = rawjson.dumps(json.loads(text), spans).decode()
    assert json.loads(body) == DOC
    for span in spans.values():
        assert span in body  # verbatim, whitespace and key order included
    assert '"status":{"allocation"' in body  # everything else compact, keys sorted


def test_dumps_without_spans_is_compact_and_sorted() -> None:
    assert rawjson.dumps({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'
    assert rawjson.dumps({"b": 1}, {("missing", "path"): "{ }"}) == b'{"b":1}'


def test_dumps_leaves_its_input_alone() -> None:
    obj = json.loads(json.dumps(DOC))
    rawjson.dumps(obj, {("status", "devices", 1, "data"): '{ "x": 1 }'})
    assert obj == DOC


def test_scan_refuses_broken_json() -> None:
    with pytest.raises(ValueError):
        rawjson.scan('{"data": {"a": 1} "parameters": 2}')
