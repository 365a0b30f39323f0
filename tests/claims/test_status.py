"""status.devices writes against the fake API server, which keeps RawExtension bytes."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from dra_framework.api import claimstatus, rawjson
from dra_framework.api.claimstatus import (
    ClaimStatusWriter,
    DeviceStatusEntry,
    StatusUpdater,
    merge_device_statuses,
)
from dra_framework.api.rest import ApiError, Backoff, KubeApi, dumps
from dra_framework.models import (
    ClaimRef,
    Condition,
    DeviceStatus,
    NetworkDeviceData,
    PreparedDevice,
)
from dra_framework.node.checkpoint import ClaimRecord, RecordedDevice
from dra_framework.testing.claims import Config, Result, allocated_claim
from dra_framework.testing.fakeapi import FakeApiServer

from .conftest import DRIVER, FIXTURES

STATUS_URL = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/{}/status"
CAPTURED = json.loads((FIXTURES / "resourceclaim-status-devices.json").read_text())
CAPTURED_ENTRY = CAPTURED["status"]["devices"][0]
READY = Condition(type="Ready", status="True", reason="DevicePrepared",
                  message="device prepared by gpu.example.com")
CLASS_PARAMS = {"apiVersion": "gpu.example.com/v1", "defaultComputeMode": "Shared",
                "kind": "GpuClassConfig", "timeSliceMillis": 10}
CLAIM_PARAMS = {"apiVersion": "gpu.example.com/v1", "kind": "GpuConfig",
                "sharing": {"strategy": "TimeSlicing"}}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def ref(obj: dict[str, Any]) -> ClaimRef:
    meta = obj["metadata"]
    return ClaimRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def entry(device: str, *, status: DeviceStatus | None = None, **kw: Any) -> DeviceStatusEntry:
    return DeviceStatusEntry(pool="node-1", device=device,
                             status=status or DeviceStatus(conditions=(READY,)), **kw)


def devices_of(server: FakeApiServer, name: str) -> list[dict[str, Any]]:
    obj = server.get("resourceclaims", name)
    assert obj is not None
    devices: list[dict[str, Any]] = obj["status"].get("devices", [])
    return devices


def calls(server: FakeApiServer, method: str, name: str) -> int:
    return sum(1 for r in server.requests
               if r.method == method and r.path == STATUS_URL.format(name))


@pytest.fixture
def updater(kube: KubeApi) -> StatusUpdater:
    return StatusUpdater(api=kube, driver=DRIVER, sleep=lambda _: None)


# -- shapes -----------------------------------------------------------------------------------

def test_entry_has_the_captured_shape(server: FakeApiServer, updater: StatusUpdater) -> None:
    c = ref(server.seed(fixture("resourceclaim-allocated.json")))
    status = DeviceStatus(
        conditions=(Condition(type="Ready", status="True", reason="DevicePrepared",
                              message="device prepared by gpu.example.com",
                              last_transition_time="2026-11-26T16:41:08Z"),),
        data=CAPTURED_ENTRY["data"],
        network_data=NetworkDeviceData(interface_name="gpu0-rdma",
                                       ips=("10.10.0.5/24", "fd00:10::5/64"),
                                       hardware_address="ea:9f:a1:2b:3c:4d"))
    server.clear_requests()
    assert updater.write(c, [entry("gpu-0", status=status)]) == "written"
    assert devices_of(server, "gpu-claim") == [CAPTURED_ENTRY]
    assert [r.method for r in server.requests] == ["GET", "PUT"]  # no patch


def test_transition_time_is_filled_and_kept(server: FakeApiServer, updater: StatusUpdater,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    c = ref(server.seed(fixture("resourceclaim-allocated.json")))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", claimstatus.rfc3339_now())
    monkeypatch.setattr(claimstatus, "rfc3339_now", lambda: "2026-01-01T00:00:00Z")
    assert updater.write(c, [entry("gpu-0")]) == "written"
    (written,) = devices_of(server, "gpu-claim")
    assert written["conditions"] == [{
        "type": "Ready", "status": "True", "reason": "DevicePrepared",
        "message": "device prepared by gpu.example.com",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    monkeypatch.setattr(claimstatus, "rfc3339_now", lambda: "2026-01-01T00:00:05Z")
    server.clear_requests()
    assert updater.write(c, [entry("gpu-0")]) == "unchanged"  # no transition: time kept
    assert calls(server, "PUT", "gpu-claim") == 0
    down = DeviceStatus(conditions=(Condition(type="Ready", status="False", reason="Lost"),))
    assert updater.write(c, [entry("gpu-0", status=down)]) == "written"
    (written,) = devices_of(server, "gpu-claim")
    assert written["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:05Z"


def test_share_id_is_part_of_the_entry() -> None:
    share = "7f9c3b0e-4d5a-4b8e-9c1f-2a3b4c5d6e7f"
    (item,) = merge_device_statuses([], driver=DRIVER, entries=[entry("gpu-0", share_id=share)],
                                    now="2026-01-01T00:00:00Z")
    assert (item["pool"], item["device"], item["shareID"]) == ("node-1", "gpu-0", share)


# -- merging with other drivers --------------------------------------------------------------

def two_driver_claim(name: str) -> dict[str, Any]:
    obj = allocated_claim(name=name, results=[
        Result(request="gpu", device="gpu-0"),
        Result(request="nic", device="eth-0", driver="nic.example.com")])
    obj["status"]["devices"] = [{"driver": "nic.example.com", "pool": "node-1",
                                 "device": "eth-0", "data": {"vf": [1, 2], "mtu": 9000}}]
    return obj


def test_other_drivers_entries_are_kept(server: FakeApiServer, updater: StatusUpdater) -> None:
    c = ref(server.seed(json.dumps(two_driver_claim("two"))))  # their data with whitespace
    theirs_raw = server.raw_parameters("resourceclaims", "two")["status.devices.0.data"]
    assert theirs_raw == '{"vf": [1, 2], "mtu": 9000}'
    assert updater.write(c, [entry("gpu-0")]) == "written"
    devices = devices_of(server, "two")
    assert [(d["driver"], d["device"]) for d in devices] == [
        ("nic.example.com", "eth-0"), (DRIVER, "gpu-0")]
    assert devices[0] == two_driver_claim("two")["status"]["devices"][0]
    # their value went back as the server printed it (key order kept), not re-encoded by us
    assert server.raw_parameters("resourceclaims", "two")["status.devices.0.data"] == (
        '{"vf":[1,2],"mtu":9000}')
    assert updater.clear(c) == "written"
    assert [(d["driver"], d["device"]) for d in devices_of(server, "two")] == [
        ("nic.example.com", "eth-0")]


def test_rewrite_replaces_only_this_drivers_entries(server: FakeApiServer,
                                                    updater: StatusUpdater) -> None:
    obj = allocated_claim(name="re", results=[Result(request="gpu", device="gpu-0"),
                                              Result(request="gpu", device="gpu-1")])
    c = ref(server.seed(obj))
    updater.write(c, [entry("gpu-0"), entry("gpu-1")])
    updater.write(c, [entry("gpu-1", status=DeviceStatus(data={"x": 1}))])
    assert devices_of(server, "re") == [
        {"driver": DRIVER, "pool": "node-1", "device": "gpu-1", "data": {"x": 1}}]


# -- the whitespace quirk ---------------------------------------------------------------------

Dump = Callable[[Any], str]


def python_default(obj: Any) -> str:
    return json.dumps(obj)


def python_compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def indented(obj: Any) -> str:
    return json.dumps(obj, indent=2)


def go_compact(obj: Any) -> str:
    return dumps(obj).decode().replace("<", "\\u003c").replace(">", "\\u003e")


def stored_claim(name: str, *, claim_dump: Dump, class_dump: Dump, device: str = "gpu-3",
                 marker: str = "a<b>") -> str:
    """A claim's JSON as kube-apiserver keeps it: the claim's parameters with the bytes the
    user POSTed (``claim_dump``), the class's with those of the DeviceClass (``class_dump``);
    the scheduler copies both, bytes unchanged, into ``status.allocation``."""
    class_params = {**CLASS_PARAMS, "note": marker}
    claim_params = {**CLAIM_PARAMS, "note": marker}
    obj = allocated_claim(name=name, results=[Result(request="gpu", device=device)], configs=[
        Config(parameters=class_params, source="FromClass", requests=("gpu",)),
        Config(parameters=claim_params)])
    obj["spec"]["devices"]["config"] = [{"opaque": {"driver": DRIVER,
                                                    "parameters": claim_params}}]
    posted = rawjson.scan(claim_dump({"kind": "ResourceClaim", "metadata": {"name": name},
                                      "spec": obj["spec"]}))
    device_class = rawjson.scan(class_dump({"kind": "DeviceClass", "spec": {"config": [
        {"opaque": {"driver": DRIVER, "parameters": class_params}}]}}))
    claim_text = posted[("spec", "devices", "config", 0, "opaque", "parameters")]
    class_text = device_class[("spec", "config", 0, "opaque", "parameters")]
    alloc = ("status", "allocation", "devices", "config")
    return rawjson.dumps(obj, {
        ("spec", "devices", "config", 0, "opaque", "parameters"): claim_text,
        (*alloc, 0, "opaque", "parameters"): class_text,
        (*alloc, 1, "opaque", "parameters"): claim_text,
    }).decode()


def test_fake_reproduces_the_captured_refusal(server: FakeApiServer, kube: KubeApi) -> None:
    obj = allocated_claim(name="spaced-claim", results=[Result(request="gpu", device="gpu-3")],
                          configs=[Config(parameters=CLASS_PARAMS, source="FromClass",
                                          requests=("gpu",)),
                                   Config(parameters=CLAIM_PARAMS)])
    server.seed(json.dumps(obj))
    with pytest.raises(ApiError) as status_patch:
        kube.patch(STATUS_URL.format("spaced-claim"), {"status": {"devices": [
            {"driver": DRIVER, "pool": "node-1", "device": "gpu-3"}]}})
    assert status_patch.value.status == fixture("error-status-patch-whitespace-params.json")


@pytest.mark.parametrize(("claim_dump", "class_dump", "puts"), [
    pytest.param(python_default, go_compact, 2, id="python-client-claim"),
    pytest.param(python_default, python_default, 5, id="python-client-claim-and-class"),
    pytest.param(go_compact, python_default, 3, id="python-client-class"),
    pytest.param(python_compact, go_compact, 4, id="compact-but-unescaped"),
    pytest.param(indented, go_compact, None, id="indented-claim"),
    pytest.param(indented, indented, None, id="indented-claim-and-class"),
])
def test_spaced_parameters_write_where_a_patch_fails(
        server: FakeApiServer, kube: KubeApi, updater: StatusUpdater,
        claim_dump: Dump, class_dump: Dump, puts: int | None) -> None:
    c = ref(server.seed(stored_claim("spaced", claim_dump=claim_dump, class_dump=class_dump)))
    kept = server.raw_parameters("resourceclaims", "spaced")
    with pytest.raises(ApiError) as patch:
        kube.patch(STATUS_URL.format("spaced"), {"status": {"devices": [
            {"driver": DRIVER, "pool": "node-1", "device": "gpu-3"}]}})
    assert patch.value.code == 422 and "status.allocation" in patch.value.message
    assert "field is immutable" in patch.value.message
    server.clear_requests()
    assert updater.write(c, [entry("gpu-3")]) == "written"
    assert [d["device"] for d in devices_of(server, "spaced")] == ["gpu-3"]
    assert server.raw_parameters("resourceclaims", "spaced") == kept  # bytes untouched
    if puts is not None:
        assert calls(server, "PUT", "spaced") == puts
    # the layout that worked is remembered: the next write needs one PUT
    server.clear_requests()
    assert updater.clear(c) == "written"
    assert calls(server, "PUT", "spaced") == 1
    assert devices_of(server, "spaced") == []


def test_compact_claim_is_one_plain_put(server: FakeApiServer, updater: StatusUpdater) -> None:
    c = ref(server.seed(stored_claim("plain", claim_dump=go_compact, class_dump=go_compact)))
    server.clear_requests()
    assert updater.write(c, [entry("gpu-3")]) == "written"
    assert calls(server, "PUT", "plain") == 1


# -- conflicts and refusals -------------------------------------------------------------------

class RacingApi(KubeApi):
    """Changes the claim (a label, as another client would) right after our first GET."""

    def __init__(self, server: FakeApiServer, name: str) -> None:
        super().__init__(api_client=server.api_client())
        self.server, self.name, self.raced = server, name, False

    def send(self, method: str, url_path: str, **kw: Any) -> Any:
        resp = super().send(method, url_path, **kw)
        if method == "GET" and not self.raced:
            self.raced = True
            obj = self.server.get("resourceclaims", self.name)
            assert obj is not None
            obj["metadata"]["labels"] = {"touched": "yes"}
            obj["metadata"].pop("resourceVersion")
            self.server.seed(obj)
        return resp


def test_conflict_reads_again_and_retries(server: FakeApiServer) -> None:
    c = ref(server.seed(fixture("resourceclaim-allocated.json")))
    updater = StatusUpdater(api=RacingApi(server, "gpu-claim"), driver=DRIVER,
                            sleep=lambda _: None)
    server.clear_requests()
    assert updater.write(c, [entry("gpu-0")]) == "written"
    assert [r.method for r in server.requests] == ["GET", "PUT", "GET", "PUT"]
    obj = server.get("resourceclaims", "gpu-claim")
    assert obj is not None and obj["metadata"]["labels"]["touched"] == "yes"
    assert [d["device"] for d in obj["status"]["devices"]] == ["gpu-0"]


def test_conflicts_give_up_after_the_attempts(server: FakeApiServer, kube: KubeApi) -> None:
    c = ref(server.seed(fixture("resourceclaim-allocated.json")))
    server.fail_next(method="PUT", resource="resourceclaims/status", status=409, count=3,
                     body=fixture("error-conflict-claim-status.json"))
    updater = StatusUpdater(api=kube, driver=DRIVER, conflict_attempts=3, sleep=lambda _: None)
    with pytest.raises(ApiError) as err:
        updater.write(c, [entry("gpu-0")])
    assert err.value.code == 409


def test_device_not_allocated_is_reported_as_is(server: FakeApiServer,
                                                updater: StatusUpdater) -> None:
    c = ref(server.seed(fixture("resourceclaim-allocated.json")))
    with pytest.raises(ApiError) as err:
        updater.write(c, [entry("gpu-3")])
    assert err.value.status == fixture("error-status-devices-not-allocated.json")


def test_replaced_or_deleted_claim_is_left_alone(server: FakeApiServer,
                                                 updater: StatusUpdater) -> None:
    obj = server.seed(fixture("resourceclaim-allocated.json"))
    other = ClaimRef(namespace="default", name="gpu-claim", uid="not-" + obj["metadata"]["uid"])
    assert updater.write(other, [entry("gpu-0")]) == "gone"
    assert devices_of(server, "gpu-claim") == []
    missing = ClaimRef(namespace="default", name="no-such-claim", uid="u")
    assert updater.clear(missing) == "gone"


# -- the background writer --------------------------------------------------------------------

def record(obj: dict[str, Any], *statuses: tuple[str, DeviceStatus | None]) -> ClaimRecord:
    meta = obj["metadata"]
    return ClaimRecord(uid=meta["uid"], namespace=meta["namespace"], name=meta["name"],
                       phase="prepared", devices=tuple(
                           RecordedDevice(request="gpu", pool="node-1", device=device,
                                          prepared=PreparedDevice(pool="node-1", device=device,
                                                                  status=status))
                           for device, status in statuses))


@pytest.fixture
def writer(kube: KubeApi) -> Any:
    w = ClaimStatusWriter(api=kube, driver=DRIVER,
                          backoff=lambda: Backoff(initial=0.05, maximum=0.2))
    yield w
    w.stop()


def test_writer_publishes_and_clears(server: FakeApiServer, writer: ClaimStatusWriter) -> None:
    obj = server.seed(fixture("resourceclaim-allocated.json"))
    prepared = record(obj, ("gpu-0", DeviceStatus(conditions=(READY,))), ("gpu-1", None))
    assert writer.claim_prepared(prepared) is True
    assert writer.flush(5)
    assert [d["device"] for d in devices_of(server, "gpu-claim")] == ["gpu-0"]
    assert writer.claim_unprepared(prepared) is True
    assert writer.flush(5)
    assert devices_of(server, "gpu-claim") == []
    assert list(writer.failures) == []


def test_writer_skips_claims_without_status(server: FakeApiServer,
                                            writer: ClaimStatusWriter) -> None:
    obj = server.seed(fixture("resourceclaim-allocated.json"))
    server.clear_requests()
    bare = record(obj, ("gpu-0", None))
    assert writer.claim_prepared(bare) is False
    assert writer.claim_unprepared(bare) is False
    assert writer.flush(5)
    assert server.requests == []


def test_writer_never_blocks_and_retries(server: FakeApiServer,
                                         writer: ClaimStatusWriter) -> None:
    obj = server.seed(fixture("resourceclaim-allocated.json"))
    server.pause()
    started = time.perf_counter()
    writer.claim_prepared(record(obj, ("gpu-0", DeviceStatus(conditions=(READY,)))))
    assert time.perf_counter() - started < 0.05
    assert not writer.flush(0.1)  # still trying
    server.resume()
    assert writer.flush(10)
    assert [d["device"] for d in devices_of(server, "gpu-claim")] == ["gpu-0"]
    assert list(writer.failures) == []


def test_writer_logs_a_refused_write(server: FakeApiServer, writer: ClaimStatusWriter,
                                     caplog: pytest.LogCaptureFixture) -> None:
    obj = server.seed(fixture("resourceclaim-allocated.json"))
    caplog.set_level(logging.ERROR, logger="dra_framework.api.claimstatus")
    writer.claim_prepared(record(obj, ("gpu-3", DeviceStatus(conditions=(READY,)))))
    assert writer.flush(5)
    ((claim, err),) = writer.failures
    assert claim.uid == obj["metadata"]["uid"] and err.code == 422
    (line,) = caplog.records
    assert "must be an allocated device in the claim" in line.getMessage()
    assert (line.claim_uid, line.claim_namespace, line.claim_name) == (  # type: ignore[attr-defined]
        obj["metadata"]["uid"], "default", "gpu-claim")


def test_unprepare_of_a_deleted_claim_is_fine(server: FakeApiServer,
                                              writer: ClaimStatusWriter) -> None:
    gone = allocated_claim(name="deleted", results=[Result(request="gpu", device="gpu-0")])
    writer.claim_unprepared(record(gone, ("gpu-0", DeviceStatus(conditions=(READY,)))))
    assert writer.flush(5)
    assert list(writer.failures) == []
