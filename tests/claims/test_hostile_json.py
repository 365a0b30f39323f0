"""Claims whose opaque parameters ``json.loads`` cannot decode: lists nested 3,000 deep and
5,000-digit integers, which kube-apiserver stores as any other RawExtension bytes.

One such claim of any driver must neither switch the claim cache off nor break a live read
or a status write; a watch event that cannot be decoded or applied is skipped (counted and
logged once) and the watch goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import attrs
import pytest
from prometheus_client import REGISTRY

from dra_framework.api.apiversions import ResourceApi
from dra_framework.api.claimcache import ClaimCache
from dra_framework.api.claimreader import ClaimReader
from dra_framework.api.claimstatus import DeviceStatusEntry, StatusUpdater
from dra_framework.api.jsondecode import OversizedInteger
from dra_framework.api.rest import Backoff, KubeApi
from dra_framework.errors import ClaimError
from dra_framework.models import DeviceStatus
from dra_framework.testing.claims import Result, allocated_claim
from dra_framework.testing.fakeapi import FakeApiServer

from .conftest import DRIVER, wait_until
from .test_cache import MakeCache, gpu_claim, ref

DEPTH = 3000
DIGITS = 5000
DEEP = "[" * DEPTH + "]" * DEPTH
BIG = "7" * DIGITS
OTHER = "nic.example.com"


def hostile(name: str, *, driver: str = DRIVER, content: str = "both",
            separators: tuple[str, str] = (",", ":")) -> str:
    """A claim allocated to ``driver`` on node-1 as JSON text: its spec and allocation carry
    opaque parameters with a deep list, a long integer or both (one per config entry, each
    under the server's 10 KiB limit)."""
    values = {"deep": [{"deep": "@DEEP@"}], "big": [{"big": "@BIG@"}],
              "both": [{"deep": "@DEEP@"}, {"big": "@BIG@"}]}[content]
    claim = allocated_claim(name=name, results=[Result(request="gpu", device="gpu-0",
                                                       driver=driver)])
    claim["spec"]["devices"]["config"] = [
        {"requests": ["gpu"], "opaque": {"driver": driver, "parameters": p}} for p in values]
    claim["status"]["allocation"]["devices"]["config"] = [
        {"source": "FromClaim", "requests": ["gpu"], "opaque": {"driver": driver,
                                                                "parameters": p}}
        for p in values]
    text = json.dumps(claim, separators=separators)
    return text.replace('"@DEEP@"', DEEP).replace('"@BIG@"', BIG)


def parameters(claim: Any) -> list[Any]:
    return [c["opaque"]["parameters"] for c in claim["status"]["allocation"]["devices"]["config"]]


def assert_whole(claim: Any) -> None:
    """The claim's parameters came through: the list ``DEPTH`` deep, the integer's digits."""
    assert_whole_deep(claim)
    assert parameters(claim)[1] == {"big": OversizedInteger(BIG)}


def assert_whole_deep(claim: Any) -> None:
    depth, inner = 0, parameters(claim)[0]["deep"]
    while isinstance(inner, list):
        depth, inner = depth + 1, inner[0] if inner else None
    assert depth == DEPTH


def opaque_bytes(server: FakeApiServer, name: str) -> dict[str, str]:
    """The stored bytes of a claim's opaque parameters, by path."""
    raw = server.raw_parameters("resourceclaims", name)
    return {path: text for path, text in raw.items() if path.endswith(".opaque.parameters")}


def skipped(reason: str) -> float:
    value = REGISTRY.get_sample_value("dra_framework_watch_events_skipped_total",
                                      {"resource": "resourceclaims", "reason": reason})
    return value or 0.0


def watch_requests(server: FakeApiServer) -> int:
    return sum(1 for r in server.requests if "watch=1" in r.query)


# -- the watch cache ---------------------------------------------------------------------------

@pytest.mark.parametrize("content", ["deep", "big"])
@pytest.mark.parametrize("when", ["listed", "watched"])
def test_a_hostile_claim_of_another_driver_leaves_the_cache_working(
        server: FakeApiServer, make_cache: MakeCache, content: str, when: str) -> None:
    if when == "listed":
        server.seed(hostile("foreign", driver=OTHER, content=content))
    cache = make_cache()  # synced: the list was decoded
    if when == "watched":
        server.seed(hostile("foreign", driver=OTHER, content=content))
    server.seed(gpu_claim("mine"))
    wait_until(lambda: cache.cached("default", "mine") is not None)
    assert cache.cached("default", "foreign") is None
    assert cache.lists == 1 and watch_requests(server) == 1


def test_a_hostile_claim_of_this_driver_is_cached_and_served_whole(
        server: FakeApiServer, make_cache: MakeCache) -> None:
    listed = ref(server.seed(hostile("listed")))
    cache = make_cache()
    watched = ref(server.seed(hostile("watched")))
    wait_until(lambda: cache.cached("default", "watched") is not None)
    server.clear_requests()
    for claim in (listed, watched):
        assert_whole(cache.get(claim))
    assert cache.hits == 2 and server.requests == []


def skip_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The warnings of the API plane's event decoding (other loggers may be louder)."""
    return [r for r in caplog.records
            if r.name == "dra_framework.api.rest" and r.levelno >= logging.WARNING]


def test_an_undecodable_watch_event_is_skipped_counted_and_logged_once(
        server: FakeApiServer, make_cache: MakeCache, caplog: pytest.LogCaptureFixture) -> None:
    cache = make_cache()
    server.seed(gpu_claim("before"))
    wait_until(lambda: cache.cached("default", "before") is not None)  # the watch is open
    before = skipped("undecodable")
    caplog.set_level(logging.WARNING, logger="dra_framework.api.rest")
    for line in (b'{"type":"MODIFIED","object":{"metadata":', b"\xff\xfe not JSON", b"[1, 2]"):
        server.send_raw_event(line, resource="resourceclaims")
    server.seed(gpu_claim("after"))
    wait_until(lambda: cache.cached("default", "after") is not None)
    assert skipped("undecodable") == before + 3
    assert [r.getMessage().split(":")[0] for r in skip_logs(caplog)] == [
        "watch event skipped"] * 3
    assert cache.lists == 1 and watch_requests(server) == 1


@attrs.frozen
class RefusingApi(ResourceApi):
    """v1, except that objects labelled ``refuse`` cannot be converted."""

    def to_v1(self, obj: dict[str, Any], *, kind: str | None = None) -> dict[str, Any]:
        if "refuse" in ((obj.get("metadata") or {}).get("labels") or {}):
            raise ValueError("cannot convert this one")
        return super().to_v1(obj, kind=kind)


def refused(name: str, uid: str | None = None) -> dict[str, Any]:
    claim = gpu_claim(name)
    claim["metadata"]["labels"] = {"refuse": "yes"}
    if uid is not None:
        claim["metadata"]["uid"] = uid
    return claim


def test_an_event_the_cache_cannot_apply_is_skipped_and_its_claim_read_live(
        server: FakeApiServer, make_cache: MakeCache, caplog: pytest.LogCaptureFixture) -> None:
    claim = ref(server.seed(gpu_claim("changed")))
    cache = make_cache(resources=RefusingApi())
    assert cache.cached("default", "changed") is not None
    before = skipped("unusable")
    caplog.set_level(logging.WARNING, logger="dra_framework.api.rest")
    server.seed(refused("changed", uid=claim.uid))
    server.seed(gpu_claim("after"))
    wait_until(lambda: cache.cached("default", "after") is not None)
    assert cache.cached("default", "changed") is None  # what it held is no longer true
    assert skipped("unusable") == before + 1 and len(skip_logs(caplog)) == 1
    assert "cannot convert this one" in skip_logs(caplog)[0].getMessage()
    assert cache.lists == 1 and watch_requests(server) == 1
    server.clear_requests()
    with pytest.raises(ValueError, match="cannot convert this one"):
        cache.get(claim)  # not from memory: the live read meets the same object
    assert len(server.requests) == 1


def test_a_listed_claim_the_cache_cannot_convert_costs_only_itself(
        server: FakeApiServer, make_cache: MakeCache, caplog: pytest.LogCaptureFixture) -> None:
    server.seed(refused("refused"))
    server.seed(gpu_claim("listed"))
    before = skipped("unusable")
    caplog.set_level(logging.WARNING, logger="dra_framework.api.rest")
    cache = make_cache(resources=RefusingApi())
    assert cache.cached("default", "listed") is not None
    assert cache.cached("default", "refused") is None
    assert skipped("unusable") == before + 1 and len(skip_logs(caplog)) == 1
    assert cache.lists == 1


@pytest.mark.parametrize("when", ["listed", "watched"])
def test_on_a_beta_server_a_claim_that_cannot_be_converted_costs_only_itself(when: str) -> None:
    beta = ResourceApi("v1beta1")  # converting to v1 copies the claim, recursively
    with FakeApiServer(bookmark_interval=None, resource_versions=("v1beta1",)) as server:
        kube = KubeApi(api_client=server.api_client(), timeout=5)
        if when == "listed":
            server.seed(hostile("foreign", driver=OTHER, content="deep"))
        cache = ClaimCache(api=kube, driver=DRIVER, node_name="node-1", resources=beta,
                           backoff=Backoff(initial=0.02, maximum=0.1)).start()
        try:
            assert cache.wait_synced(5)
            if when == "watched":
                server.seed(hostile("foreign", driver=OTHER, content="deep"))
            server.seed(gpu_claim("mine"))
            wait_until(lambda: cache.cached("default", "mine") is not None)
            assert cache.lists == 1 and watch_requests(server) == 1
            mine = ref(server.seed(hostile("hostile-mine", content="deep")))
            with contextlib.suppress(ClaimError):  # the claim, or a claim error: nothing else
                assert_whole_deep(ClaimReader(api=kube, resources=beta).get(mine))
        finally:
            cache.stop(timeout=1)


# -- live reads and status writes --------------------------------------------------------------

def test_a_live_read_returns_a_hostile_claim_whole(server: FakeApiServer, kube: KubeApi) -> None:
    claim = ref(server.seed(hostile("live")))
    assert_whole(ClaimReader(api=kube).get(claim))


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")], ids=["compact", "spaced"])
def test_the_status_writer_writes_a_hostile_claim_keeping_its_parameters(
        server: FakeApiServer, kube: KubeApi, separators: tuple[str, str]) -> None:
    claim = ref(server.seed(hostile("status", separators=separators)))
    kept = opaque_bytes(server, "status")
    entry = DeviceStatusEntry(pool="node-1", device="gpu-0", status=DeviceStatus(data={"a": 1}))
    updater = StatusUpdater(api=kube, driver=DRIVER)
    assert updater.write(claim, [entry]) == "written"
    assert opaque_bytes(server, "status") == kept
    stored = server.get("resourceclaims", "status")
    assert stored is not None and stored["status"]["devices"] == [
        {"driver": DRIVER, "pool": "node-1", "device": "gpu-0", "data": {"a": 1}}]
    assert_whole(stored)
    assert updater.clear(claim) == "written"
    assert opaque_bytes(server, "status") == kept
