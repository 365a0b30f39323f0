"""``dra-framework doctor`` against the fake API server."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dra_framework.api.rest import ApiError, KubeApi
from dra_framework.commands import doctor as doctor_module
from dra_framework.commands.doctor import (
    DRIVER_PERMISSIONS,
    SSAR_PATH,
    Permission,
    doctor,
    run_doctor,
)
from dra_framework.testing.fakeapi import FakeApiServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kube-v1.35"
DRIVER = "gpu.example.com"
NO_SSAR = ("rbac: cannot check: the server does not serve SelfSubjectAccessReview "
           "(404 NotFound: the server could not find the requested resource)")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class ReviewingApi(KubeApi):
    """The fake server, plus answers to SelfSubjectAccessReviews (which it does not serve)
    and 404s on chosen paths."""

    def __init__(self, server: FakeApiServer, *, denied: frozenset[Permission] = frozenset(),
                 not_found: tuple[str, ...] = ()) -> None:
        super().__init__(api_client=server.api_client(), timeout=5)
        self.denied = denied
        self.not_found = not_found

    def request(self, method: str, url_path: str, **kw: Any) -> dict[str, Any]:
        if url_path in self.not_found:
            raise ApiError(code=404, reason="NotFound", message="not here")
        if method == "POST" and url_path == SSAR_PATH:
            attrs = kw["body"]["spec"]["resourceAttributes"]
            asked = Permission(attrs["verb"], attrs["resource"], attrs.get("subresource", ""),
                               attrs["group"])
            return {"kind": "SelfSubjectAccessReview", "status": {
                "allowed": asked not in self.denied}}
        return super().request(method, url_path, **kw)


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=None) as s:
        s.seed((FIXTURES / "resourceslice-created.json").read_text())
        yield s


def run(api: KubeApi, *, node: str = "node-1", drivers: tuple[str, ...] = (DRIVER,)
        ) -> tuple[bool, list[str]]:
    lines: list[str] = []
    ok = run_doctor(api=api, node_name=node, drivers=drivers, out=lines.append)
    return ok, lines


def rbac_lines(denied: frozenset[Permission] = frozenset()) -> list[str]:
    return [f"rbac {p}: {'missing' if p in denied else 'ok'}" for p in DRIVER_PERMISSIONS]


def test_everything_fine(server: FakeApiServer) -> None:
    ok, lines = run(ReviewingApi(server))
    assert lines == [
        "server version: v1.35.6",
        "resource.k8s.io versions served: v1",
        "resource.k8s.io version used: v1",
        "slices of gpu.example.com on node-1: ok (1 slice; pool node-1: generation 1, "
        "1/1 slices)",
        *rbac_lines(),
        "all checks passed",
    ]
    assert ok
    assert "rbac update resourceclaims.resource.k8s.io/status: ok" in lines
    assert "rbac get nodes: ok" in lines


def test_plain_fake_server_cannot_check_rbac(server: FakeApiServer) -> None:
    ok, lines = run(KubeApi(api_client=server.api_client(), timeout=5),
                    drivers=(DRIVER, "nic.example.com"))
    assert not ok
    assert lines[:3] == ["server version: v1.35.6", "resource.k8s.io versions served: v1",
                         "resource.k8s.io version used: v1"]
    assert lines[3].startswith("slices of gpu.example.com on node-1: ok (1 slice;")
    assert lines[4:] == ["slices of nic.example.com on node-1: missing (no slices)", NO_SSAR,
                         "some checks failed"]
    assert [r.path for r in server.requests if r.method == "POST"] == [SSAR_PATH]
    listed = [r for r in server.requests if r.path.endswith("/resourceslices")]
    assert "spec.nodeName%3Dnode-1%2Cspec.driver%3Dgpu.example.com" in listed[0].query


def test_missing_permissions(server: FakeApiServer) -> None:
    denied = frozenset({Permission("patch", "resourceclaims", "status"),
                        Permission("get", "nodes", group="")})
    ok, lines = run(ReviewingApi(server, denied=denied))
    assert not ok
    assert lines[4:-1] == rbac_lines(denied)
    assert "rbac patch resourceclaims.resource.k8s.io/status: missing" in lines
    assert "rbac get nodes: missing" in lines
    assert lines[-1] == "some checks failed"


@pytest.mark.parametrize("version", ["v1beta1", "v1beta2"])
def test_beta_server(version: str) -> None:
    with FakeApiServer(resource_versions=(version,), bookmark_interval=None,
                       git_version="v1.33.4") as srv:
        srv.seed(fixture("resourceslice-created.json"))
        ok, lines = run(ReviewingApi(srv))
        paths = {r.path for r in srv.requests}
    assert ok
    assert lines[:4] == [
        "server version: v1.33.4", f"resource.k8s.io versions served: {version}",
        f"resource.k8s.io version used: {version}",
        "slices of gpu.example.com on node-1: ok (1 slice; pool node-1: generation 1, "
        "1/1 slices)"]
    assert f"/apis/resource.k8s.io/{version}/resourceslices" in paths


def test_dra_off(server: FakeApiServer) -> None:
    ok, lines = run(ReviewingApi(server, not_found=("/apis/resource.k8s.io",)))
    assert not ok
    assert lines[1] == "resource.k8s.io versions served: none"
    assert lines[2].startswith("resource.k8s.io version used: none: the API server does not "
                               "serve resource.k8s.io: Dynamic Resource Allocation is off.")
    assert "DynamicResourceAllocation=true" in lines[2]
    assert lines[3] == "slices: cannot check: resource.k8s.io is not usable"
    assert lines[4:-1] == rbac_lines()


def test_version_not_served_is_reported_and_not_a_failure(server: FakeApiServer) -> None:
    ok, lines = run(ReviewingApi(server, not_found=("/version",)))
    assert ok
    assert lines[0] == "server version: cannot check: 404 NotFound: not here"


def test_unreachable_server() -> None:
    srv = FakeApiServer(bookmark_interval=None).start()
    try:
        api = KubeApi(api_client=srv.api_client(), timeout=2)
        srv.pause(refuse=True)
        ok, lines = run(api)
    finally:
        srv.stop()
    assert not ok
    assert len(lines) == 1
    assert lines[0].startswith(f"cannot reach the Kubernetes API server at {srv.url}")


def _slice(name: str, generation: int, count: int) -> dict[str, Any]:
    obj: dict[str, Any] = copy.deepcopy(fixture("resourceslice-created.json"))
    obj["metadata"] = {"name": name}
    obj["spec"]["pool"].update(generation=generation, resourceSliceCount=count)
    return obj


def test_incomplete_pool(server: FakeApiServer) -> None:
    server.seed(_slice("node-1-gpu.example.com-abcde", 2, 2))  # replaces the fixture slice
    server.seed(_slice("node-1-gpu.example.com-old", 1, 1))
    ok, lines = run(ReviewingApi(server))
    assert not ok
    assert lines[3] == ("slices of gpu.example.com on node-1: incomplete (2 slices; pool node-1: "
                        "generation 2, 1/2 slices (+1 of older generations))")


def test_slices_of_another_node_do_not_count(server: FakeApiServer) -> None:
    ok, lines = run(ReviewingApi(server), node="node-2")
    assert not ok
    assert lines[3] == "slices of gpu.example.com on node-2: missing (no slices)"


def test_no_node_name_or_no_driver(server: FakeApiServer) -> None:
    ok, lines = run(ReviewingApi(server), node="")
    assert not ok
    assert lines[3] == "slices: cannot check: no node name (--node-name or $NODE_NAME)"
    ok, lines = run(ReviewingApi(server), drivers=())
    assert ok
    assert lines[3] == "slices: no --driver given, not checked"


def test_list_error_is_reported(server: FakeApiServer) -> None:
    server.fail_next(method="list", resource="resourceslices", status=403)
    ok, lines = run(ReviewingApi(server))
    assert not ok
    assert lines[3].startswith("slices of gpu.example.com on node-1: cannot check: 403 Forbidden")


# --- the click command -----------------------------------------------------------------
def test_command_exit_codes(server: FakeApiServer, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = str(server.write_kubeconfig(tmp_path / "kubeconfig"))
    runner = CliRunner()
    result = runner.invoke(doctor, ["--kubeconfig", kubeconfig, "--driver", DRIVER],
                           env={"NODE_NAME": "node-1"})
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0] == "server version: v1.35.6"
    assert lines[3].startswith("slices of gpu.example.com on node-1: ok")
    assert NO_SSAR in lines

    seen: dict[str, Any] = {}

    def fine(**kw: Any) -> bool:
        seen.update(kw)
        return True

    monkeypatch.setattr(doctor_module, "run_doctor", fine)
    result = runner.invoke(doctor, ["--kubeconfig", kubeconfig, "--node-name", "n2",
                                    "--driver", "a.example.com", "--driver", "b.example.com"])
    assert result.exit_code == 0, result.output
    assert seen["node_name"] == "n2" and seen["drivers"] == ("a.example.com", "b.example.com")


def test_command_with_a_bad_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "kubeconfig").write_text("{}")
    result = CliRunner().invoke(doctor, ["--kubeconfig", str(tmp_path / "kubeconfig")])
    assert result.exit_code == 1
    assert "cannot load the Kubernetes client configuration" in result.output
