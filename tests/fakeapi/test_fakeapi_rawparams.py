"""Opaque parameters are kept byte for byte, as kube-apiserver keeps RawExtensions.

Python's ``json.dumps`` writes ``", "`` and ``": "``; the real server stores those bytes
and later compares them with its own compact re-encoding, so a patch of an unrelated
field fails as an immutable-field change. These tests reproduce the captured failures.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes import client

from dra_framework.testing.fakeapi import FakeApiServer

from .helpers import body_of, fixture, raw_request

CLAIMS = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims"
CLAIM_PARAMS = {"apiVersion": "gpu.example.com/v1", "kind": "GpuConfig",
                "sharing": {"strategy": "TimeSlicing"}}
CLASS_PARAMS = {"apiVersion": "gpu.example.com/v1", "defaultComputeMode": "Shared",
                "kind": "GpuClassConfig", "timeSliceMillis": 10}


def spaced_claim() -> dict[str, Any]:
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": "spaced-claim", "namespace": "default"},
            "spec": {"devices": {
                "requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com"}}],
                "config": [{"opaque": {"driver": "gpu.example.com",
                                       "parameters": CLAIM_PARAMS}}]}}}


def allocation() -> dict[str, Any]:
    return {"devices": {
        "results": [{"request": "gpu", "driver": "gpu.example.com", "pool": "node-1",
                     "device": "gpu-3"}],
        "config": [{"source": "FromClass", "requests": ["gpu"],
                    "opaque": {"driver": "gpu.example.com", "parameters": CLASS_PARAMS}},
                   {"source": "FromClaim",
                    "opaque": {"driver": "gpu.example.com", "parameters": CLAIM_PARAMS}}]},
        "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}]}}


def status_devices() -> dict[str, Any]:
    return {"status": {"devices": [{"driver": "gpu.example.com", "pool": "node-1",
                                    "device": "gpu-3"}]}}


def test_label_patch_after_spaced_create(server: FakeApiServer,
                                         resource_api: client.ResourceV1Api) -> None:
    resource_api.create_namespaced_resource_claim("default", spaced_claim())
    assert server.raw_parameters("resourceclaims", "spaced-claim") == {
        "spec.devices.config.0.opaque.parameters": json.dumps(CLAIM_PARAMS)}
    for content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        with pytest.raises(client.ApiException) as err:
            resource_api.patch_namespaced_resource_claim(
                "spaced-claim", "default", {"metadata": {"labels": {"a": "b"}}},
                _content_type=content_type)
        assert err.value.status == 422
        assert body_of(err.value) == fixture("error-patch-spec-immutable-whitespace-params.json")


def test_status_patch_after_spaced_allocation(server: FakeApiServer,
                                              resource_api: client.ResourceV1Api) -> None:
    created = resource_api.create_namespaced_resource_claim("default", spaced_claim())
    claim = resource_api.api_client.sanitize_for_serialization(created)
    claim["status"] = {"allocation": allocation()}
    # A status PUT through this client also sends the parameters with whitespace.
    resource_api.replace_namespaced_resource_claim_status("spaced-claim", "default", claim)
    with pytest.raises(client.ApiException) as err:
        resource_api.patch_namespaced_resource_claim_status(
            "spaced-claim", "default", status_devices(),
            _content_type="application/merge-patch+json")
    assert body_of(err.value) == fixture("error-status-patch-whitespace-params.json")


def test_seeded_spaced_text_behaves_the_same(server: FakeApiServer,
                                             resource_api: client.ResourceV1Api) -> None:
    claim = spaced_claim()
    claim["status"] = {"allocation": allocation()}
    server.seed(json.dumps(claim))
    with pytest.raises(client.ApiException) as err:
        resource_api.patch_namespaced_resource_claim_status(
            "spaced-claim", "default", status_devices(),
            _content_type="application/merge-patch+json")
    assert body_of(err.value) == fixture("error-status-patch-whitespace-params.json")


def test_compact_parameters_patch_fine(server: FakeApiServer,
                                       resource_api: client.ResourceV1Api) -> None:
    body = json.dumps(spaced_claim(), separators=(",", ":"), sort_keys=True)
    status, _ = raw_request(server, "POST", CLAIMS, body)
    assert status == 201
    patched = resource_api.patch_namespaced_resource_claim(
        "spaced-claim", "default", {"metadata": {"labels": {"a": "b"}}})
    assert patched.metadata.labels == {"a": "b"}
    seeded = copy.deepcopy(spaced_claim())
    seeded["metadata"]["name"] = "seeded"
    seeded["status"] = {"allocation": allocation()}
    server.seed(seeded)  # a dict is stored compact, as kubectl would send it
    resource_api.patch_namespaced_resource_claim_status(
        "seeded", "default", status_devices(), _content_type="application/merge-patch+json")


def test_put_of_a_compact_claim_from_this_client_fails(server: FakeApiServer,
                                                       resource_api: client.ResourceV1Api
                                                       ) -> None:
    server.seed(spaced_claim())
    current = resource_api.read_namespaced_resource_claim("spaced-claim", "default")
    current.metadata.labels = {"a": "b"}
    with pytest.raises(client.ApiException) as err:
        resource_api.replace_namespaced_resource_claim("spaced-claim", "default", current)
    assert body_of(err.value)["details"]["causes"][0]["field"] == "spec"


def test_response_bytes_are_compact(server: FakeApiServer,
                                    resource_api: client.ResourceV1Api) -> None:
    resource_api.create_namespaced_resource_claim("default", spaced_claim())
    status, body = raw_request(server, "GET", f"{CLAIMS}/spaced-claim")
    assert b'"parameters":{"apiVersion":"gpu.example.com/v1","kind":"GpuConfig",' in body
