"""The framework against a real kube-apiserver: claims read through the real client, and the
example plugin served in-process and driven over its sockets as the kubelet would.

No scheduler runs: ``Claims`` creates a claim with its spec only, then writes the status the
scheduler would (the device on ``node-1``, the DeviceClass config, reserved for a pod).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from dra_framework.models import ClaimRef
from dra_framework.testing.claims import Config, Result, allocated_claim
from dra_framework.testing.envtest import EnvtestControlPlane

pytestmark = [
    pytest.mark.envtest,
    # The control plane's serving certificate is self-signed; the kubeconfig skips verification.
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]

NODE = "node-1"
DRIVER = "gpu.example.com"
CDI_KIND = f"k8s.{DRIVER}/gpu"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-v1.35"
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")


def device_class() -> dict[str, Any]:
    """The captured DeviceClass, without the fields the server sets."""
    obj: dict[str, Any] = json.loads((FIXTURES / "deviceclass.json").read_text())
    for field in SERVER_FIELDS:
        obj["metadata"].pop(field, None)
    return obj


def delete(call: Any, *args: Any) -> None:
    """``call(*args)``, a client delete; 404 counts as done."""
    from kubernetes.client.exceptions import ApiException

    try:
        call(*args, _preload_content=False)
    except ApiException as exc:
        if exc.status != 404:
            raise


def cdi_spec(cdi_root: Path, uid: str) -> Path:
    return cdi_root / f"k8s.{DRIVER}-gpu_{uid}.json"


@pytest.fixture(scope="module")
def cluster(api_client: Any) -> Iterator[None]:
    """The Node and DeviceClass that a claim scheduled for the example driver refers to."""
    from kubernetes import client

    core, resource = client.CoreV1Api(api_client), client.ResourceV1Api(api_client)
    core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}},
                     _preload_content=False)
    try:
        cls = device_class()
        resource.create_device_class(cls, _preload_content=False)
        try:
            yield
        finally:
            delete(resource.delete_device_class, cls["metadata"]["name"])
    finally:
        delete(core.delete_node, NODE)


class Claims:
    """Creates ResourceClaims in ``namespace``; ``cleanup`` deletes those still there."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.api = client.ResourceV1Api(api_client)
        self.namespace = namespace
        self.created: set[str] = set()

    @staticmethod
    def unique_name(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    def create(self, name: str, *, device: str = "gpu-0", allocate: bool = True) -> str:
        """Create the claim with its spec only, then, with ``allocate``, write the status the
        scheduler would.  Return the UID the API server gave it."""
        config = device_class()["spec"]["config"][0]["opaque"]["parameters"]
        wanted = allocated_claim(name=name, namespace=self.namespace, node_name=NODE,
                                 results=[Result(request="gpu", device=device)],
                                 configs=[Config(parameters=config, source="FromClass")])
        body = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": wanted["spec"]}
        resp = self.api.create_namespaced_resource_claim(self.namespace, body,
                                                         _preload_content=False)
        self.created.add(name)
        if allocate:
            self.api.patch_namespaced_resource_claim_status(
                name, self.namespace, {"status": wanted["status"]}, _preload_content=False)
        uid: str = json.loads(resp.data)["metadata"]["uid"]
        return uid

    def ref(self, name: str, uid: str) -> ClaimRef:
        return ClaimRef(namespace=self.namespace, name=name, uid=uid)

    def delete(self, name: str) -> None:
        delete(self.api.delete_namespaced_resource_claim, name, self.namespace)
        self.created.discard(name)

    def cleanup(self) -> None:
        for name in sorted(self.created):
            self.delete(name)


@pytest.fixture
def claims(api_client: Any, namespace: str, cluster: None) -> Iterator[Claims]:
    made = Claims(api_client, namespace)
    try:
        yield made
    finally:
        made.cleanup()


@attrs.frozen
class Plugin:
    conn: Any  # dra_framework.testing.kubelet.PluginConnection
    cdi_root: Path
    node: Any  # dra_framework.commands.serve.Node


@pytest.fixture
def plugin(control_plane: EnvtestControlPlane, claims: Claims,
           tmp_path: Path) -> Iterator[Plugin]:
    """The example backend served by ``serve.Node`` for ``node-1``, registered by a kubelet."""
    from dra_framework.commands.serve import Node, ServeConfig
    from dra_framework.testing.kubelet import KubeletClient

    boot_id = tmp_path / "boot_id"
    boot_id.write_text("0f1e2d3c-envtest-boot\n")
    node = Node(ServeConfig(
        backends=("example",), node_name=NODE, kubeconfig=str(control_plane.kubeconfig_path),
        registry_dir=str(tmp_path / "registry"), plugins_dir=str(tmp_path / "plugins"),
        cdi_root=str(tmp_path / "cdi"), boot_id_file=str(boot_id)))
    node.start()
    try:
        with KubeletClient(tmp_path / "registry") as kubelet:
            yield Plugin(conn=kubelet.register(DRIVER), cdi_root=tmp_path / "cdi", node=node)
    finally:
        node.stop()


def test_claim_reader_reads_an_allocated_claim(api_client: Any, claims: Claims) -> None:
    from dra_framework.api.claimreader import ClaimReader
    from dra_framework.api.rest import KubeApi
    from dra_framework.node.allocation import allocated_devices

    name = claims.unique_name("read")
    uid = claims.create(name, device="gpu-1")

    obj = ClaimReader(api=KubeApi(api_client=api_client)).get(claims.ref(name, uid))

    assert obj["metadata"]["uid"] == uid
    assert obj["status"]["reservedFor"][0]["name"] == "pod-1"
    [device] = allocated_devices(obj, claim=claims.ref(name, uid), driver=DRIVER,
                                 decode=dict)
    assert (device.request, device.pool, device.device) == ("gpu", NODE, "gpu-1")
    assert device.config == (device_class()["spec"]["config"][0]["opaque"]["parameters"],)


def test_prepare_returns_the_device_and_writes_its_cdi_spec(plugin: Plugin,
                                                            claims: Claims) -> None:
    name = claims.unique_name("prepare")
    uid = claims.create(name, device="gpu-0")

    result = plugin.conn.prepare([claims.ref(name, uid)])[uid]

    assert result.error == ""
    [device] = result.devices
    assert (device.request_names, device.pool_name, device.device_name) == (
        ("gpu",), NODE, "gpu-0")
    assert device.cdi_device_ids == (f"{CDI_KIND}={uid}-gpu-0",)
    [cdi_device] = json.loads(cdi_spec(plugin.cdi_root, uid).read_text())["devices"]
    assert cdi_device["name"] == f"{uid}-gpu-0"
    # The class config, copied into the allocation, made it through the API and was decoded.
    assert "GPU_DEVICE_GPU_0_COMPUTE_MODE=Shared" in cdi_device["containerEdits"]["env"]


def test_a_replaced_claim_fails_alone(plugin: Plugin, claims: Claims) -> None:
    name, other = claims.unique_name("replaced"), claims.unique_name("other")
    old_uid = claims.create(name, device="gpu-1")
    claims.delete(name)
    new_uid = claims.create(name, device="gpu-1")
    other_uid = claims.create(other, device="gpu-2")

    results = plugin.conn.prepare([claims.ref(name, old_uid), claims.ref(other, other_uid)])

    assert "got replaced" in results[old_uid].error
    assert new_uid in results[old_uid].error
    assert not cdi_spec(plugin.cdi_root, old_uid).exists()
    assert results[other_uid].error == ""
    assert [d.device_name for d in results[other_uid].devices] == ["gpu-2"]


def test_an_unallocated_claim_is_refused(plugin: Plugin, claims: Claims) -> None:
    name = claims.unique_name("pending")
    uid = claims.create(name, allocate=False)

    result = plugin.conn.prepare([claims.ref(name, uid)])[uid]

    assert "is not allocated" in result.error
    assert not cdi_spec(plugin.cdi_root, uid).exists()


def test_unprepare_after_the_claim_is_deleted(plugin: Plugin, claims: Claims) -> None:
    name = claims.unique_name("gone")
    uid = claims.create(name, device="gpu-3")
    assert plugin.conn.prepare([claims.ref(name, uid)])[uid].error == ""
    assert cdi_spec(plugin.cdi_root, uid).exists()
    claims.delete(name)

    assert plugin.conn.unprepare([claims.ref(name, uid)]) == {uid: ""}

    assert not cdi_spec(plugin.cdi_root, uid).exists()
    assert plugin.conn.unprepare([claims.ref(name, uid)]) == {uid: ""}  # idempotent


def node_slices(api_client: Any) -> list[dict[str, Any]]:
    from dra_framework.api.rest import KubeApi

    listed = KubeApi(api_client=api_client).list(
        "/apis/resource.k8s.io/v1/resourceslices",
        field_selector=f"spec.nodeName={NODE},spec.driver={DRIVER}")
    items: list[dict[str, Any]] = listed["items"]
    return items


def test_publish_then_unchanged_resync_writes_nothing(plugin: Plugin, api_client: Any) -> None:
    """The real API server accepts what the publisher sends, and a resync of the same
    inventory makes no write (the server's normalised form compares equal)."""
    import time

    deadline = time.monotonic() + 30
    while not node_slices(api_client) and time.monotonic() < deadline:
        time.sleep(0.1)
    (published,) = node_slices(api_client)
    assert published["spec"]["pool"]["name"] == NODE
    assert published["spec"]["pool"]["resourceSliceCount"] == 1
    assert [d["name"] for d in published["spec"]["devices"]] == [f"gpu-{i}" for i in range(8)]
    assert published["metadata"]["ownerReferences"][0]["kind"] == "Node"
    [publisher] = plugin.node.publishers
    result = publisher.reconcile_once()
    assert result.ok and result.writes == 0
    assert node_slices(api_client)[0]["metadata"]["resourceVersion"] == (
        published["metadata"]["resourceVersion"])
