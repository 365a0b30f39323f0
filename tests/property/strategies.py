"""Hypothesis strategies for allocated claims of one backend: what the property suite feeds
a running plugin.

A batch is several claims, each one of four shapes, with distinct devices of this node so that
claims of one batch never compete for a device:

* ``valid`` — this driver's results with valid opaque config (class and claim entries), other
  drivers' results and configs (with arbitrary parameters) mixed in: must be prepared;
* ``coerced`` — the same with one typed value of one config entry replaced by a value of another
  JSON type that a lenient decoder would coerce (``1.5``, ``true``, ``"5"`` for an integer,
  ``5`` for a string): must fail, naming that field;
* ``garbage`` — opaque parameters for this driver that are arbitrary JSON (deep nesting, large
  integers, unknown keys): must be answered, and if refused, leave nothing behind;
* ``malformed`` — an allocation whose fields have the wrong JSON type or are missing
  (``results: 7``), or that names a device this node does not have: the same.

What a backend accepts is described by a ``BackendShape``: its driver name, devices, a strategy
of valid configs and the typed leaves of those configs (the fields a coercion can hit).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs
from hypothesis import strategies as st

from dra_framework.testing.claims import Config, Result, allocated_claim

Kind = Literal["int", "str"]
OTHER_DRIVER = "other.example.org"


@attrs.frozen
class Leaf:
    """A typed value inside a config: its keys from the root and how errors name it."""

    keys: tuple[str, ...]
    kind: Kind
    nullable: bool = False

    @property
    def path(self) -> str:
        out = "$"
        for key in self.keys:
            out += f"['{key}']" if key.isdigit() else f".{key}"
        return out


@attrs.frozen
class BackendShape:
    """What the property suite needs to know of a backend to build claims for it."""

    backend: str
    driver: str = attrs.field(repr=False)
    devices: tuple[str, ...] = attrs.field(repr=False)
    configs: Callable[[], st.SearchStrategy[dict[str, Any]]] = attrs.field(repr=False)
    leaves: tuple[Leaf, ...] = attrs.field(repr=False)
    options: Mapping[str, str] = attrs.field(factory=dict, repr=False)


@attrs.frozen
class ClaimCase:
    """One generated claim: its object, its shape and what the plugin must answer."""

    shape: Literal["valid", "coerced", "garbage", "malformed"]
    obj: dict[str, Any]
    devices: tuple[str, ...] = ()
    field: str = ""  # the path an error must name (``coerced``)
    note: str = ""  # what was done to it, for failure messages

    @property
    def uid(self) -> str:
        return str(self.obj["metadata"]["uid"])


@attrs.frozen
class Batch:
    claims: tuple[ClaimCase, ...]


# -- JSON -----------------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
JSON_SCALARS = (st.none() | st.booleans() | _TEXT
                | st.integers(min_value=-(2**200), max_value=2**200)
                | st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 2**64])
                | st.floats(allow_nan=False, allow_infinity=False))


def nested(depth: int, leaf: Any) -> Any:
    """``leaf`` inside ``depth`` levels of alternating objects and arrays."""
    value = leaf
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


JSON = st.one_of(
    st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(_TEXT, inner, max_size=3), max_leaves=12),
    st.builds(nested, st.integers(min_value=1, max_value=300), JSON_SCALARS),
)
JSON_OBJECTS = st.dictionaries(_TEXT, JSON, max_size=4)


def coerced_values(value: Any, leaf: Leaf) -> st.SearchStrategy[Any]:
    """Values of another JSON type than ``value``, each of which some decoder would coerce."""
    if leaf.kind == "int":
        options: list[Any] = [value != 0, float(value), value + 0.5, str(value), [value]]
    else:
        options = [True, False, 5, 1.5, [value], {"value": value}]
    if not leaf.nullable:
        options.append(None)
    return st.sampled_from(options)


# -- claims ---------------------------------------------------------------------------------


def _get(obj: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _set(obj: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    for key in keys[:-1]:
        obj = obj[key]
    obj[keys[-1]] = value


def _claim(shape: BackendShape, devices: tuple[str, ...], configs: list[Config],
           extra: list[Result]) -> dict[str, Any]:
    name = f"c-{uuid.uuid4().hex[:12]}"
    results = [Result(request=f"r{i}", device=d, driver=shape.driver)
               for i, d in enumerate(devices)]
    return allocated_claim(name=name, results=[*results, *extra], configs=configs,
                           device_class=shape.driver)


@st.composite
def _configs(draw: st.DrawFn, shape: BackendShape, requests: int) -> list[Config]:
    """Valid config entries of this driver (class first, then claim), with others' mixed in."""
    out = []
    for source in draw(st.lists(st.sampled_from(["FromClass", "FromClaim"]), max_size=2)):
        scope = draw(st.sampled_from([(), ("r0",), tuple(f"r{i}" for i in range(requests))]))
        out.append(Config(parameters=draw(shape.configs()), source=source, requests=scope,
                          driver=shape.driver))
    if draw(st.booleans()):
        out.append(Config(parameters=draw(JSON_OBJECTS), driver=OTHER_DRIVER))
    return out


def _others(draw: st.DrawFn) -> list[Result]:
    count = draw(st.integers(min_value=0, max_value=2))
    return [Result(request=f"o{i}", device=f"dev-{i}", pool="elsewhere", driver=OTHER_DRIVER)
            for i in range(count)]


@st.composite
def valid_claim(draw: st.DrawFn, shape: BackendShape, devices: tuple[str, ...]) -> ClaimCase:
    configs = draw(_configs(shape, len(devices)))
    return ClaimCase("valid", _claim(shape, devices, configs, _others(draw)), devices)


@st.composite
def coerced_claim(draw: st.DrawFn, shape: BackendShape, devices: tuple[str, ...]) -> ClaimCase:
    config = draw(shape.configs())
    leaves = [leaf for leaf in shape.leaves if _get(config, leaf.keys) is not None]
    nested_leaves = [leaf for leaf in leaves if len(leaf.keys) > 1]
    deep = bool(nested_leaves) and draw(st.booleans())  # half the time, below the top
    leaf = draw(st.sampled_from(nested_leaves if deep else leaves))
    wrong = draw(coerced_values(_get(config, leaf.keys), leaf))
    _set(config, leaf.keys, wrong)
    configs = [*draw(_configs(shape, len(devices))),
               Config(parameters=config, source=draw(st.sampled_from(["FromClass", "FromClaim"])),
                      driver=shape.driver)]
    obj = _claim(shape, devices, configs, _others(draw))
    return ClaimCase("coerced", obj, devices, field=leaf.path, note=f"{leaf.path}={wrong!r}")


@st.composite
def garbage_claim(draw: st.DrawFn, shape: BackendShape, devices: tuple[str, ...]) -> ClaimCase:
    params = draw(st.one_of(
        JSON_OBJECTS,
        shape.configs().flatmap(lambda c: JSON_OBJECTS.map(lambda extra: {**extra, **c})),
        shape.configs().flatmap(lambda c: st.builds(
            lambda key, value: {**c, key: value}, _TEXT, JSON)),
        shape.configs().flatmap(lambda c: st.builds(
            lambda depth, leaf: {**c, "sharing": nested(depth, leaf)},
            st.integers(min_value=1, max_value=300), JSON_SCALARS)),
    ))
    obj = _claim(shape, devices, [Config(parameters=params, driver=shape.driver)], _others(draw))
    return ClaimCase("garbage", obj, devices)


def _not(*kinds: type) -> st.SearchStrategy[Any]:
    """Any JSON value except null and values of ``kinds``."""
    return JSON.filter(lambda v: v is not None and not isinstance(v, kinds))


def _mine(obj: dict[str, Any], shape: BackendShape) -> dict[str, Any]:
    results: list[dict[str, Any]] = obj["status"]["allocation"]["devices"]["results"]
    return next(r for r in results if r["driver"] == shape.driver)


def _entry(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> dict[str, Any]:
    """A new, valid config entry of this driver at the end of the allocation's config."""
    entry = {"source": "FromClaim",
             "opaque": {"driver": shape.driver, "parameters": draw(shape.configs())}}
    obj["status"]["allocation"]["devices"].setdefault("config", []).append(entry)
    return entry


Malform = Callable[[st.DrawFn, dict[str, Any], BackendShape], None]


def _results_not_a_list(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> None:
    obj["status"]["allocation"]["devices"]["results"] = draw(_not(list) | st.none())


def _result_not_an_object(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> None:
    results = obj["status"]["allocation"]["devices"]["results"]
    results[draw(st.integers(0, len(results) - 1))] = draw(JSON_SCALARS)


def _result_key_missing(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> None:
    del _mine(obj, shape)[draw(st.sampled_from(["request", "pool", "device", "driver"]))]


def _result_key_mistyped(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> None:
    key = draw(st.sampled_from(["request", "pool", "device", "adminAccess", "shareID"]))
    wrong = _not(bool) if key == "adminAccess" else _not(str)
    _mine(obj, shape)[key] = draw(wrong)


def _config_not_a_list(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> None:
    obj["status"]["allocation"]["devices"]["config"] = draw(_not(list))


def _config_entry_not_an_object(draw: st.DrawFn, obj: dict[str, Any],
                                shape: BackendShape) -> None:
    obj["status"]["allocation"]["devices"].setdefault("config", []).append(draw(_not(dict)))


def _opaque_not_an_object(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> None:
    _entry(draw, obj, shape)["opaque"] = draw(_not(dict))


def _parameters_not_an_object(draw: st.DrawFn, obj: dict[str, Any],
                              shape: BackendShape) -> None:
    _entry(draw, obj, shape)["opaque"]["parameters"] = draw(_not(dict) | st.none())


def _requests_mistyped(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> None:
    not_strings = st.lists(JSON_SCALARS.filter(lambda v: not isinstance(v, str)), min_size=1,
                           max_size=2)
    _entry(draw, obj, shape)["requests"] = draw(_not(list) | not_strings)


def _source_mistyped(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> None:
    _entry(draw, obj, shape)["source"] = draw(_not(str))


def _parameters_too_deep(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> None:
    parameters = _entry(draw, obj, shape)["opaque"]["parameters"]
    parameters["sharing"] = nested(draw(st.integers(min_value=60, max_value=300)), 1)


def _allocation_not_an_object(draw: st.DrawFn, obj: dict[str, Any],
                              shape: BackendShape) -> None:
    obj["status"]["allocation"] = draw(_not(dict))


def _devices_not_an_object(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> None:
    obj["status"]["allocation"]["devices"] = draw(_not(dict))


def _unallocated(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> None:
    obj["status"] = {}


def _only_other_drivers(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> None:
    devices = obj["status"]["allocation"]["devices"]
    devices["results"] = [r for r in devices["results"] if r["driver"] != shape.driver]


def _device_not_here(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> None:
    mine = [r for r in obj["status"]["allocation"]["devices"]["results"]
            if r["driver"] == shape.driver]
    mine[-1]["device"] = draw(st.sampled_from(["gpu-99", "gpu-", "nvidia0", "gpu-01"]))


def _pool_not_here(draw: st.DrawFn, obj: dict[str, Any], shape: BackendShape) -> None:
    _mine(obj, shape)["pool"] = "node-2"


MALFORMATIONS: Mapping[str, Malform] = {
    "results-not-a-list": _results_not_a_list,
    "result-not-an-object": _result_not_an_object,
    "result-key-missing": _result_key_missing,
    "result-key-mistyped": _result_key_mistyped,
    "config-not-a-list": _config_not_a_list,
    "config-entry-not-an-object": _config_entry_not_an_object,
    "opaque-not-an-object": _opaque_not_an_object,
    "parameters-not-an-object": _parameters_not_an_object,
    "requests-mistyped": _requests_mistyped,
    "source-mistyped": _source_mistyped,
    "parameters-too-deep": _parameters_too_deep,
    "allocation-not-an-object": _allocation_not_an_object,
    "devices-not-an-object": _devices_not_an_object,
    "unallocated": _unallocated,
    "only-other-drivers": _only_other_drivers,
    "device-not-here": _device_not_here,
    "pool-not-here": _pool_not_here,
}


@st.composite
def malformed_claim(draw: st.DrawFn, shape: BackendShape,
                    devices: tuple[str, ...]) -> ClaimCase:
    obj = copy.deepcopy(draw(valid_claim(shape, devices)).obj)
    what = draw(st.sampled_from(sorted(MALFORMATIONS)))
    MALFORMATIONS[what](draw, obj, shape)
    return ClaimCase("malformed", obj, devices, note=what)


_MAKERS = {"valid": valid_claim, "coerced": coerced_claim, "garbage": garbage_claim,
           "malformed": malformed_claim}


@st.composite
def batches(draw: st.DrawFn, shape: BackendShape, *, shapes: tuple[str, ...],
            max_claims: int = 4) -> Batch:
    """1..``max_claims`` claims of the given ``shapes``, each with one or two devices that no
    other claim of the batch has."""
    free = list(draw(st.permutations(shape.devices)))
    claims = []
    for _ in range(draw(st.integers(min_value=1, max_value=max_claims))):
        take = draw(st.integers(min_value=1, max_value=min(2, len(free))))
        devices, free = tuple(free[:take]), free[take:]
        make = _MAKERS[draw(st.sampled_from(shapes))]
        claims.append(draw(make(shape, devices)))
        if not free:
            break
    return Batch(tuple(claims))
