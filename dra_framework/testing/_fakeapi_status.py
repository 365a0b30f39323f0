"""Status bodies and field errors of the fake API server, shaped like kube-apiserver's.

This module owns the exact wording of every failure the fake server sends: the
``metav1.Status`` envelope (key order ``kind, apiVersion, metadata, status, message,
reason, details, code``), the NotFound / AlreadyExists / Conflict / Invalid / Expired
variants, and ``FieldError``, a port of apimachinery's ``field.Error`` including how
``ErrorBody`` prints a bad value (``%q`` strings, bare numbers, JSON of Go structs) and
how an ``ErrorList`` is aggregated into the message of a 422.

The texts were checked byte for byte against responses captured from kube-apiserver
v1.35.6, so tests may compare whole bodies. Everything here is pure data: no I/O, no
locking, so the validation and store modules can raise ``ApiError`` from anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

JsonDict = dict[str, Any]

RFC1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
RFC1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
C_IDENTIFIER_MSG = (
    "a valid C identifier must start with alphabetic character or '_', followed by a string "
    "of alphanumeric characters or '_' (e.g. 'my_name',  or 'MY_NAME',  or 'MyName', regex "
    "used for validation is '[A-Za-z_][A-Za-z0-9_]*')"
)
IMMUTABLE_MSG = "field is immutable"

# error type -> (StatusCause reason, label printed in the message)
_TYPES: dict[str, tuple[str, str]] = {
    "required": ("FieldValueRequired", "Required value"),
    "forbidden": ("FieldValueForbidden", "Forbidden"),
    "too_long": ("FieldValueTooLong", "Too long"),
    "too_many": ("FieldValueTooMany", "Too many"),
    "invalid": ("FieldValueInvalid", "Invalid value"),
    "duplicate": ("FieldValueDuplicate", "Duplicate value"),
    "not_supported": ("FieldValueNotSupported", "Unsupported value"),
}
# Types whose bad value is never printed (apimachinery's ErrorBody).
_VALUELESS = {"required", "forbidden", "too_long"}


class ApiError(Exception):
    """An HTTP failure carrying the Status body to send."""

    def __init__(self, status: JsonDict) -> None:
        super().__init__(status.get("message", ""))
        self.status = status
        self.code = int(status["code"])


def go_quote(text: str) -> str:
    """Format ``text`` like Go's ``%q`` verb (strconv.Quote)."""
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                        "\t": "\\t", "\v": "\\v"}[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def go_value(value: Any) -> str:
    """Render a bad value the way ``field.Error.ErrorBody`` does."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return go_quote(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class FieldError:
    """One entry of a Go ``field.ErrorList``; ``value`` is already rendered (or None)."""

    type: str
    field: str
    value: str | None = None
    detail: str = ""

    def body(self) -> str:
        label = _TYPES[self.type][1]
        text = label if self.type in _VALUELESS or self.value is None else (
            f"{label}: {self.value}")
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}" if self.field else self.body()


def required(path: str, detail: str = "") -> FieldError:
    return FieldError("required", path, None, detail)


def forbidden(path: str, detail: str) -> FieldError:
    return FieldError("forbidden", path, None, detail)


def invalid(path: str, value: Any, detail: str, *, rendered: bool = False) -> FieldError:
    return FieldError("invalid", path, value if rendered else go_value(value), detail)


def too_long(path: str, limit: int) -> FieldError:
    unit = "byte" if limit == 1 else "bytes"
    return FieldError("too_long", path, None, f"may not be more than {limit} {unit}")


def too_many(path: str, actual: int, limit: int) -> FieldError:
    unit = "item" if limit == 1 else "items"
    return FieldError("too_many", path, str(actual), f"must have at most {limit} {unit}")


def duplicate(path: str, value: Any, *, rendered: bool = False) -> FieldError:
    return FieldError("duplicate", path, value if rendered else go_value(value))


def not_supported(path: str, value: str, supported: Sequence[str]) -> FieldError:
    choices = ", ".join(go_quote(s) for s in supported)
    return FieldError("not_supported", path, go_quote(value), f"supported values: {choices}")


def status(*, code: int, reason: str, message: str,
           details: JsonDict | None = None) -> JsonDict:
    body: JsonDict = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                      "status": "Failure", "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _details(name: str, group: str, kind: str) -> JsonDict:
    details: JsonDict = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = kind
    return details


def qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(status(code=404, reason="NotFound",
                           message=f'{qualified(plural, group)} "{name}" not found',
                           details=_details(name, group, plural)))


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(status(code=409, reason="AlreadyExists",
                           message=f'{qualified(plural, group)} "{name}" already exists',
                           details=_details(name, group, plural)))


def conflict(plural: str, group: str, name: str,
             detail: str = "the object has been modified; please apply your changes to the "
                           "latest version and try again") -> ApiError:
    return ApiError(status(
        code=409, reason="Conflict",
        message=f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": {detail}',
        details=_details(name, group, plural)))


def invalid_object(kind: str, group: str, name: str, errors: Sequence[FieldError]) -> ApiError:
    causes = [{"reason": _TYPES[e.type][0], "message": e.body(), "field": e.field}
              for e in errors]
    seen: list[str] = []
    for e in errors:
        if str(e) not in seen:
            seen.append(str(e))
    agg = seen[0] if len(seen) == 1 else "[" + ", ".join(seen) + "]"
    gk = f"{kind}.{group}" if group else kind
    details = _details(name, group, kind)
    details["causes"] = causes
    return ApiError(status(code=422, reason="Invalid", message=f'{gk} "{name}" is invalid: {agg}',
                           details=details))


def bad_request(message: str) -> ApiError:
    return ApiError(status(code=400, reason="BadRequest", message=message))


def expired(message: str) -> JsonDict:
    return status(code=410, reason="Expired", message=message)


def generic(code: int, message: str = "") -> JsonDict:
    """A Status for an arbitrary code, worded as kube-apiserver words it."""
    reasons = {
        400: ("BadRequest", "the server rejected our request for an unknown reason"),
        401: ("Unauthorized", "Unauthorized"),
        403: ("Forbidden", "forbidden"),
        404: ("NotFound", "the server could not find the requested resource"),
        405: ("MethodNotAllowed", "the server does not allow this method on the requested "
                                  "resource"),
        409: ("Conflict", "the object has been modified; please apply your changes to the "
                          "latest version and try again"),
        410: ("Expired", "the resource has expired"),
        415: ("UnsupportedMediaType", "the body of the request was in an unknown format"),
        422: ("Invalid", "the server rejected our request due to an error in our request"),
        429: ("TooManyRequests", "Too many requests, please try again later."),
        500: ("InternalError", "Internal error occurred: injected fault"),
        503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
        504: ("Timeout", "the server was unable to return a response in the time allotted, but "
                         "may still be processing the request"),
    }
    reason, default = reasons.get(code, ("", f"the server responded with the status code {code}"))
    details = {404: {}, 429: {"retryAfterSeconds": 1}}.get(code)
    return status(code=code, reason=reason, message=message or default, details=details)
