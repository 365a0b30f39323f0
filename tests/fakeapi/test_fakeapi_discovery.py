"""Discovery, /version, kubeconfig and client configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client, config

from dra_framework.testing.fakeapi import FakeApiServer

from .helpers import fixture, raw_request


def test_resource_group_is_served_exactly_as_captured(server: FakeApiServer) -> None:
    status, body = raw_request(server, "GET", "/apis/resource.k8s.io")
    assert status == 200
    assert json.loads(body) == fixture("resource-group.json")
    status, body = raw_request(server, "GET", "/apis/resource.k8s.io/v1")
    assert json.loads(body) == fixture("resource-v1-resources.json")


def test_client_discovery_calls(api_client: client.ApiClient) -> None:
    version = client.VersionApi(api_client).get_code()
    assert version.git_version == "v1.35.6"
    assert version.major == "1" and version.minor == "35"
    groups = client.ApisApi(api_client).get_api_versions()
    assert {g.name for g in groups.groups} >= {"resource.k8s.io", "coordination.k8s.io"}
    resources = client.ResourceV1Api(api_client).get_api_resources()
    assert [r.name for r in resources.resources] == [
        "deviceclasses", "resourceclaims", "resourceclaims/status", "resourceclaimtemplates",
        "resourceslices"]
    core = client.CoreV1Api(api_client).get_api_resources()
    assert {r.name for r in core.resources} >= {"nodes", "pods", "pods/status"}
    assert client.CoreApi(api_client).get_api_versions().versions == ["v1"]


def test_only_v1beta1_served() -> None:
    with FakeApiServer(resource_versions=("v1beta1",), bookmark_interval=None) as srv:
        status, body = raw_request(srv, "GET", "/apis/resource.k8s.io")
        group = json.loads(body)
        assert group["versions"] == [{"groupVersion": "resource.k8s.io/v1beta1",
                                      "version": "v1beta1"}]
        assert group["preferredVersion"]["version"] == "v1beta1"
        status, _ = raw_request(srv, "GET", "/apis/resource.k8s.io/v1")
        assert status == 404
        status, _ = raw_request(srv, "GET", "/apis/resource.k8s.io/v1/resourceslices")
        assert status == 404
        status, body = raw_request(srv, "GET", "/apis/resource.k8s.io/v1beta1")
        assert json.loads(body)["groupVersion"] == "resource.k8s.io/v1beta1"
        srv.seed(fixture("deviceclass.json"))
        status, body = raw_request(srv, "GET", "/apis/resource.k8s.io/v1beta1/deviceclasses")
        listed = json.loads(body)
        assert listed["apiVersion"] == "resource.k8s.io/v1beta1"
        assert listed["items"][0]["metadata"]["name"] == "gpu.example.com"
        status, body = raw_request(
            srv, "GET", "/apis/resource.k8s.io/v1beta1/deviceclasses/gpu.example.com")
        assert json.loads(body)["apiVersion"] == "resource.k8s.io/v1beta1"


def test_kubeconfig_is_accepted_by_the_client(server: FakeApiServer, tmp_path: Path) -> None:
    path = server.write_kubeconfig(tmp_path / "kubeconfig")
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == server.url
    with client.ApiClient(configuration) as api:
        assert client.VersionApi(api).get_code().git_version == "v1.35.6"


def test_bearer_token_is_required_when_configured(tmp_path: Path) -> None:
    with FakeApiServer(token="s3cret", bookmark_interval=None) as srv:
        status, body = raw_request(srv, "GET", "/apis/resource.k8s.io/v1/resourceslices")
        assert status == 401
        assert json.loads(body)["reason"] == "Unauthorized"
        with srv.api_client() as api:
            assert client.ResourceV1Api(api).list_resource_slice().items == []
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(srv.write_kubeconfig(tmp_path / "kc")),
                                client_configuration=configuration)
        with client.ApiClient(configuration) as api:
            assert client.ResourceV1Api(api).list_resource_slice().items == []


def test_unknown_paths_are_404(server: FakeApiServer) -> None:
    for path in ("/apis/example.com/v1/things", "/api/v1/secrets",
                 "/api/v1/namespaces/default/nodes/x", "/apis/resource.k8s.io/v1/widgets"):
        status, body = raw_request(server, "GET", path)
        assert status == 404, path
        assert json.loads(body)["reason"] == "NotFound"


def test_url_before_start_raises() -> None:
    with pytest.raises(RuntimeError):
        _ = FakeApiServer().url
