"""Decoding user-supplied config and backend options, as every backend gets it from
``dra_framework.convert``: no type coercion, the field path in every error, bounded messages."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import pytest

from dra_framework.convert import (
    QUOTE_LIMIT,
    quote,
    structure_config,
    structure_options,
)
from dra_framework.errors import ConfigError


class Level(enum.Enum):
    LOW = 1
    HIGH = "high"


@attrs.frozen
class Tagged:
    kind: Literal["Tagged"]
    size: int = 0


@attrs.frozen
class Other:
    kind: Literal["Other"]
    name: str = ""


@attrs.frozen
class Model:
    """One field of every shape a backend's config model may have."""

    count: int = 0
    ratio: float = 0.0
    name: str = ""
    enabled: bool = False
    mode: Literal["A", "B"] = "A"
    one: Literal[1] = 1
    level: Level = Level.LOW
    items: list[int] = attrs.field(factory=list)
    pair: tuple[int, str] = (0, "")
    many: tuple[str, ...] = ()
    tags: frozenset[str] = frozenset()
    seq: Sequence[int] = ()
    labels: dict[str, int] = attrs.field(factory=dict)
    limit: int | None = None
    either: int | str = 0
    inner: Tagged | Other | None = None
    anything: Any = None
    _secret: str = ""


def decode(**fields: Any) -> Model:
    return structure_config(fields, Model, what="Model")


ACCEPTED = [
    pytest.param({"count": 3}, Model(count=3), id="int"),
    pytest.param({"count": 2**80}, Model(count=2**80), id="big-int"),
    pytest.param({"ratio": 0.5}, Model(ratio=0.5), id="float"),
    pytest.param({"ratio": 2}, Model(ratio=2.0), id="int-is-a-number"),
    pytest.param({"name": "x", "enabled": True}, Model(name="x", enabled=True), id="str-bool"),
    pytest.param({"mode": "B", "one": 1}, Model(mode="B"), id="literals"),
    pytest.param({"level": "high"}, Model(level=Level.HIGH), id="enum"),
    pytest.param({"items": [1, 2], "many": ["a"], "tags": ["t"], "seq": [4]},
                 Model(items=[1, 2], many=("a",), tags=frozenset({"t"}), seq=(4,)),
                 id="arrays"),
    pytest.param({"pair": [1, "a"]}, Model(pair=(1, "a")), id="fixed-tuple"),
    pytest.param({"labels": {"a": 1}}, Model(labels={"a": 1}), id="mapping"),
    pytest.param({"limit": None}, Model(), id="null-optional"),
    pytest.param({"either": "s"}, Model(either="s"), id="union-str"),
    pytest.param({"either": 5}, Model(either=5), id="union-int"),
    pytest.param({"inner": {"kind": "Other", "name": "n"}}, Model(inner=Other("Other", "n")),
                 id="tagged-union"),
    pytest.param({"anything": {"deep": [1, True]}}, Model(anything={"deep": [1, True]}),
                 id="any-passes-through"),
    pytest.param({"secret": "s"}, Model(secret="s"), id="private-field-by-alias"),
]


@pytest.mark.parametrize(("fields", "expected"), ACCEPTED)
def test_values_of_the_field_type_are_accepted(fields: dict[str, Any], expected: Model) -> None:
    assert decode(**fields) == expected


REFUSED = [
    pytest.param({"count": True}, "expected an integer, got boolean true @ $.count",
                 id="int-from-bool"),
    pytest.param({"count": 2.0}, "expected an integer, got number 2.0 @ $.count",
                 id="int-from-whole-float"),
    pytest.param({"count": "5"}, "expected an integer, got string '5' @ $.count",
                 id="int-from-string"),
    pytest.param({"count": None}, "expected an integer, got null @ $.count", id="int-from-null"),
    pytest.param({"ratio": False}, "expected a number, got boolean false @ $.ratio",
                 id="float-from-bool"),
    pytest.param({"ratio": "0.5"}, "expected a number, got string '0.5' @ $.ratio",
                 id="float-from-string"),
    pytest.param({"ratio": 10**400}, "expected a finite number, got an integer of 1329 bits "
                 "@ $.ratio", id="float-overflow"),
    pytest.param({"name": 5}, "expected a string, got integer 5 @ $.name", id="str-from-int"),
    pytest.param({"name": ["x"]}, "expected a string, got array @ $.name", id="str-from-array"),
    pytest.param({"enabled": 1}, "expected a boolean, got integer 1 @ $.enabled",
                 id="bool-from-int"),
    pytest.param({"enabled": "true"}, "expected a boolean, got string 'true' @ $.enabled",
                 id="bool-from-string"),
    pytest.param({"mode": "C"}, "expected one of 'A', 'B', got string 'C' @ $.mode",
                 id="literal-value"),
    pytest.param({"one": True}, "expected one of 1, got boolean true @ $.one",
                 id="literal-from-bool"),
    pytest.param({"one": 1.0}, "expected one of 1, got number 1.0 @ $.one",
                 id="literal-from-float"),
    pytest.param({"level": True}, "expected one of 1, 'high', got boolean true @ $.level",
                 id="enum-from-bool"),
    pytest.param({"items": "12"}, "expected an array, got string '12' @ $.items",
                 id="list-from-string"),
    pytest.param({"items": {"1": 2}}, "expected an array, got object @ $.items",
                 id="list-from-object"),
    pytest.param({"items": [1, "2"]}, "expected an integer, got string '2' @ $.items[1]",
                 id="list-element"),
    pytest.param({"many": "ab"}, "expected an array, got string 'ab' @ $.many",
                 id="tuple-from-string"),
    pytest.param({"tags": "t"}, "expected an array, got string 't' @ $.tags",
                 id="set-from-string"),
    pytest.param({"seq": 7}, "expected an array, got integer 7 @ $.seq", id="sequence-from-int"),
    pytest.param({"pair": [1]}, "expected an array of 2 items, got array @ $.pair",
                 id="fixed-tuple-length"),
    pytest.param({"labels": [["a", 1]]}, "expected an object, got array @ $.labels",
                 id="mapping-from-array"),
    pytest.param({"labels": {"a": True}}, "expected an integer, got boolean true @ "
                 "$.labels['a']", id="mapping-value"),
    pytest.param({"limit": "none"}, "expected an integer, got string 'none' @ $.limit",
                 id="optional-int-from-string"),
    pytest.param({"either": True}, "expected an integer or a string, got boolean true @ "
                 "$.either", id="union-from-bool"),
    pytest.param({"inner": {"kind": "Tagged", "size": "2"}}, "expected an integer, got "
                 "string '2' @ $.inner.size", id="tagged-union-names-the-field"),
    pytest.param({"inner": {"kind": "Neither"}}, "matches none of Tagged, Other @ $.inner",
                 id="untagged-union"),
    pytest.param({"inner": "Tagged"}, "expected an object or null, got string 'Tagged' @ "
                 "$.inner", id="union-from-string"),
    pytest.param({"secret": 1}, "expected a string, got integer 1 @ $.secret",
                 id="private-field-by-alias"),
    pytest.param({"counts": 1, "": 2, "a b": 3}, "extra fields found ('', 'a b', counts) @ $",
                 id="unknown-keys"),
]


@pytest.mark.parametrize(("fields", "message"), REFUSED)
def test_values_of_another_type_are_refused_naming_the_field(fields: dict[str, Any],
                                                             message: str) -> None:
    with pytest.raises(ConfigError) as err:
        decode(**fields)
    assert str(err.value) == f"invalid Model: {message}"


@pytest.mark.parametrize("data", [
    pytest.param("Model", id="string"), pytest.param([], id="array"),
    pytest.param(None, id="null"), pytest.param(3, id="number"),
])
def test_a_config_that_is_not_an_object_is_refused(data: Any) -> None:
    with pytest.raises(ConfigError, match=r"invalid Model: expected an object, got .* @ \$$"):
        structure_config(data, Model, what="Model")


def test_every_problem_is_reported_up_to_a_limit() -> None:
    with pytest.raises(ConfigError) as err:
        decode(items=["x"] * 50, name=1)
    message = str(err.value)
    assert message.count(" @ $.") == 10
    assert message.endswith("; and 41 more problems")


@pytest.mark.parametrize(("value", "text"), [
    pytest.param("short", "'short'", id="string"),
    pytest.param("x" * 1000, f"{'x' * QUOTE_LIMIT!r}... (1000 characters)", id="long-string"),
    pytest.param(True, "true", id="boolean"),
    pytest.param(None, "null", id="null"),
    pytest.param(12, "12", id="integer"),
    pytest.param(10**5000, "an integer of 16610 bits", id="huge-integer"),
    pytest.param(1.5, "1.5", id="number"),
    pytest.param({"a": 1, "b": 2}, "an object of 2 keys", id="object"),
    pytest.param([1] * 10**6, "an array of 1000000 items", id="array"),
])
def test_quote_bounds_what_a_message_shows(value: object, text: str) -> None:
    assert quote(value) == text


def test_keys_in_paths_and_unknown_keys_are_cut_short() -> None:
    key = "k" * 1_000_000
    with pytest.raises(ConfigError) as err:
        decode(labels={key: "1"}, **{key: 1})
    message = str(err.value)
    assert "$.labels['kkk" in message and "extra fields found ('kkk" in message
    assert len(message) < 2 * QUOTE_LIMIT + 200 + 2 * len("... (1000000 characters)")


@attrs.frozen
class Options:
    name: str = "default"
    mode: Literal["real", "fake"] = "real"
    level: Level = Level.LOW
    count: int = 1
    delay: float = 0.0
    enabled: bool = True
    limit: int | None = None
    either: int | str = 0
    paths: list[str] = attrs.field(factory=list)


def options(**given: Any) -> Options:
    return structure_options(given, Options, backend="test")


@pytest.mark.parametrize(("given", "expected"), [
    pytest.param({"name": "on"}, Options(name="on"), id="str-not-a-yaml-bool"),
    pytest.param({"name": "1.20"}, Options(name="1.20"), id="str-not-a-yaml-number"),
    pytest.param({"name": "~"}, Options(name="~"), id="str-not-a-yaml-null"),
    pytest.param({"name": ""}, Options(name=""), id="empty-string"),
    pytest.param({"mode": "fake"}, Options(mode="fake"), id="literal-of-strings"),
    pytest.param({"level": "high"}, Options(level=Level.HIGH), id="enum-with-string-values"),
    pytest.param({"either": "007"}, Options(either="007"), id="union-with-str-stays-raw"),
    pytest.param({"count": "12", "delay": "1.5", "enabled": "off"},
                 Options(count=12, delay=1.5, enabled=False), id="yaml-scalars"),
    pytest.param({"limit": "null"}, Options(), id="yaml-null-for-optional"),
    pytest.param({"paths": "[a, b]"}, Options(paths=["a", "b"]), id="yaml-list"),
    pytest.param({"count": 3, "enabled": False}, Options(count=3, enabled=False),
                 id="typed-values"),
])
def test_option_strings_are_read_by_the_option_type(given: dict[str, Any],
                                                    expected: Options) -> None:
    assert options(**given) == expected


@pytest.mark.parametrize(("given", "message"), [
    pytest.param({"count": "1.0"}, "expected an integer, got number 1.0 @ $.count",
                 id="int-from-yaml-float"),
    pytest.param({"count": "yes"}, "expected an integer, got boolean true @ $.count",
                 id="int-from-yaml-bool"),
    pytest.param({"count": "{a: 1"}, "expected an integer, got string '{a: 1' @ $.count",
                 id="int-from-bad-yaml"),
    pytest.param({"delay": "true"}, "expected a number, got boolean true @ $.delay",
                 id="float-from-yaml-bool"),
    pytest.param({"enabled": "0"}, "expected a boolean, got integer 0 @ $.enabled",
                 id="bool-from-yaml-int"),
    pytest.param({"name": 5}, "expected a string, got integer 5 @ $.name", id="str-from-int"),
    pytest.param({"mode": "on"}, "expected one of 'real', 'fake', got string 'on' @ $.mode",
                 id="literal"),
    pytest.param({"paths": "a"}, "expected an array, got string 'a' @ $.paths",
                 id="list-from-scalar"),
    pytest.param({"no_such": "1"}, "extra fields found (no_such) @ $", id="unknown-option"),
])
def test_bad_option_values_are_refused(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        options(**given)
    assert str(err.value) == f"invalid options of backend test: {message}"


def test_options_from_a_mapping_keep_their_names() -> None:
    given: Mapping[str, Any] = {"name": "x", "count": "2"}
    assert structure_options(given, Options, backend="test") == Options(name="x", count=2)
