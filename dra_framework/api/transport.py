"""How a request reaches the API server without the client's per-request machinery.

A claim read is on the prepare path of every claim source (the only path with ``--claim-source
get``, the fallback of the others), so its cost on a kept-alive connection matters.  Most of a
GET's time in the client went to generic machinery: ``param_serialize`` (which calls the
configuration's token refresh hook, about 40 µs with a kubeconfig token), urllib3's pool
manager (URL parsing, pool key lookup) and ``http.client``'s header parsing through the
``email`` package.  This module keeps what the client configured and drops the rest:

* ``Headers``: the headers every request carries, as ``param_serialize`` builds them (the
  client's default headers, its cookie, the ``authorization`` value of its ``BearerToken``
  setting), built again only when the configuration's auth changes.  The client's refresh
  hook (a kubeconfig token with an expiry, the in-cluster token file that the kubelet rotates)
  is called at most once per ``refresh_every`` seconds, and on the next request after a 401.
  ``target`` joins a path and a query as ``param_serialize`` does.
* ``LeanGets``: a GET written and read here, on a connection of the client's own urllib3 pool
  for the host, so TLS (CA, client certificate, server name) is exactly what the client set
  up; the connection goes back to the pool when the answer allows keep-alive.  A request
  through a proxy is not done here (``usable`` is False): the caller sends it through the pool
  manager, which knows the proxy's wire format.  A kept-alive connection the server closed
  meanwhile (nothing came back, not even a status line) is replaced once, as Go's client
  does for idempotent requests.

The HTTP/1.1 side is small because the API server's answers are: a status line, headers, a
body framed by ``Content-Length`` or chunked (gzip or deflate decoded, though never asked for).
Errors are the standard library's: ``TimeoutError`` when ``deadline`` passed, ``OSError``
(``ConnectionError`` for a closed connection or a malformed answer) for the rest; ``rest``
turns them into ``ApiError``.  The pool's connection handling (``_get_conn``, ``_put_conn``)
is urllib3's internal API, stable since urllib3 1.x; it is used here only.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import attrs

_CHUNK = 65536
_MAX_HEAD = 1 << 20
_BAD_URL_CHARS = re.compile("[\x00-\x20\x7f]")
_BAD_HEADER = re.compile(r"\n(?![ \t])|\r(?![ \t\n])")


class ProtocolError(ConnectionError):
    """The answer is not HTTP/1.1 this module can read, or the connection closed mid-answer."""


class _Stale(ConnectionError):
    """The connection closed before any byte of an answer: a kept-alive one can be replaced."""


@attrs.frozen
class Answer:
    """A whole answer: HTTP ``status``, ``reason`` and the (decoded) body."""

    status: int
    reason: str
    data: bytes


class Headers:
    """The request headers of ``api_client``'s configuration, rebuilt when its auth changes."""

    def __init__(self, api_client: Any, *, refresh_every: float = 1.0) -> None:
        self._client = api_client
        self._refresh_every = refresh_every
        self._next_refresh = 0.0
        self._key: tuple[Any, ...] | None = None
        self._headers: Mapping[str, str] = {}
        self._lock = threading.Lock()

    def current(self) -> Mapping[str, str]:
        """The headers of a request now (shared: copy before adding to them)."""
        cfg = self._client.configuration
        hook = cfg.refresh_api_key_hook
        if hook is not None and time.monotonic() >= self._next_refresh:
            hook(cfg)
            self._next_refresh = time.monotonic() + self._refresh_every
        key = (tuple(cfg.api_key.items()), tuple(cfg.api_key_prefix.items()),
               self._client.cookie, tuple(self._client.default_headers.items()))
        if key != self._key:
            with self._lock:
                self._headers, self._key = self._build(cfg), key
        return self._headers

    def stale(self) -> None:
        """The server refused the credentials: call the refresh hook on the next request."""
        self._next_refresh = 0.0

    def _build(self, cfg: Any) -> Mapping[str, str]:
        headers = {"Accept": "application/json", **self._client.default_headers}
        if self._client.cookie:
            headers["Cookie"] = self._client.cookie
        bearer = cfg.auth_settings().get("BearerToken")
        if bearer and bearer.get("value"):
            headers[bearer["key"]] = bearer["value"]
        for name, value in headers.items():
            if _BAD_HEADER.search(f"{name}{value}"):
                raise ValueError(f"invalid value of the {name!r} header")
        return headers

    @property
    def host(self) -> str:
        """The configured server URL (scheme, host, port, perhaps a path prefix)."""
        host: str = self._client.configuration.host
        return host


def target(url_path: str, query: Sequence[tuple[str, str]] = ()) -> str:
    """``url_path`` and ``query``, the values quoted as the client quotes them."""
    if not query:
        return url_path
    return url_path + "?" + "&".join(f"{k}={quote(str(v))}" for k, v in query)


class LeanGets:
    """GETs written and read here, on kept-alive connections of ``pool_manager``'s pools."""

    def __init__(self, pool_manager: Any) -> None:
        self._manager = pool_manager
        self._pool: tuple[str, Any, bytes, str] | None = None  # host, pool, Host, path prefix
        self._head: tuple[Mapping[str, str], bytes] | None = None

    @property
    def usable(self) -> bool:
        """False behind a proxy (requests then go through the pool manager)."""
        return getattr(self._manager, "proxy", None) is None

    def get(self, host: str, path: str, headers: Mapping[str, str], *, deadline: float,
            connect_timeout: float) -> Answer:
        """GET ``path`` (with its query) of the server at ``host`` by ``deadline``."""
        pool, request = self._request(host, path, headers)
        for attempt in (1, 2):
            conn = pool._get_conn()
            reused, keep = getattr(conn, "sock", None) is not None, False
            try:
                if not reused:
                    conn.timeout = max(0.001, min(connect_timeout, deadline - time.monotonic()))
                    conn.connect()
                answer, keep = _exchange(conn.sock, request, deadline=deadline)
                return answer
            except _Stale:
                if not reused or attempt == 2:
                    raise
            finally:
                if keep:
                    pool._put_conn(conn)
                else:
                    conn.close()
                    pool._put_conn(None)
        raise AssertionError("unreachable")

    def _request(self, host: str, path: str, headers: Mapping[str, str]) -> tuple[Any, bytes]:
        known = self._pool
        if known is None or known[0] != host:
            parts = urlsplit(host)
            known = (host, self._manager.connection_from_url(host),
                     parts.netloc.rpartition("@")[2].encode("idna"), parts.path.rstrip("/"))
            self._pool = known
        path = known[3] + path
        if _BAD_URL_CHARS.search(path):
            raise ValueError(f"URL can't contain control characters or spaces: {path!r}")
        head = self._head
        if head is None or head[0] is not headers:
            block = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
            head = self._head = (headers, block)
        return known[1], b"".join((b"GET ", path.encode("ascii"), b" HTTP/1.1\r\nHost: ",
                                   known[2], b"\r\n", head[1], b"\r\n"))


# -- one exchange --------------------------------------------------------------------------------

def _left(sock: socket.socket, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the deadline passed")
    sock.settimeout(left)


def _exchange(sock: socket.socket, request: bytes, *, deadline: float) -> tuple[Answer, bool]:
    """Send ``request``, read the answer; returns it and whether the connection may be reused."""
    _left(sock, deadline)
    try:
        sock.sendall(request)
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise _Stale(str(exc)) from exc
    reader = _Reader(sock, deadline)
    while True:
        status, reason, fields, version = _status_and_headers(reader)
        if not 100 <= status < 200:
            break
    connection = fields.get("connection", "").lower()
    keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    if status in (204, 304):
        body = b""
    elif "chunked" in fields.get("transfer-encoding", "").lower():
        body = reader.chunked()
    elif "content-length" in fields:
        try:
            length = int(fields["content-length"])
        except ValueError:
            raise ProtocolError(f"bad Content-Length {fields['content-length']!r}") from None
        body = reader.exactly(length)
    else:
        body, keep = reader.until_closed(), False
    return Answer(status, reason, _decoded(body, fields.get("content-encoding", ""))), keep


def _status_and_headers(reader: _Reader) -> tuple[int, str, dict[str, str], str]:
    head = reader.head()
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"malformed header line: {line[:100]!r}")
        name = name.strip().lower()
        value = value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return int(code), reason, fields, version


def _decoded(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            return zlib.decompress(body, 16 + zlib.MAX_WBITS if "gzip" in encoding
                                   else zlib.MAX_WBITS)
        except zlib.error as exc:
            raise ProtocolError(f"cannot decode the {encoding} body: {exc}") from exc
    raise ProtocolError(f"unsupported Content-Encoding {encoding!r}")


class _Reader:
    """Buffered reads of one answer, each bounded by the time left to ``deadline``."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline
        self._buf = bytearray()
        self._got_any = False

    def _fill(self) -> None:
        _left(self._sock, self._deadline)
        try:
            data = self._sock.recv(_CHUNK)
        except ConnectionResetError as exc:
            if not self._got_any:
                raise _Stale(str(exc)) from exc
            raise
        if not data:
            if not self._got_any:
                raise _Stale("the server closed the connection")
            raise ProtocolError("the server closed the connection mid-answer")
        self._got_any = True
        self._buf += data

    def head(self) -> bytes:
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            if len(self._buf) > _MAX_HEAD:
                raise ProtocolError("the answer's headers are too long")
            self._fill()
        head = bytes(self._buf[:end])
        del self._buf[:end + 4]
        return head

    def line(self) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > _MAX_HEAD:
                raise ProtocolError("a chunk header is too long")
            self._fill()
        line = bytes(self._buf[:end])
        del self._buf[:end + 2]
        return line

    def exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_text = self.line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while self.line():  # trailer fields, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(self.exactly(size))
            if self.exactly(2) != b"\r\n":
                raise ProtocolError("a chunk does not end with CRLF")

    def until_closed(self) -> bytes:
        while True:
            try:
                self._fill()
            except ProtocolError:
                break
        data = bytes(self._buf)
        self._buf.clear()
        return data
