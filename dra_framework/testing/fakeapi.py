"""An in-process fake kube-apiserver for tests, driven through the real ``kubernetes`` client.

``FakeApiServer`` listens on 127.0.0.1 and serves ``resource.k8s.io/v1`` (deviceclasses,
resourceclaims with ``/status``, resourceclaimtemplates, resourceslices), core ``v1``
nodes and pods (with ``/status`` and the scheduler's ``/binding``), and
``coordination.k8s.io/v1`` leases, with discovery and ``/version`` as kube-apiserver v1.35.6
reports them. Tests and backend authors point an ``ApiClient``
(``api_client()``) or a kubeconfig (``write_kubeconfig()``) at it; nothing is mocked, so
serialisation, HTTP, retries and watch parsing run the production code paths.

It is faithful where drivers are easily wrong: one global resourceVersion, 409 Conflict
on stale updates, finalizers, watch streams with BOOKMARKs and the 410 "too old resource
version" ERROR event, field and label selectors, 422 bodies worded like the real ones,
defaulting and canonical quantities, fields of disabled feature gates dropped, status
vs. spec reset on ``/status``, strategic merge patches merging finalizer lists, and the
RawExtension quirk (opaque parameters are kept byte for byte, so parameters first
written with whitespace make later patches fail as immutable-field changes).

Like kube-apiserver, which keeps RawExtensions as bytes, it stores and serves opaque
parameters of any depth and integers of any length (``_fakeapi_json``).

For failure tests it records every request, injects HTTP errors or connection resets
(``fail_next``), holds requests unanswered (``hang_next``/``release``), writes damaged watch
events (``send_raw_event``), simulates an outage (``pause``/``resume``) and compacts history
(``compact``). This module is the public face; the work is done by private siblings:
``_fakeapi_http`` (HTTP, routing, watch streams), ``_fakeapi_faults`` (injected faults),
``_fakeapi_store`` (objects, versions, events), ``_fakeapi_strategy`` (per-resource write
rules), ``_fakeapi_validation`` and ``_fakeapi_validation_claims`` (422s),
``_fakeapi_patch``, ``_fakeapi_rawjson`` (kept RawExtension bytes), ``_fakeapi_json`` (JSON
of any depth), ``_fakeapi_order``, ``_fakeapi_quantity``, ``_fakeapi_resources`` (resource
table, selectors, discovery) and ``_fakeapi_status`` (Status bodies).
Not modelled: unknown fields are kept rather than dropped (and an integer too long for
``int()`` outside RawExtension values is refused, as in Go's typed fields), namespaces as
objects, admission, RBAC, server-side apply, managedFields bookkeeping, graceful pod
deletion, ``limit``/``continue`` paging (lists are complete).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from dra_framework.testing._fakeapi_faults import Fault
from dra_framework.testing._fakeapi_http import Request, Server, State
from dra_framework.testing._fakeapi_json import loads
from dra_framework.testing._fakeapi_resources import RESOURCES, ResourceInfo, lookup
from dra_framework.testing._fakeapi_store import Store, encode, typed
from dra_framework.testing._fakeapi_strategy import ALL_DRA_GATES, GATES_1_35

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = ["ALL_DRA_GATES", "GATES_1_35", "FakeApiServer", "Request"]

_HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
_WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class FakeApiServer:
    """A fake kube-apiserver on ``127.0.0.1`` (a context manager; or ``start``/``stop``).

    Keyword arguments:

    * ``bookmark_interval``: seconds between automatic BOOKMARK events on watches that
      asked for them (``None`` or ``0`` disables them; ``send_bookmarks()`` still works).
    * ``resource_versions``: versions of ``resource.k8s.io`` to serve, preferred first;
      e.g. ``("v1beta1",)`` for a server without v1 (objects keep the v1 shape).
    * ``token``: when set, requests must carry ``Authorization: Bearer <token>``.
    * ``feature_gates``: overrides of ``GATES_1_35``; ``ALL_DRA_GATES`` turns on every
      DRA gate, so e.g. device taints and shared counters are kept and validated.
    * ``git_version``: what ``/version`` reports.
    """

    def __init__(self, *, bookmark_interval: float | None = 1.0,
                 resource_versions: Sequence[str] = ("v1",), token: str | None = None,
                 feature_gates: Mapping[str, bool] | None = None,
                 git_version: str = "v1.35.6") -> None:
        if not resource_versions:
            raise ValueError("resource_versions must name at least one version")
        self._state = State(Store({**GATES_1_35, **(feature_gates or {})}),
                            tuple(resource_versions), token, git_version)
        self._bookmark_interval = bookmark_interval
        self._server: Server | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._port = 0
        self._refused = False

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> FakeApiServer:
        """Start listening (idempotent); returns ``self``."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._state.faults.restart()
        self._listen()
        if self._bookmark_interval:
            ticker = threading.Thread(target=self._tick, name="fakeapi-bookmarks", daemon=True)
            ticker.start()
            self._threads.append(ticker)
        return self

    def stop(self) -> None:
        """Close all watches and connections and stop listening."""
        self._stopping.set()
        self._state.faults.stop()
        self._state.store.close_watches()
        self._close_listener()
        self._state.drop_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _listen(self) -> None:
        self._server = Server(("127.0.0.1", self._port), self._state)
        self._port = self._server.server_address[1]
        server = self._server
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                                  name="fakeapi-http", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _tick(self) -> None:
        assert self._bookmark_interval
        while not self._stopping.wait(self._bookmark_interval):
            self._state.store.send_bookmarks()

    # -- client side --------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the server must have been started)."""
        if not self._port:
            raise RuntimeError("the fake API server is not started")
        return f"http://127.0.0.1:{self._port}"

    def api_client(self) -> ApiClient:
        """A ``kubernetes.client.ApiClient`` configured for this server."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        if self._state.token is not None:
            configuration.api_key = {"authorization": self._state.token}
            configuration.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(configuration)

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        """Write a kubeconfig for this server that ``config.load_kube_config`` accepts."""
        user: dict[str, str] = {"token": self._state.token} if self._state.token else {}
        config = {"apiVersion": "v1", "kind": "Config", "preferences": {},
                  "clusters": [{"name": "fakeapi", "cluster": {"server": self.url}}],
                  "users": [{"name": "fakeapi", "user": user}],
                  "contexts": [{"name": "fakeapi", "context": {
                      "cluster": "fakeapi", "user": "fakeapi", "namespace": "default"}}],
                  "current-context": "fakeapi"}
        target = Path(path)
        target.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return target

    # -- direct access to the state -----------------------------------------------------
    def seed(self, obj: Mapping[str, Any] | str | bytes, *, resource: str | None = None
             ) -> dict[str, Any]:
        """Store ``obj`` as is (uid, timestamps, status kept) under a fresh resourceVersion.

        ``obj`` is a dict, or JSON text whose opaque-parameter bytes are kept exactly as
        written. A ``...List`` is seeded item by item. Watches see ADDED (or MODIFIED if
        the object existed). Returns the stored object, with kind and apiVersion.
        """
        text = obj.decode() if isinstance(obj, bytes) else obj if isinstance(obj, str) else None
        data: Any = loads(text) if text is not None else obj
        if not isinstance(data, Mapping):
            raise TypeError("seed() needs a JSON object")
        kind = str(data.get("kind", ""))
        if kind.endswith("List") and resource is None:
            info = lookup(kind[:-4])
            stored = [self._seed_one(info, item, None) for item in data.get("items") or []]
            return {"kind": kind, "apiVersion": info.group_version, "items": stored}
        return self._seed_one(lookup(resource or kind), data, text)

    def _seed_one(self, info: ResourceInfo, data: Mapping[str, Any],
                  text: str | None) -> dict[str, Any]:
        entry = self._state.store.seed(info, dict(data), text)
        result: dict[str, Any] = loads(typed(info, entry.body, info.group_version))
        return result

    def get(self, resource: str, name: str, namespace: str | None = None
            ) -> dict[str, Any] | None:
        """The stored object (a copy, with kind and apiVersion), or None; ``namespace``
        defaults to ``"default"`` for namespaced resources."""
        info = lookup(resource)
        entry = self._state.store.objects.get(info.plural, {}).get(
            ((namespace or "default") if info.namespaced else "", name))
        if entry is None:
            return None
        result: dict[str, Any] = loads(typed(info, entry.body, info.group_version))
        return result

    def objects(self, resource: str, *, namespace: str | None = None) -> list[dict[str, Any]]:
        """All stored objects of ``resource`` (copies), sorted by namespace and name."""
        info = lookup(resource)
        _, entries = self._state.store.list(info, namespace, lambda _: True)
        return [loads(typed(info, e.body, info.group_version)) for e in entries]

    def raw_parameters(self, resource: str, name: str, namespace: str | None = None
                       ) -> dict[str, str]:
        """The kept RawExtension bytes of an object, keyed by dotted JSON path."""
        info = lookup(resource)
        entry = self._state.store.get(info, (namespace or "default") if info.namespaced else "",
                                      name)
        return {".".join(str(p) for p in path): text for path, text in entry.raw.items()}

    @property
    def resource_version(self) -> str:
        """The current value of the global resourceVersion counter."""
        return str(self._state.store.rv)

    # -- request log and faults ---------------------------------------------------------
    @property
    def requests(self) -> list[Request]:
        """The live log of every request served, as ``(method, path, query)`` named tuples
        (``query`` is the raw query string); clear it with ``clear_requests()``."""
        return self._state.requests

    def clear_requests(self) -> None:
        with self._state.lock:
            self._state.requests.clear()

    def write_count(self, *, resource: str | None = None) -> int:
        """How many create/update/patch/delete requests were received (optionally of one
        resource, given by plural, kind or alias)."""
        plural = None if resource is None else lookup(resource).plural
        count = 0
        with self._state.lock:
            requests = list(self._state.requests)
        for request in requests:
            if request.method not in _WRITE_METHODS:
                continue
            parts = [p for p in request.path.split("/") if p]
            if plural is None or plural in parts:
                count += 1
        return count

    def fail_next(self, *, method: str | None = None, resource: str | None = None,
                  status: int = 500, count: int = 1,
                  body: Mapping[str, Any] | bytes | None = None) -> None:
        """Answer the next ``count`` matching requests with HTTP ``status``.

        ``method`` is an HTTP method (``"PUT"``) or an API verb (``"update"``, ``"list"``,
        ``"watch"``, ``"deletecollection"``...); ``resource`` a plural such as
        ``"resourceslices"`` (or ``"resourceclaims/status"`` for the subresource only).
        ``body`` defaults to a Status worded like kube-apiserver's for that code;
        ``status=0`` resets the connection instead of answering.
        """
        method, resource = self._match(method, resource)
        raw = encode(dict(body)) if isinstance(body, Mapping) else body
        self._state.faults.add(Fault(method, resource, status, count, raw))

    def hang_next(self, *, method: str | None = None, resource: str | None = None,
                  count: int = 1, delay: float | None = None) -> None:
        """Hold the next ``count`` matching requests without an answer, as a hung apiserver
        does: the connection is accepted and the request read, then nothing comes until
        ``delay`` seconds have passed, or (``delay=None``) until ``release()`` or ``stop()``.
        A held request is then answered as usual (or as the next matching fault says).

        ``method`` and ``resource`` match as for ``fail_next``; ``hanging`` counts the
        requests held now.
        """
        method, resource = self._match(method, resource)
        self._state.faults.add(Fault(method, resource, 0, count, None, hang=True, delay=delay))

    @property
    def hanging(self) -> int:
        """How many requests ``hang_next`` holds now."""
        return self._state.faults.held

    def release(self) -> None:
        """Let every request held by ``hang_next`` go on and be answered."""
        self._state.faults.release()

    def _match(self, method: str | None, resource: str | None) -> tuple[str | None, str | None]:
        if method is not None:
            method = method.upper() if method.upper() in _HTTP_METHODS else method.lower()
        if resource is not None:
            base, _, sub = resource.partition("/")
            resource = lookup(base).plural + (f"/{sub}" if sub else "")
        return method, resource

    def pause(self, *, refuse: bool = False) -> None:
        """Make the server unreachable: open connections and watches are dropped, new
        requests get a connection reset (or, with ``refuse``, connection refused)."""
        self._state.paused = True
        if refuse and not self._refused:
            self._refused = True
            self._close_listener()
        self._state.store.close_watches()
        self._state.drop_connections()

    def resume(self) -> None:
        """Serve again after ``pause()`` (on the same port)."""
        if self._refused:
            self._refused = False
            self._listen()
        self._state.paused = False

    def compact(self) -> None:
        """Forget history: watches from any older resourceVersion now get 410 Expired."""
        self._state.store.compact()

    def send_raw_event(self, data: bytes, *, resource: str) -> int:
        """Write ``data`` and a newline as is into every open watch of ``resource``: a
        damaged or foreign line, for tests of watch clients (kube-apiserver itself only ever
        writes whole JSON events).  Returns how many watches got it."""
        info = lookup(resource)
        with self._state.store.lock:
            watchers = [w for w in self._state.store.watchers if w.info is info]
        for watcher in watchers:
            watcher.push(data + b"\n")
        return len(watchers)

    def send_bookmarks(self) -> None:
        """Push a BOOKMARK now to every open watch that allowed bookmarks."""
        self._state.store.send_bookmarks()

    @staticmethod
    def resources() -> list[str]:
        """Plural names of the served resources."""
        return sorted(RESOURCES)
