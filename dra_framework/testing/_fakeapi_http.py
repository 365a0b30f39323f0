"""HTTP side of the fake API server: routing, verbs, watch streams, injected faults.

A ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive, one thread per connection,
so the real ``kubernetes`` client (urllib3) talks to it exactly as to kube-apiserver. The
handler turns a request into (resource, namespace, name, subresource, verb), consults the
injected faults, and calls the store; watches are written as chunked ndjson, one event
per chunk, the way the real server streams them.

``State`` is everything the handler shares with ``FakeApiServer``: the store, the request
log, pending faults and the outage switch. An outage answers new connections with a TCP
reset and drops open ones, which is how a restarting apiserver looks to a client.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs

from dra_framework.api.jsondecode import loads
from dra_framework.testing import _fakeapi_status as st
from dra_framework.testing._fakeapi_faults import Faults
from dra_framework.testing._fakeapi_patch import JSON_PATCH, MERGE, STRATEGIC
from dra_framework.testing._fakeapi_rawjson import oversized_outside_raw, scan_raw
from dra_framework.testing._fakeapi_resources import (
    RESOURCE_GROUP,
    RESOURCES,
    ResourceInfo,
    discovery,
    field_selector,
    label_selector,
)
from dra_framework.testing._fakeapi_store import Entry, Store, encode, typed

JsonDict = dict[str, Any]
_log = logging.getLogger(__name__)


class Request(NamedTuple):
    """One logged request."""

    method: str
    path: str
    query: str


@dataclass
class State:
    """What the HTTP handler shares with ``FakeApiServer``."""

    store: Store
    resource_versions: tuple[str, ...]
    token: str | None
    git_version: str
    requests: list[Request] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    paused: bool = False
    connections: set[socket.socket] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def drop_connections(self) -> None:
        with self.lock:
            connections = list(self.connections)
        for conn in connections:
            abort(conn)


def abort(conn: socket.socket) -> None:
    """Drop a connection with a TCP reset."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: State) -> None:
        self.state = state
        super().__init__(address, Handler)


class Route(NamedTuple):
    info: ResourceInfo
    api_version: str
    namespace: str | None
    name: str | None
    subresource: str | None


def route(state: State, parts: list[str]) -> Route | None:
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
        served = state.resource_versions if group == RESOURCE_GROUP else ("v1",)
        if version not in served:
            return None
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    info = RESOURCES.get(rest[0])
    if info is None or info.group != group or (namespace is not None and not info.namespaced):
        return None
    sub = rest[2] if len(rest) == 3 else None
    if sub is not None and not (sub == "status" and info.status_subresource
                                or sub == "binding" and info.plural == "pods"):
        return None
    api_version = f"{group}/{version}" if group else version
    return Route(info, api_version, namespace, rest[1] if len(rest) >= 2 else None, sub)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.state.lock:
            self.server.state.connections.add(self.connection)

    def handle(self) -> None:
        if self.server.state.paused:
            abort(self.connection)
            return
        with contextlib.suppress(OSError):
            super().handle()

    def finish(self) -> None:
        with self.server.state.lock:
            self.server.state.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # -- plumbing ---------------------------------------------------------------------
    def send_json(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def read_body(self) -> str:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length).decode("utf-8") if length else ""

    def dispatch(self) -> None:
        state = self.server.state
        path, _, query = self.path.partition("?")
        body_text = self.read_body()
        if state.paused:
            abort(self.connection)
            self.close_connection = True
            return
        with state.lock:
            state.requests.append(Request(self.command, path, query))
        try:
            self.serve(state, path, query, body_text)
        except st.ApiError as exc:
            self.send_json(exc.code, encode(exc.status))
        except OSError:
            raise
        except Exception as exc:  # a bug in the fake: answer like the apiserver would
            _log.exception("fake API server failed on %s %s", self.command, self.path)
            self.send_json(500, encode(st.generic(500, f"Internal error occurred: {exc}")))

    def serve(self, state: State, path: str, query: str, body_text: str) -> None:
        if state.token is not None and self.headers.get("Authorization") != f"Bearer {state.token}":
            raise st.ApiError(st.generic(401))
        parts = [p for p in path.split("/") if p]
        doc = discovery(parts, versions=state.resource_versions,
                        git_version=state.git_version) if self.command == "GET" else None
        if doc is not None:
            self.send_json(200, encode(doc))
            return
        where = route(state, parts)
        if where is None:
            raise st.ApiError(st.generic(404))
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        verb = self.verb(where, params)
        resource = where.info.plural + (f"/{where.subresource}" if where.subresource else "")
        fault = state.faults.take(self.command, verb, resource)
        while fault is not None and fault.hang:
            state.faults.hold(fault.delay)
            fault = state.faults.take(self.command, verb, resource)
        if fault is not None:
            if fault.status == 0:
                abort(self.connection)
                self.close_connection = True
                return
            headers = {"Retry-After": "1"} if fault.status == 429 else None
            self.send_json(fault.status, fault.body or encode(st.generic(fault.status)), headers)
            return
        getattr(self, f"do_{verb}")(state, where, params, body_text)

    def verb(self, where: Route, params: dict[str, str]) -> str:
        method, named = self.command, where.name is not None
        if where.info.namespaced and where.namespace is None and (named or method != "GET"):
            raise st.ApiError(st.generic(404))
        verbs = {("GET", True): "get", ("PUT", True): "update", ("PATCH", True): "patch",
                 ("DELETE", True): "delete", ("POST", False): "create",
                 ("DELETE", False): "deletecollection"}
        if where.subresource == "binding":  # the scheduler's POST …/pods/NAME/binding
            if method != "POST":
                raise st.ApiError(st.generic(405))
            return "create"
        if method == "GET" and not named:
            return "watch" if params.get("watch") in ("1", "true", "True") else "list"
        if (method, named) not in verbs or (where.subresource and method not in (
                "GET", "PUT", "PATCH")):
            raise st.ApiError(st.generic(405))
        return verbs[(method, named)]

    @staticmethod
    def parse(body_text: str) -> Any:
        try:
            body = loads(body_text) if body_text else None
        except ValueError as exc:
            raise st.bad_request(f"the object provided is unrecognized: {exc}") from None
        number = oversized_outside_raw(body)
        if number is not None:
            raise st.bad_request(f"the object provided is unrecognized: json: cannot unmarshal "
                                 f"number {number.text} into Go value of type int64")
        return body

    @staticmethod
    def predicate(where: Route, params: dict[str, str]) -> Any:
        by_field = field_selector(where.info, params.get("fieldSelector", ""))
        by_label = label_selector(params.get("labelSelector", ""))
        return lambda obj: by_field(obj) and by_label(obj)

    # -- verbs ------------------------------------------------------------------------
    def respond(self, where: Route, entry: Entry, code: int = 200) -> None:
        self.send_json(code, typed(where.info, entry.body, where.api_version))

    def do_get(self, state: State, where: Route, params: dict[str, str], _: str) -> None:
        assert where.name is not None
        self.respond(where, state.store.get(where.info, where.namespace or "", where.name))

    def do_list(self, state: State, where: Route, params: dict[str, str], _: str) -> None:
        rv, entries = state.store.list(where.info, where.namespace, self.predicate(where, params))
        self.send_list(where, rv, entries)

    def send_list(self, where: Route, rv: int, entries: list[Entry]) -> None:
        head = encode({"kind": f"{where.info.kind}List", "apiVersion": where.api_version,
                       "metadata": {"resourceVersion": str(rv)}})
        self.send_json(200, head[:-1] + b',"items":[' + b",".join(e.body for e in entries)
                       + b"]}")

    def do_create(self, state: State, where: Route, params: dict[str, str], text: str) -> None:
        body = self.parse(text)
        if not isinstance(body, dict):
            raise st.bad_request("Object 'Kind' is missing in request body")
        if where.subresource == "binding":
            self.bind(state, where, body)
            return
        entry = state.store.create(where.info, where.namespace or "", body, scan_raw(text),
                                   dry_run=params.get("dryRun") == "All")
        self.respond(where, entry, 201)

    def bind(self, state: State, where: Route, body: JsonDict) -> None:
        """Set the pod's ``spec.nodeName`` once, as the scheduler's Binding does."""
        assert where.name is not None
        target = body.get("target")
        node = target.get("name") if isinstance(target, dict) else None
        if not isinstance(node, str) or not node:
            raise st.invalid_object("Binding", "", where.name,
                                    [st.required("target.name")])
        with state.store.lock:
            pod = state.store.get(where.info, where.namespace or "", where.name)
            bound = (pod.obj.get("spec") or {}).get("nodeName")
            if bound:
                raise st.conflict("pods/binding", "", where.name,
                                  f'pod {where.name} is already assigned to node "{bound}"')
            state.store.patch(where.info, where.namespace or "", where.name, MERGE,
                              {"spec": {"nodeName": node}}, status=False)
        self.send_json(201, encode({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Success", "code": 201}))

    def do_update(self, state: State, where: Route, params: dict[str, str], text: str) -> None:
        assert where.name is not None
        body = self.parse(text)
        if not isinstance(body, dict):
            raise st.bad_request("Object 'Kind' is missing in request body")
        entry = state.store.update(where.info, where.namespace or "", where.name, body,
                                   scan_raw(text), status=where.subresource == "status",
                                   dry_run=params.get("dryRun") == "All")
        self.respond(where, entry)

    def do_patch(self, state: State, where: Route, params: dict[str, str], text: str) -> None:
        assert where.name is not None
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type not in (MERGE, STRATEGIC, JSON_PATCH):
            raise st.ApiError(st.status(
                code=415, reason="UnsupportedMediaType",
                message=f"the body of the request was in an unknown format - accepted media "
                        f"types include: {JSON_PATCH}, {MERGE}, application/apply-patch+yaml, "
                        f"{STRATEGIC}"))
        entry = state.store.patch(where.info, where.namespace or "", where.name, content_type,
                                  self.parse(text), status=where.subresource == "status",
                                  dry_run=params.get("dryRun") == "All")
        self.respond(where, entry)

    def deleted(self, where: Route, entry: Entry, gone: bool) -> None:
        if where.info.return_deleted or not gone:
            self.respond(where, entry)
            return
        details = {"name": entry.obj["metadata"]["name"], "group": where.info.group,
                   "kind": where.info.plural, "uid": entry.obj["metadata"].get("uid", "")}
        if not where.info.group:
            del details["group"]
        self.send_json(200, encode({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Success", "details": details}))

    def do_delete(self, state: State, where: Route, params: dict[str, str], text: str) -> None:
        assert where.name is not None
        options = self.parse(text) or {}
        entry, gone = state.store.delete(where.info, where.namespace or "", where.name,
                                         options if isinstance(options, dict) else {},
                                         dry_run=params.get("dryRun") == "All")
        self.deleted(where, entry, gone)

    def do_deletecollection(self, state: State, where: Route, params: dict[str, str],
                            text: str) -> None:
        options = self.parse(text) or {}
        _, entries = state.store.list(where.info, where.namespace, self.predicate(where, params))
        done = []
        for entry in entries:
            meta = entry.obj["metadata"]
            try:
                done.append(state.store.delete(where.info, meta.get("namespace", ""), meta["name"],
                                               options if isinstance(options, dict) else {})[0])
            except st.ApiError:
                continue
        self.send_list(where, state.store.rv, done)

    def do_watch(self, state: State, where: Route, params: dict[str, str], _: str) -> None:
        predicate = self.predicate(where, params)
        bookmarks = params.get("allowWatchBookmarks") in ("1", "true", "True")
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        since = params.get("resourceVersion", "")
        if since not in ("", "0") and not since.isdigit():
            raise st.bad_request(f"invalid resource version: {since}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        try:
            watcher = state.store.watch(
                where.info, where.namespace, predicate, since,
                bookmarks=bookmarks, api_version=where.api_version,
                initial_events_end=params.get("sendInitialEvents") == "true")
        except st.ApiError as exc:
            self.chunk(b'{"type":"ERROR","object":' + encode(exc.status) + b"}\n")
            self.chunk(b"")
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not state.paused:
                wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if wait <= 0:
                    break
                data = watcher.next(wait)
                if data is not None:
                    self.chunk(data)
                elif watcher.closed:
                    break
            if not state.paused:
                self.chunk(b"")
        except OSError:
            pass
        finally:
            state.store.unwatch(watcher)

    def chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
