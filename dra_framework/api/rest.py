"""Raw JSON access to the Kubernetes API through the official client's connection and auth.

Why not the generated ``*Api`` methods: they serialise request bodies with ``json.dumps``'s
default separators, and the API server keeps the bytes of opaque ``parameters`` as first
written, refusing a later write whose bytes differ as an immutable-field change.  Like kubectl,
this module sends **compact JSON with sorted keys**, and works on plain dicts, so the framework
does not depend on a generation of the client's models (v37's are strict Pydantic classes).

What it reuses from ``kubernetes``: configuration loading, the urllib3 pool (TLS, proxies) and
the authentication settings, so tokens refresh as the client does it; ``transport`` builds the
headers once per change of them and writes GETs by hand on the pool's kept-alive connections
(a live claim read is on the prepare path), other requests go through urllib3.

Every request is sent once: urllib3's own retries (four tries of a GET by default) are off, so
a caller's time limit is the time the call takes.  ``with_retries`` is the one retry loop
(exponential backoff with jitter), for callers that want one.  A request's ``timeout`` is a
deadline for all of it (connect, send, headers and body); a watch's is the longest wait for
its next bytes.

What comes back is decoded by ``jsondecode`` (no depth or integer-size limit).  Watch streams
are split into lines and decoded by ``watch_events``, shared by every watch: a line that is not
a JSON object is skipped, counted in ``WATCH_EVENTS_SKIPPED`` and logged once, so one event
nobody can read never stalls the stream.

Errors are ``ApiError`` with the server's Status ``code``, ``reason`` and ``message``; no answer
(connection failures, and ``reason`` ``Timeout`` when the deadline passed) is code 0.
``ApiError.transient`` says whether a retry may help.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import attrs
import urllib3
from kubernetes import client
from prometheus_client import Counter

from . import jsondecode, transport

log = logging.getLogger(__name__)
T = TypeVar("T")

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

WATCH_EVENTS_SKIPPED = Counter(
    "dra_framework_watch_events_skipped_total",
    "Watch events (and items of the list a watch starts from) skipped, by watched resource "
    "and reason: undecodable (not a JSON object) or unusable (the watcher could not use it).",
    ["resource", "reason"],
)

_CHUNK = 65536


def dumps(obj: Any) -> bytes:
    """Compact JSON with sorted keys, as kubectl sends it."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class ApiError(Exception):
    """A failed API call: ``code`` is the HTTP status (0: no answer), ``status`` the body."""

    def __init__(self, *, code: int, reason: str, message: str,
                 status: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}" if code else message)
        self.code = code
        self.reason = reason
        self.message = message
        self.status = dict(status or {})

    @property
    def transient(self) -> bool:
        """No answer, a server error, throttling or a timeout: a retry may succeed."""
        return self.code == 0 or self.code >= 500 or self.code in (408, 429)


@attrs.frozen
class Response:
    """A whole answer: HTTP ``status``, ``reason`` and the body as received."""

    status: int
    reason: str
    data: bytes


def path(
    *,
    group_version: str,
    resource: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """``/apis/<gv>[/namespaces/<ns>]/<resource>[/<name>[/<sub>]]`` (``/api/v1`` for core)."""
    parts = ["/api/v1" if group_version == "v1" else f"/apis/{group_version}"]
    if namespace is not None:
        parts.append(f"namespaces/{quote(namespace, safe='')}")
    parts.append(resource)
    if name is not None:
        parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
    return "/".join(parts)


def selector(**fields: str) -> str:
    """``spec.nodeName=n,spec.driver=d`` from ``spec_nodeName=...`` style keyword pairs."""
    return ",".join(f"{k}={v}" for k, v in fields.items())


class KubeApi:
    """Plain-dict requests against one API server.

    ``timeout``: the deadline of a request that names none, and the connect timeout of a watch.
    """

    def __init__(self, *, api_client: client.ApiClient, timeout: float = 10.0) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self._pool = api_client.rest_client.pool_manager
        self._headers = transport.Headers(api_client)
        self._lean = transport.LeanGets(self._pool)

    def send(self, method: str, url_path: str, *, query: Sequence[tuple[str, str]] = (),
             body: bytes | None = None, content_type: str = "application/json",
             timeout: float | None = None, stream: bool = False) -> Any:
        """One raw request, sent once; ``body`` goes out as given.  HTTP errors are raised as
        ``ApiError``, and so is a ``Timeout`` when the whole answer took longer than ``timeout``.

        Returns a ``Response``; with ``stream``, the urllib3 response, unread (``timeout`` is
        then the longest wait for more of it).
        """
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        what = f"{method} {url_path}"
        headers, target = self._headers.current(), transport.target(url_path, query)
        if method == "GET" and body is None and not stream and self._lean.usable:
            try:
                answer = self._lean.get(self._headers.host, target, headers, deadline=deadline,
                                        connect_timeout=self.timeout)
            except urllib3.exceptions.NewConnectionError as exc:  # refused, unknown host
                raise ApiError(code=0, reason="Unreachable", message=f"{what}: {exc}") from exc
            except (TimeoutError, urllib3.exceptions.TimeoutError) as exc:
                raise _timed_out(what, limit) from exc
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                raise ApiError(code=0, reason="Unreachable", message=f"{what}: {exc}") from exc
            return self._answer(what, answer.status, answer.reason, answer.data)
        if body is not None:
            headers = {**headers, "Content-Type": content_type}
        try:
            resp = self._pool.request(
                method, self._headers.host + target, body=body, headers=dict(headers),
                preload_content=False, retries=False,
                timeout=urllib3.Timeout(connect=self.timeout, read=limit) if stream
                else urllib3.Timeout(total=limit))
        except urllib3.exceptions.TimeoutError as exc:
            raise _timed_out(what, limit) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ApiError(code=0, reason="Unreachable", message=f"{what}: {exc}") from exc
        if stream and resp.status < 400:
            return resp
        data = _read_body(resp, deadline=deadline, limit=limit, what=what)
        return self._answer(what, resp.status, resp.reason or "", data)

    def _answer(self, what: str, status: int, reason: str, data: bytes) -> Response:
        if status == 401:
            self._headers.stale()
        if status >= 400:
            raise _error(status, reason, data, what)
        return Response(status=status, reason=reason, data=data)

    def request(self, method: str, url_path: str, *, query: Sequence[tuple[str, str]] = (),
                body: Any = None, content_type: str = "application/json",
                timeout: float | None = None) -> dict[str, Any]:
        """One request; the decoded JSON answer."""
        raw = None if body is None else dumps(body)
        resp = self.send(method, url_path, query=query, body=raw, content_type=content_type,
                          timeout=timeout)
        try:
            data: dict[str, Any] = jsondecode.loads(resp.data) if resp.data else {}
        except ValueError as exc:
            raise ApiError(code=resp.status, reason="BadResponse",
                           message=f"{method} {url_path}: not JSON: {exc}") from exc
        return data

    def get(self, url_path: str, **kw: Any) -> dict[str, Any]:
        return self.request("GET", url_path, **kw)

    def list(self, url_path: str, *, field_selector: str = "", label_selector: str = "",
             **kw: Any) -> dict[str, Any]:
        query = [(k, v) for k, v in (("fieldSelector", field_selector),
                                     ("labelSelector", label_selector)) if v]
        return self.request("GET", url_path, query=query, **kw)

    def create(self, url_path: str, obj: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
        return self.request("POST", url_path, body=obj, **kw)

    def replace(self, url_path: str, obj: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
        return self.request("PUT", url_path, body=obj, **kw)

    def patch(self, url_path: str, patch: Any, *, content_type: str = MERGE_PATCH,
              **kw: Any) -> dict[str, Any]:
        return self.request("PATCH", url_path, body=patch, content_type=content_type, **kw)

    def delete(self, url_path: str, *, precondition_uid: str | None = None,
               precondition_resource_version: str | None = None,
               **kw: Any) -> dict[str, Any]:
        pre = {k: v for k, v in (("uid", precondition_uid),
                                 ("resourceVersion", precondition_resource_version)) if v}
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": pre} if pre else None
        return self.request("DELETE", url_path, body=body, **kw)

    def watch(self, url_path: str, *, resource_version: str, field_selector: str = "",
              label_selector: str = "", timeout_seconds: int = 300,
              bookmarks: bool = True) -> Iterator[dict[str, Any]]:
        """The events of one watch request (ends when the server closes it).

        An ``ERROR`` event is raised as ``ApiError`` (410 Gone: re-list and watch again).
        """
        query = [("watch", "1"), ("resourceVersion", resource_version),
                 ("timeoutSeconds", str(timeout_seconds))]
        if bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        query += [(k, v) for k, v in (("fieldSelector", field_selector),
                                      ("labelSelector", label_selector)) if v]
        resp = self.send("GET", url_path, query=query, stream=True,
                          timeout=timeout_seconds + 30)
        try:
            yield from watch_events(resp, where=url_path)
        finally:
            resp.release_conn()


def _timed_out(what: str, limit: float) -> ApiError:
    return ApiError(code=0, reason="Timeout",
                    message=f"{what}: the API server did not answer within {limit:g} s")


def _read_body(resp: Any, *, deadline: float, limit: float, what: str) -> bytes:
    """All of ``resp``'s body by ``deadline``: each read waits at most the time left."""
    parts: list[bytes] = []
    read = getattr(resp, "read1", None) or resp.read
    done = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _timed_out(what, limit)
            sock = getattr(getattr(resp, "connection", None), "sock", None)
            if isinstance(sock, socket.socket):
                sock.settimeout(left)
            chunk = read(_CHUNK)
            if not chunk:
                done = True
                return b"".join(parts)
            parts.append(chunk)
    except (urllib3.exceptions.TimeoutError, TimeoutError) as exc:
        raise _timed_out(what, limit) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ApiError(code=0, reason="Unreachable", message=f"{what}: {exc}") from exc
    finally:
        if not done:  # a half-read answer: the connection cannot be used again
            resp.close()
        resp.release_conn()


def watch_events(resp: Any, *, where: str) -> Iterator[dict[str, Any]]:
    """The decoded events of an open watch response, one per line; lines that are no JSON
    object are skipped (see ``decode_event``).  A broken stream raises ``ApiError`` code 0."""
    pending = bytearray()
    try:
        for chunk in resp.stream(_CHUNK, decode_content=True):
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                if pending:
                    pending += chunk[start:end]
                    line, pending = bytes(pending), bytearray()
                else:
                    line = chunk[start:end]
                start = end + 1
                event = decode_event(line, where=where)
                if event is not None:
                    yield event
            pending += chunk[start:]
        event = decode_event(bytes(pending), where=where)
        if event is not None:
            yield event
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ApiError(code=0, reason="Unreachable", message=f"watch {where}: {exc}") from exc


def decode_event(line: bytes, *, where: str) -> dict[str, Any] | None:
    """One line of a watch stream: the event, or None for a blank line or one that is not a
    JSON object (counted in ``WATCH_EVENTS_SKIPPED`` and logged).  An ``ERROR`` event is
    raised as ``ApiError`` (410: list again)."""
    if not line.strip():
        return None
    try:
        event = jsondecode.loads(line)
    except ValueError as exc:
        skip_event(where=where, reason="undecodable", why=f"not JSON: {exc}", size=len(line))
        return None
    if not isinstance(event, dict):
        skip_event(where=where, reason="undecodable", why="not a JSON object", size=len(line))
        return None
    if event.get("type") == "ERROR":
        status = event.get("object")
        status = status if isinstance(status, dict) else {}
        code = status.get("code")
        raise ApiError(code=code if isinstance(code, int) and code > 0 else 500,
                       reason=str(status.get("reason", "")),
                       message=str(status.get("message", "")), status=status)
    return event


def skip_event(*, where: str, reason: str, why: str, **extra: Any) -> None:
    """Count and log one watch event skipped (``reason``: ``undecodable`` or ``unusable``)."""
    resource = where.rstrip("/").rsplit("/", 1)[-1]
    WATCH_EVENTS_SKIPPED.labels(resource, reason).inc()
    log.warning(f"watch event skipped: {why[:500]}",
                extra={"watch": where, "reason": reason, **extra})


def _error(code: int, reason: str, data: bytes, what: str) -> ApiError:
    try:
        status = jsondecode.loads(data)
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("kind") == "Status":
        return ApiError(code=code, reason=str(status.get("reason") or reason),
                        message=str(status.get("message", "")), status=status)
    text = data.decode(errors="replace")[:500]
    return ApiError(code=code, reason=reason, message=f"{what}: {text}")


class Backoff:
    """Exponential backoff with full jitter: 0.2 s, 0.4 s, … capped at ``maximum``."""

    def __init__(self, *, initial: float = 0.2, maximum: float = 30.0, factor: float = 2.0,
                 rng: random.Random | None = None) -> None:
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self._next = initial
        self._rng = rng or random.Random()

    def next(self) -> float:
        delay = self._rng.uniform(self._next / 2, self._next)
        self._next = min(self._next * self.factor, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


def with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int = 5,
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] = time.sleep,
    retry_on: Callable[[ApiError], bool] = lambda e: e.transient,
) -> T:
    """Call ``fn``; on a retryable ``ApiError`` wait and try again, ``attempts`` times in all."""
    backoff = backoff or Backoff()
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except ApiError as exc:
            if attempt == attempts or not retry_on(exc):
                raise
            delay = backoff.next()
            log.warning(f"{what} failed, retrying in {delay:.2f}s: {exc}",
                        extra={"attempt": attempt, "code": exc.code})
            sleep(delay)
    raise AssertionError("unreachable")
