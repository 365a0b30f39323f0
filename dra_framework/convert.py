"""The converters between attrs models and the camelCase JSON of Kubernetes and CDI.

Every attrs class is (un)structured with its snake_case field names mapped to camelCase
(``host_path`` → ``hostPath``, ``additional_gids`` → ``additionalGids``).  Unstructuring omits
fields that hold their default, which is what CDI loaders (strict about unknown or empty keys)
and compact checkpoints want.  Structuring forbids unknown keys, so a typo in a user's opaque
config is an error instead of being ignored.

There are three converters, because data from different hands deserves different trust:

* ``converter`` (``structure`` / ``unstructure``) reads back what the framework wrote itself
  (the checkpoint, a backend's prepared state) and keeps cattrs' lenient primitive hooks;
* the config converter (``structure_config``) decodes user-supplied JSON and never coerces:
  a boolean is not an integer or a number, a number is not a string nor a string a number,
  a float is not an integer (not even ``2.0``: JSON says it is a float), anything but an
  array is not a list, tuple or set, anything but an object is not a mapping or a model.  An
  integer is a number, so float fields take integers (JSON has one number type); ``Literal``
  and ``Enum`` values must match in type as well as value (``true`` is not ``1``).  A union is
  decoded by the member of the value's own type first, then the others in order; a union of
  models whose ``Literal`` fields name exactly one member is decoded as that member;
* the options converter (``structure_options``) is the config converter with the option
  names as written (``driver_name``).  Options arrive from flags and the environment as
  strings: an option that takes a string keeps it as given (``driver_name=on`` is ``"on"``),
  the others are read as a YAML scalar first (``devices=4``, ``health=false``) and then
  checked as strictly as config.

Any failure to decode user data is one ``ConfigError`` whose message names each offending
field as a JSON path (``$.sharing.interval``).  Error messages stay small whatever the input:
``quote`` caps each quoted value (and each unknown key, and each key in a path) at
``QUOTE_LIMIT`` characters, and at most ``MAX_MESSAGES`` problems are listed.
"""

from __future__ import annotations

import collections.abc as abc
import enum
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

import attrs
import cattrs
import yaml
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .errors import ConfigError

T = TypeVar("T")

QUOTE_LIMIT = 200
"""Most characters of one value, unknown key or path key quoted in an error message."""

MAX_MESSAGES = 10
"""Most problems listed in one ``ConfigError``; the rest are counted."""


_CAMEL_RE = re.compile(r"_([a-z0-9])")


def camel(name: str) -> str:
    """``host_path`` → ``hostPath``."""
    return _CAMEL_RE.sub(lambda m: m.group(1).upper(), name)


def quote(value: object, *, limit: int = QUOTE_LIMIT) -> str:
    """``value`` as an error message may show it: a string in quotes, a scalar in JSON
    spelling, an object or array by its size; never more than about ``limit`` characters."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else _clip(value, limit, repr)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int) and value.bit_length() > limit * 3:  # str() slow, or refused
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, Mapping):
        return f"an object of {len(value)} keys"
    if isinstance(value, (list, tuple)):
        return f"an array of {len(value)} items"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _clip(text: str, limit: int, show: Callable[[str], str] = str) -> str:
    if len(text) <= limit:
        return text
    return f"{show(text[:limit])}... ({len(text)} characters)"


# -- the strict hooks --------------------------------------------------------------------------

_SCALARS: Mapping[type, tuple[str, str]] = {  # bool before int: it is one
    bool: ("boolean", "a boolean"), int: ("integer", "an integer"),
    float: ("number", "a number"), str: ("string", "a string")}


def _describe(value: object) -> str:
    """``boolean true``, ``string '5'``, ``object``…: the JSON type and (scalars) the value."""
    if value is None or isinstance(value, (Mapping, list, tuple)):
        return "null" if value is None else "object" if isinstance(value, Mapping) else "array"
    text = quote(value)
    kind = next((name for cls, (name, _) in _SCALARS.items() if isinstance(value, cls)),
                type(value).__name__)
    return text if text.startswith("an integer of") else f"{kind} {text}"


class _Mismatch(TypeError):
    """A value of the wrong type or outside a ``Literal``; the message says both."""

    def __init__(self, expected: str, value: object) -> None:
        super().__init__(f"expected {expected}, got {_describe(value)}")


_ARRAYS: Mapping[Any, type] = {
    list: list, abc.MutableSequence: list, abc.Sequence: tuple, tuple: tuple,
    set: set, abc.MutableSet: set, frozenset: frozenset, abc.Set: frozenset,
}
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)


def _origin(t: Any) -> Any:
    return typing.get_origin(t) or t


def _is_union(t: Any) -> bool:
    return _origin(t) in (typing.Union, types.UnionType)


def _expected(t: Any) -> str:
    """What a value of type ``t`` looks like in JSON, for error messages."""
    origin = _origin(t)
    if t is None or t is type(None):
        return "null"
    if origin is typing.Literal or (isinstance(t, type) and issubclass(t, enum.Enum)):
        values = typing.get_args(t) if origin is typing.Literal else list(t)
        return "one of " + ", ".join(
            quote(v.value if isinstance(v, enum.Enum) else v) for v in values)
    if _is_union(t):
        return " or ".join(dict.fromkeys(_expected(m) for m in typing.get_args(t)))
    if isinstance(t, type) and attrs.has(t) or origin in _MAPPINGS:
        return "an object"
    if origin in _ARRAYS:
        return "an array"
    return _SCALARS[t][1] if t in _SCALARS else repr(t)


def _scalar(value: Any, t: Any) -> Any:
    if issubclass(t, enum.Enum):
        return _member(value, t, list(t))
    base = next(cls for cls in _SCALARS if issubclass(t, cls))
    ok = isinstance(value, (int, float) if base is float else base) and (
        base in (bool, str) or not isinstance(value, bool))
    if not ok:
        raise _Mismatch(_SCALARS[base][1], value)
    if base is float:
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise _Mismatch("a finite number", value)
        return number
    return value if type(value) is t else t(value)


def _member(value: Any, t: Any, choices: Iterable[Any]) -> Any:
    """The ``Literal`` argument or ``Enum`` member equal to ``value`` in type and value."""
    for choice in choices:
        want = choice.value if isinstance(choice, enum.Enum) else choice
        if type(want) is type(value) and want == value:
            return choice
    raise _Mismatch(_expected(t), value)


def _each(conv: cattrs.Converter, t: Any, items: Iterable[tuple[Any, Any, Any]]) -> list[Any]:
    """Structure ``(index, value, type)`` items; errors carry their index for the path."""
    out: list[Any] = []
    errors: list[Exception] = []
    for index, value, item_type in items:
        try:
            out.append(conv.structure(value, item_type))
        except Exception as exc:
            note = IterableValidationNote("Structuring an item", index, item_type)
            exc.__dict__["__notes__"] = [*getattr(exc, "__notes__", []), note]  # add_note: 3.11
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"While structuring {t!r}", errors, t)
    return out


def _strict_hooks(conv: cattrs.Converter, key_of: Callable[[attrs.Attribute[Any]], str]) -> None:
    for scalar in _SCALARS:
        conv.register_structure_hook(scalar, _scalar)
    conv.register_structure_hook_factory(
        lambda t: isinstance(t, type) and issubclass(t, enum.Enum),
        lambda t: lambda v, _: _member(v, t, list(t)))
    conv.register_structure_hook_factory(
        lambda t: _origin(t) is typing.Literal,
        lambda t: lambda v, _: _member(v, t, typing.get_args(t)))

    def array(value: Any, t: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch("an array", value)
        args = typing.get_args(t)
        if _origin(t) is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Mismatch(f"an array of {len(args)} items", value)
            return tuple(_each(conv, t, zip(range(len(args)), value, args, strict=True)))
        item = args[0] if args else Any
        return _ARRAYS[_origin(t)](_each(conv, t, ((i, v, item) for i, v in enumerate(value))))

    def mapping(value: Any, t: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _Mismatch("an object", value)
        key, item = typing.get_args(t) or (Any, Any)
        keys = _each(conv, t, ((k, k, key) for k in value))
        values = _each(conv, t, ((k, v, item) for k, v in value.items()))
        return dict(zip(keys, values, strict=True))

    def union(t: Any) -> Callable[[Any, Any], Any]:
        members = [m for m in typing.get_args(t) if m is not type(None)]
        nullable = len(members) < len(typing.get_args(t))

        def structure_union(value: Any, _: Any) -> Any:
            if value is None and nullable:
                return None
            tagged = _tagged(value, members, key_of)
            if tagged is not None or len(members) == 1:
                return conv.structure(value, tagged or members[0])
            for member in sorted(members, key=lambda m: m is not type(value)):
                try:
                    return conv.structure(value, member)
                except Exception:
                    continue
            if isinstance(value, Mapping) and all(attrs.has(m) for m in members):
                raise ValueError("matches none of " + ", ".join(m.__name__ for m in members))
            raise _Mismatch(_expected(t), value)

        return structure_union

    conv.register_structure_hook_factory(lambda t: _origin(t) in _ARRAYS, lambda t: array)
    conv.register_structure_hook_factory(lambda t: _origin(t) in _MAPPINGS, lambda t: mapping)
    conv.register_structure_hook_factory(_is_union, union)


def _tagged(value: Any, members: list[Any],
            key_of: Callable[[attrs.Attribute[Any]], str]) -> Any | None:
    """The one model of ``members`` whose ``Literal`` fields ``value`` matches, if exactly one."""
    if not isinstance(value, Mapping) or not all(attrs.has(m) for m in members):
        return None
    found = []
    for member in members:
        tags = [(key_of(a), typing.get_args(a.type)) for a in attrs.fields(attrs.resolve_types(
            member)) if _origin(a.type) is typing.Literal]
        if tags and all(key in value and any(type(v) is type(value[key]) and v == value[key]
                                             for v in allowed) for key, allowed in tags):
            found.append(member)
    return found[0] if len(found) == 1 else None


# -- the converters --------------------------------------------------------------------------


def _json_key(a: attrs.Attribute[Any]) -> str:
    alias = a.alias or a.name  # attrs' alias of ``_private`` is ``private``
    return alias if alias != a.name else camel(a.name)


def _python_key(a: attrs.Attribute[Any]) -> str:
    return a.name


def _make_converter(*, strict: bool = False,
                    key_of: Callable[[attrs.Attribute[Any]], str] = _json_key) -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)

    def renames(cls: type) -> dict[str, Any]:
        return {a.name: override(rename=key_of(a)) for a in attrs.fields(cls)}

    conv.register_unstructure_hook_factory(
        attrs.has,
        lambda cls: make_dict_unstructure_fn(
            cls, conv, _cattrs_omit_if_default=True, **renames(cls)),
    )

    def model(cls: type) -> Callable[[Any, Any], Any]:
        fn: Callable[[Any, Any], Any] = make_dict_structure_fn(
            cls, conv, _cattrs_forbid_extra_keys=True, **renames(cls))
        if not strict:
            return fn

        def structure_object(value: Any, t: Any) -> Any:
            if not isinstance(value, Mapping):
                raise _Mismatch("an object", value)
            return fn(value, t)

        return structure_object

    conv.register_structure_hook_factory(attrs.has, model)
    if strict:
        _strict_hooks(conv, key_of)
    return conv


converter = _make_converter()
_config_converter = _make_converter(strict=True)
_options_converter = _make_converter(strict=True, key_of=_python_key)


def unstructure(obj: Any) -> Any:
    """Model → JSON-ready data (camelCase keys, defaults omitted)."""
    return converter.unstructure(obj)


def structure(data: Any, cls: type[T]) -> T:
    """JSON data → model, for data the framework wrote itself (errors are raised as is)."""
    return converter.structure(data, cls)


def structure_config(data: Any, cls: type[T], *, what: str = "config") -> T:
    """Decode user-supplied JSON into ``cls``; any failure is a ``ConfigError`` naming fields.

    Unknown keys, missing required keys and wrong types (no coercion) are all reported, each
    with its path.
    """
    return _decode(_config_converter, data, cls, what=what, key_of=_json_key)


def structure_options(options: Mapping[str, Any], cls: type[T], *, backend: str) -> T:
    """Decode backend options.  A string stays a string for an option that takes one; for
    any other option it is read as a YAML scalar first (``4``, ``false``)."""
    model: Any = attrs.resolve_types(cast(Any, cls))
    types_ = {a.name: a.type for a in attrs.fields(model)}
    parsed = {}
    for key, value in options.items():
        name = key.replace("-", "_")
        parsed[name] = _option_value(value, types_.get(name, str))
    return _decode(_options_converter, parsed, cls, what=f"options of backend {backend}",
                   key_of=_python_key)


def _option_value(value: Any, t: Any) -> Any:
    if not isinstance(value, str) or value == "" or _takes_string(t):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value  # then refused as a string where the option wants something else


def _takes_string(t: Any) -> bool:
    if isinstance(t, type):
        return issubclass(t, str) or (issubclass(t, enum.Enum)
                                      and any(isinstance(m.value, str) for m in t))
    args = typing.get_args(t)
    if _origin(t) is typing.Literal:
        return any(isinstance(a, str) or isinstance(a, enum.Enum) and isinstance(a.value, str)
                   for a in args)
    return _is_union(t) and any(_takes_string(m) for m in args)


# -- error messages ----------------------------------------------------------------------------


def _decode(conv: cattrs.Converter, data: Any, cls: type[T], *, what: str,
            key_of: Callable[[attrs.Attribute[Any]], str]) -> T:
    try:
        result: T = conv.structure(data, cls)
    except Exception as exc:  # cattrs raises a validation error group, or a plain error
        messages = _messages(exc, "$", key_of)
        if len(messages) > MAX_MESSAGES:
            messages[MAX_MESSAGES:] = [f"and {len(messages) - MAX_MESSAGES} more problems"]
        raise ConfigError(f"invalid {what}: " + "; ".join(messages)) from exc
    return result


def _messages(exc: BaseException, path: str,
              key_of: Callable[[attrs.Attribute[Any]], str]) -> list[str]:
    """``["<problem> @ <path>", ...]`` for ``exc`` and everything grouped under it."""
    paths: list[tuple[BaseException, str]] = []
    if isinstance(exc, ClassValidationError):
        keys = {a.name: key_of(a) for a in attrs.fields(exc.cl)}
        by_field, without = exc.group_exceptions()
        paths = [(sub, f"{path}.{keys.get(note.name, note.name)}") for sub, note in by_field]
    elif isinstance(exc, IterableValidationError):
        by_index, without = exc.group_exceptions()
        for sub, note in by_index:
            index = note.index
            paths.append((sub, f"{path}[{index if isinstance(index, int) else quote(index)}]"))
    else:
        return [f"{_problem(exc)} @ {path}"]
    out = [message for sub, sub_path in paths for message in _messages(sub, sub_path, key_of)]
    return out + [f"{_problem(sub)} @ {path}" for sub in without]


def _problem(exc: BaseException) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        extra = sorted(exc.extra_fields)
        shown = [key if isinstance(key, str) and key.isidentifier() and len(key) <= QUOTE_LIMIT
                 else quote(key) for key in extra[:MAX_MESSAGES]]
        if len(extra) > MAX_MESSAGES:
            shown.append(f"and {len(extra) - MAX_MESSAGES} more")
        return f"extra fields found ({', '.join(shown)})"
    if isinstance(exc, KeyError):
        return "required field missing"
    return _clip(str(exc), 2 * QUOTE_LIMIT) or type(exc).__name__
