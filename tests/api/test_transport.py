"""GETs written by hand on the client's kept-alive connections, and the headers they carry:
against the fake API server, and against a socket that answers exactly the bytes a test gives."""

from __future__ import annotations

import datetime
import gzip
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client

from dra_framework.api.rest import ApiError, KubeApi
from dra_framework.api.transport import Headers, LeanGets
from dra_framework.testing.fakeapi import FakeApiServer

NODES = "/api/v1/nodes"
GZIPPED = gzip.compress(b'{"a":1}')


def configuration(host: str, **api_key: str) -> client.Configuration:
    cfg = client.Configuration()
    cfg.host = host
    cfg.api_key = dict(api_key)
    cfg.api_key_prefix = {k: "Bearer" for k in api_key}
    return cfg


# -- against the fake API server ---------------------------------------------------------------

def test_gets_share_one_kept_alive_connection() -> None:
    with FakeApiServer(bookmark_interval=None) as server:
        server.seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
        api_client = server.api_client()
        api = KubeApi(api_client=api_client, timeout=5)
        for _ in range(5):
            assert api.get(f"{NODES}/n1")["metadata"]["name"] == "n1"
        pool = api_client.rest_client.pool_manager.connection_from_url(server.url)
        assert pool.num_connections == 1
        assert [r.path for r in server.requests] == [f"{NODES}/n1"] * 5


def test_a_refreshed_token_is_used_after_the_server_refused_the_old_one() -> None:
    with FakeApiServer(bookmark_interval=None, token="tok-2") as server:
        cfg = configuration(server.url, BearerToken="tok-1")
        current = ["tok-1"]
        cfg.refresh_api_key_hook = lambda c: c.api_key.update(BearerToken=current[0])
        api = KubeApi(api_client=client.ApiClient(cfg), timeout=5)
        with pytest.raises(ApiError) as err:
            api.get(NODES)
        assert err.value.code == 401
        current[0] = "tok-2"  # the token file was rotated
        assert api.get(NODES)["items"] == []


def test_the_refresh_hook_runs_at_most_once_per_interval_and_auth_changes_are_seen() -> None:
    cfg = configuration("https://api.example:6443/prefix", BearerToken="a")
    calls: list[int] = []
    cfg.refresh_api_key_hook = lambda c: calls.append(1)
    api_client = client.ApiClient(cfg)
    api_client.user_agent = "dra-test/1"
    headers = Headers(api_client, refresh_every=3600)
    first = headers.current()
    assert first == {"Accept": "application/json", "User-Agent": "dra-test/1",
                     "authorization": "Bearer a"}
    called = len(calls)
    assert headers.current() is first and len(calls) == called  # within the interval
    cfg.api_key["BearerToken"] = "b"  # changed without the hook
    assert headers.current()["authorization"] == "Bearer b"
    called = len(calls)
    assert headers.current()["authorization"] == "Bearer b" and len(calls) == called
    headers.stale()
    headers.current()
    assert len(calls) > called
    assert headers.host == "https://api.example:6443/prefix"


def test_a_token_that_would_split_the_headers_is_refused() -> None:
    cfg = configuration("http://127.0.0.1:1", BearerToken="a\r\nX-Injected: yes")
    with pytest.raises(ValueError, match="authorization"):
        Headers(client.ApiClient(cfg)).current()


def test_a_host_with_a_path_prefix_keeps_it() -> None:
    with FakeApiServer(bookmark_interval=None) as server:
        api = KubeApi(api_client=client.ApiClient(configuration(server.url + "/prefix/")))
        with pytest.raises(ApiError) as err:
            api.get(NODES, query=[("fieldSelector", "spec.unschedulable=true")])
        assert err.value.code == 404
        assert server.requests[-1].path == f"/prefix{NODES}"
        assert server.requests[-1].query == "fieldSelector=spec.unschedulable%3Dtrue"


def test_behind_a_proxy_the_pool_manager_sends_the_get() -> None:
    assert LeanGets(urllib3.PoolManager()).usable
    assert not LeanGets(urllib3.ProxyManager("http://proxy.example:3128")).usable


# -- against canned answers ---------------------------------------------------------------------

class Canned:
    """A listening socket that answers each request with the next of ``answers`` (``None``:
    stay silent; ``b""``: nothing), closing the connection after the answers marked to."""

    def __init__(self, answers: list[tuple[bytes | None, bool]],
                 tls: ssl.SSLContext | None = None) -> None:
        self.answers = list(answers)
        self.accepted = 0
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except OSError:  # the client refused the certificate
                    conn.close()
                    continue
            self.accepted += 1
            with conn:
                while self.answers:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if not data:
                        break
                    answer, close = self.answers.pop(0)
                    if answer is None:
                        conn.recv(1)  # until the client gives up
                        return
                    conn.sendall(answer)
                    if close:
                        break

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def canned() -> Iterator[Any]:
    made: list[Canned] = []

    def make(*answers: tuple[bytes | None, bool]) -> tuple[Canned, KubeApi]:
        made.append(Canned(list(answers)))
        cfg = configuration(made[-1].url)
        return made[-1], KubeApi(api_client=client.ApiClient(cfg), timeout=5)

    yield make
    for server in made:
        server.close()


def ok(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\n" + head.encode() + b"\r\n" + body


@pytest.mark.parametrize("answer", [
    pytest.param(ok(b'{"a":1}', "Content-Length: 7"), id="content-length"),
    pytest.param(ok(b"3;ext=1\r\n{\"a\r\n4\r\n\":1}\r\n0\r\nX-Trailer: t\r\n\r\n",
                    "Transfer-Encoding: chunked"), id="chunked-with-trailer"),
    pytest.param(ok(GZIPPED, "Content-Encoding: gzip", f"Content-Length: {len(GZIPPED)}"),
                 id="gzip"),
    pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b'{"a":1}', "Content-Length: 7"),
                 id="after-100-continue"),
])
def test_answers_are_read_whole(canned: Any, answer: bytes) -> None:
    server, api = canned((answer, False), (ok(b'{"a":2}', "Content-Length: 7"), False))
    assert api.get("/x") == {"a": 1}
    assert api.get("/x") == {"a": 2}
    assert server.accepted == 1  # kept alive


@pytest.mark.parametrize(("first", "close"), [
    pytest.param(ok(b'{"a":1}', "Content-Length: 7", "Connection: close"), True,
                 id="connection-close"),
    pytest.param(ok(b'{"a":1}'), True, id="body-until-closed"),
    pytest.param(ok(b'{"a":1}', "Content-Length: 7"), True, id="closed-while-idle"),
])
def test_a_connection_that_cannot_be_kept_is_replaced(canned: Any, first: bytes,
                                                      close: bool) -> None:
    server, api = canned((first, close), (ok(b'{"a":2}', "Content-Length: 7"), False))
    assert api.get("/x") == {"a": 1}
    assert api.get("/x") == {"a": 2}
    assert server.accepted == 2


def test_a_kept_alive_connection_closed_before_the_answer_is_replaced_once(
        canned: Any) -> None:
    server, api = canned((ok(b'{"a":1}', "Content-Length: 7"), False), (b"", True),
                         (ok(b'{"a":2}', "Content-Length: 7"), False))
    assert api.get("/x") == {"a": 1}
    assert api.get("/x") == {"a": 2}  # the request is sent again, on a new connection
    assert server.accepted == 2


def test_a_new_connection_closed_before_the_answer_is_no_answer(canned: Any) -> None:
    server, api = canned((b"", True), (ok(b'{"a":2}', "Content-Length: 7"), False))
    with pytest.raises(ApiError) as err:
        api.get("/x")
    assert err.value.code == 0 and "closed the connection" in err.value.message
    assert server.accepted == 1


@pytest.mark.parametrize(("answer", "message"), [
    pytest.param(b"SPDY/3 200 OK\r\n\r\n", "not an HTTP/1.x status line", id="not-http"),
    pytest.param(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed header", id="bad-header"),
    pytest.param(ok(b"zz\r\n", "Transfer-Encoding: chunked"), "bad chunk size",
                 id="bad-chunk"),
    pytest.param(ok(b"{}", "Content-Length: 9"), "closed the connection mid-answer",
                 id="short-body"),
    pytest.param(ok(b"{}", "Content-Encoding: br", "Content-Length: 2"),
                 "unsupported Content-Encoding", id="unknown-encoding"),
])
def test_a_broken_answer_is_no_answer(canned: Any, answer: bytes, message: str) -> None:
    _, api = canned((answer, True))
    with pytest.raises(ApiError) as err:
        api.get("/x")
    assert err.value.code == 0 and err.value.reason == "Unreachable"
    assert message in err.value.message


def test_an_error_status_is_raised_with_its_body(canned: Any) -> None:
    body = b'{"kind":"Status","code":404,"reason":"NotFound","message":"gone"}'
    _, api = canned((b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body), body), False))
    with pytest.raises(ApiError) as err:
        api.get("/x")
    assert (err.value.code, err.value.reason, err.value.message) == (404, "NotFound", "gone")


def test_no_answer_ends_at_the_deadline(canned: Any) -> None:
    _, api = canned((None, False))
    with pytest.raises(ApiError) as err:
        api.get("/x", timeout=0.2)
    assert err.value.reason == "Timeout"
    assert "did not answer within 0.2 s" in err.value.message


def test_an_unreachable_server(canned: Any) -> None:
    server, api = canned()
    server.close()
    with pytest.raises(ApiError) as err:
        api.get("/x")
    assert err.value.code == 0 and err.value.reason == "Unreachable"


# -- TLS, as the client's pool sets it up ------------------------------------------------------

def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 and the certificate a client must trust for it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-apiserver")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "unknown-certificate"])
def test_tls_is_the_pools(tmp_path: Path, trusted: bool) -> None:
    pytest.importorskip("cryptography")
    context, cert_file = self_signed(tmp_path)
    answer = ok(b'{"a":1}', "Content-Length: 7")
    server = Canned([(answer, False), (answer, False)], tls=context)
    try:
        cfg = configuration(server.url)
        if trusted:
            cfg.ssl_ca_cert = str(cert_file)
        api = KubeApi(api_client=client.ApiClient(cfg), timeout=5)
        if not trusted:
            with pytest.raises(ApiError) as err:
                api.get("/x")
            assert err.value.reason == "Unreachable" and "CERTIFICATE" in err.value.message
            return
        assert api.get("/x") == {"a": 1} and api.get("/x") == {"a": 1}
        assert server.accepted == 1
    finally:
        server.close()
