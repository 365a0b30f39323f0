"""Structured logging: one event per line, JSON or text, with claim identity on claim events.

``configure`` installs a handler on the root logger.  Context travels as ``extra`` fields; the
formatters print every non-standard record attribute, so ``claim_extra(claim)`` on a log call
puts ``claim_uid``, ``claim_namespace`` and ``claim_name`` on that line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from .models import ClaimRef

_HANDLER_NAME = "dra-framework"
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


_MAX_IDENTITY = 256  # longer than any valid name, namespace or UID; the request may lie


def claim_extra(claim: ClaimRef, **more: Any) -> dict[str, Any]:
    """``extra`` fields that identify a claim on a log line (each cut to 256 characters)."""
    return {
        "claim_uid": claim.uid[:_MAX_IDENTITY],
        "claim_namespace": claim.namespace[:_MAX_IDENTITY],
        "claim_name": claim.name[:_MAX_IDENTITY],
        **more,
    }


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "logger": ..., "msg": ..., <extra fields>}``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <msg> key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        head = (
            f"{time.strftime('%H:%M:%S', time.localtime(record.created))}"
            f".{int(record.msecs):03d} {record.levelname:<7} {record.name}: "
            f"{record.getMessage()}"
        )
        tail = " ".join(f"{k}={v!r}" if isinstance(v, str) and " " in v else f"{k}={v}"
                        for k, v in _fields(record).items())
        text = f"{head} {tail}" if tail else head
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(*, fmt: str = "text", verbosity: int = 0) -> None:
    """Log to stderr in ``fmt`` (``json`` or ``text``); ``-v`` → DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)
    if verbosity < 2:
        for noisy in ("urllib3", "kubernetes"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
