"""The one converter between attrs models and the camelCase JSON of Kubernetes and CDI.

Every attrs class is (un)structured with its snake_case field names mapped to camelCase
(``host_path`` → ``hostPath``, ``additional_gids`` → ``additionalGids``).  Unstructuring omits
fields that hold their default, which is what CDI loaders (strict about unknown or empty keys)
and compact checkpoints want.  Structuring forbids unknown keys, so a typo in a user's opaque
config is an error instead of being ignored.

``structure_config`` is the entry point for user-supplied data: it turns any cattrs failure into a
``ConfigError`` whose message names each offending field as a JSON path (``$.sharing.interval``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs
import cattrs
import yaml
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .errors import ConfigError

T = TypeVar("T")

_CAMEL_RE = re.compile(r"_([a-z0-9])")


def camel(name: str) -> str:
    """``host_path`` → ``hostPath``."""
    return _CAMEL_RE.sub(lambda m: m.group(1).upper(), name)


def _renames(cls: type) -> dict[str, Any]:
    return {
        a.name: override(rename=a.alias if a.alias != a.name else camel(a.name))
        for a in attrs.fields(cls)
    }


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_unstructure_hook_factory(
        attrs.has,
        lambda cls: make_dict_unstructure_fn(
            cls, conv, _cattrs_omit_if_default=True, **_renames(cls)
        ),
    )
    conv.register_structure_hook_factory(
        attrs.has,
        lambda cls: make_dict_structure_fn(
            cls, conv, _cattrs_forbid_extra_keys=True, **_renames(cls)
        ),
    )
    return conv


converter = _make_converter()


def unstructure(obj: Any) -> Any:
    """Model → JSON-ready data (camelCase keys, defaults omitted)."""
    return converter.unstructure(obj)


def structure(data: Any, cls: type[T]) -> T:
    """JSON data → model, for data the framework wrote itself (errors are raised as is)."""
    return converter.structure(data, cls)


def structure_config(data: Any, cls: type[T], *, what: str = "config") -> T:
    """Decode user-supplied JSON into ``cls``; any failure is a ``ConfigError`` naming fields.

    Unknown keys, missing required keys and wrong types are all reported, each with its path.
    """
    try:
        return converter.structure(data, cls)
    except Exception as exc:  # cattrs raises ClassValidationError, or a plain error
        if isinstance(exc, cattrs.BaseValidationError):
            messages = cattrs.transform_error(exc, path="$", format_exception=_format_exception)
        else:
            messages = [f"{exc} @ $"]
        # cattrs names attributes by their Python names; users wrote the camelCase keys
        messages = [_PATH_RE.sub(lambda m: "." + camel(m.group(1)), msg) for msg in messages]
        raise ConfigError(f"invalid {what}: " + "; ".join(messages)) from exc


_PATH_RE = re.compile(r"\.([a-z][a-z0-9_]*)(?=[.\[]|$)")


def _format_exception(exc: BaseException, type: type | None) -> str:
    if isinstance(exc, ValueError) and type is None:
        return str(exc)  # a validator's own message
    return cattrs.v.format_exception(exc, type)


def structure_options(options: Mapping[str, Any], cls: type[T], *, backend: str) -> T:
    """Decode backend options: strings from flags or env are read as YAML scalars first."""
    parsed = {
        camel(k.replace("-", "_")): yaml.safe_load(v) if isinstance(v, str) and v != "" else v
        for k, v in options.items()
    }
    return structure_config(parsed, cls, what=f"options of backend {backend}")
