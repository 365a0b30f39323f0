"""Reading a claim's allocation for one driver, against real v1.35 claim objects."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dra_framework.errors import ClaimMismatchError, ConfigError
from dra_framework.models import ClaimRef
from dra_framework.node.allocation import allocated_devices, base_request_names

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-v1.35"
DRIVER = "gpu.example.com"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def claim() -> dict[str, Any]:
    return load("resourceclaim-allocated.json")


def ref(obj: dict[str, Any]) -> ClaimRef:
    m = obj["metadata"]
    return ClaimRef(namespace=m["namespace"], name=m["name"], uid=m["uid"])


def kinds(obj: Any) -> list[str]:
    return [c["kind"] for c in obj]


def test_real_allocated_claim(claim: dict[str, Any]) -> None:
    devices = allocated_devices(claim, claim=ref(claim), driver=DRIVER, decode=dict)
    assert [(d.request, d.pool, d.device) for d in devices] == [
        ("gpu", "node-1", "gpu-0"), ("gpu-flex/large", "node-1", "gpu-1")]
    assert [d.base_request for d in devices] == ["gpu", "gpu-flex"]
    # class config is scoped to both requests, claim config (no requests) to all; class first
    assert kinds(devices[0].config) == ["GpuClassConfig", "GpuConfig"]
    assert kinds(devices[1].config) == ["GpuClassConfig", "GpuConfig"]


def test_claim_from_template(claim: dict[str, Any]) -> None:
    obj = load("resourceclaim-from-template.json")
    devices = allocated_devices(obj, claim=ref(obj), driver=DRIVER, decode=dict)
    assert [d.device for d in devices] == ["gpu-2"]


def test_class_config_comes_first_even_if_listed_later(claim: dict[str, Any]) -> None:
    cfg = claim["status"]["allocation"]["devices"]["config"]
    cfg.reverse()
    devices = allocated_devices(claim, claim=ref(claim), driver=DRIVER, decode=dict)
    assert kinds(devices[0].config) == ["GpuClassConfig", "GpuConfig"]


@pytest.mark.parametrize("requests,expected", [
    pytest.param(["gpu"], [["X"], []], id="base-name-only-that-request"),
    pytest.param(["gpu-flex"], [[], ["X"]], id="base-name-covers-subrequest"),
    pytest.param(["gpu-flex/small"], [[], []], id="other-subrequest-not-covered"),
    pytest.param([], [["X"], ["X"]], id="empty-means-all"),
])
def test_config_scoping(claim: dict[str, Any], requests: list[str],
                        expected: list[list[str]]) -> None:
    claim["status"]["allocation"]["devices"]["config"] = [{
        "source": "FromClaim", "requests": requests,
        "opaque": {"driver": DRIVER, "parameters": {"kind": "X"}}}]
    devices = allocated_devices(claim, claim=ref(claim), driver=DRIVER, decode=dict)
    assert [kinds(d.config) for d in devices] == expected


def test_other_drivers_results_and_config_are_ignored(claim: dict[str, Any]) -> None:
    alloc = claim["status"]["allocation"]["devices"]
    alloc["results"].append({"request": "nic", "driver": "nic.example.com", "pool": "node-1",
                             "device": "eth1"})
    alloc["config"].append({"source": "FromClaim", "opaque": {
        "driver": "nic.example.com", "parameters": {"kind": "Other"}}})
    devices = allocated_devices(claim, claim=ref(claim), driver=DRIVER, decode=dict)
    assert [d.device for d in devices] == ["gpu-0", "gpu-1"]
    assert all("Other" not in kinds(d.config) for d in devices)


def test_uid_mismatch(claim: dict[str, Any]) -> None:
    other = ClaimRef(namespace="default", name="gpu-claim", uid="0000")
    with pytest.raises(ClaimMismatchError, match="got replaced.*0000"):
        allocated_devices(claim, claim=other, driver=DRIVER, decode=dict)


def test_unallocated_claim() -> None:
    obj = load("resourceclaim-created.json")
    with pytest.raises(ClaimMismatchError, match="is not allocated"):
        allocated_devices(obj, claim=ref(obj), driver=DRIVER, decode=dict)


def test_deallocated_claim_after_pod_deleted() -> None:
    obj = load("resourceclaim-after-pod-deleted.json")
    with pytest.raises(ClaimMismatchError, match="is not allocated"):
        allocated_devices(obj, claim=ref(obj), driver=DRIVER, decode=dict)


def test_claim_of_another_driver(claim: dict[str, Any]) -> None:
    with pytest.raises(ClaimMismatchError, match="no devices allocated by driver nic.example.com"):
        allocated_devices(claim, claim=ref(claim), driver="nic.example.com", decode=dict)


def test_decode_error_names_the_config_entry(claim: dict[str, Any]) -> None:
    def decode(params: Any) -> Any:
        if params["kind"] == "GpuConfig":
            raise ConfigError("bad", path="$.sharing.strategy")
        return params

    with pytest.raises(ConfigError) as err:
        allocated_devices(claim, claim=ref(claim), driver=DRIVER, decode=decode)
    assert str(err.value) == (
        "status.allocation.devices.config[1] (FromClaim): $.sharing.strategy: bad")


def test_config_refused_when_backend_takes_none(claim: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="accepts no opaque config"):
        allocated_devices(claim, claim=ref(claim), driver=DRIVER, decode=None)


def test_non_object_parameters(claim: dict[str, Any]) -> None:
    claim["status"]["allocation"]["devices"]["config"][0]["opaque"]["parameters"] = [1]
    with pytest.raises(ConfigError, match=r"config\[0\].opaque.parameters: must be a JSON obj"):
        allocated_devices(claim, claim=ref(claim), driver=DRIVER, decode=dict)


def test_result_missing_device(claim: dict[str, Any]) -> None:
    bad = copy.deepcopy(claim)
    del bad["status"]["allocation"]["devices"]["results"][1]["device"]
    with pytest.raises(ConfigError, match=r"results\[1\]: missing or invalid 'device'"):
        allocated_devices(bad, claim=ref(bad), driver=DRIVER, decode=dict)


def test_admin_access_and_share_id(claim: dict[str, Any]) -> None:
    r = claim["status"]["allocation"]["devices"]["results"][0]
    r["adminAccess"] = True
    r["shareID"] = "7f9c3b0e-4d5a-4b8e-9c1f-2a3b4c5d6e7f"
    d = allocated_devices(claim, claim=ref(claim), driver=DRIVER, decode=dict)[0]
    assert d.admin_access and d.share_id == "7f9c3b0e-4d5a-4b8e-9c1f-2a3b4c5d6e7f"


def test_base_request_names() -> None:
    assert base_request_names(["a/b", "a", "c", "a/d"]) == ["a", "c"]
