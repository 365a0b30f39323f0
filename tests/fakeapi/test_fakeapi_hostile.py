"""Opaque parameters ``json`` cannot take: lists nested 3,000 deep, 5,000-digit integers.

kube-apiserver v1.35 stores such RawExtension bytes like any others (they are under its
10 KiB limit and Go's decoder nests up to 10,000 deep), and serves them back.  So does the
fake, through every verb, without its own JSON handling failing.
"""

from __future__ import annotations

import json
from typing import Any

from dra_framework.api.rest import KubeApi
from dra_framework.testing.fakeapi import FakeApiServer

from .helpers import raw_request

CLAIMS = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims"
DEPTH = 3000
DEEP = "[" * DEPTH + "]" * DEPTH
BIG = "7" * 5000
PARAMS = {"deep": '{"deep":' + DEEP + "}", "big": '{"big":' + BIG + "}"}


def claim_text(name: str, *, status: bool = False) -> str:
    """A claim whose spec carries both kinds of parameters (and, with ``status``, so does
    its allocation), as compact JSON text."""
    config = [{"opaque": {"driver": "gpu.example.com", "parameters": f"@{key}@"}}
              for key in PARAMS]
    claim: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
            "deviceClassName": "gpu.example.com"}}], "config": config}}}
    if status:
        claim["status"] = {"allocation": {"devices": {
            "results": [{"request": "gpu", "driver": "gpu.example.com", "pool": "node-1",
                         "device": "gpu-0"}],
            "config": [{"source": "FromClaim", **c} for c in config]}}}
    text = json.dumps(claim, separators=(",", ":"))
    for key, value in PARAMS.items():
        text = text.replace(f'"@{key}@"', value)
    return text


def served_parameters(text: bytes, where: str) -> list[str]:
    """The served bytes of each ``parameters`` value under ``where`` (spec or allocation)."""
    start = text.index(where.encode())
    return [text[text.index(f'"parameters":{value[:9]}'.encode(), start) + 13:][:len(value)]
            .decode() for value in PARAMS.values()]


def test_create_get_and_list_keep_the_parameters_whole(server: FakeApiServer) -> None:
    status, created = raw_request(server, "POST", CLAIMS, claim_text("c"))
    assert status == 201
    assert served_parameters(created, '"spec"') == list(PARAMS.values())
    assert server.raw_parameters("resourceclaims", "c") == {
        f"spec.devices.config.{i}.opaque.parameters": v for i, v in enumerate(PARAMS.values())}
    status, got = raw_request(server, "GET", f"{CLAIMS}/c")
    assert status == 200 and served_parameters(got, '"spec"') == list(PARAMS.values())
    status, listed = raw_request(server, "GET", CLAIMS)
    assert status == 200 and served_parameters(listed, '"spec"') == list(PARAMS.values())
    stored = server.get("resourceclaims", "c")
    assert stored is not None and stored["spec"]["devices"]["config"][1]["opaque"][
        "parameters"]["big"].text == BIG


def test_status_updates_and_patches_of_such_a_claim(server: FakeApiServer) -> None:
    created = server.seed(claim_text("c", status=True))
    assert created["status"]["allocation"]["devices"]["results"][0]["device"] == "gpu-0"
    status, got = raw_request(server, "GET", f"{CLAIMS}/c")
    assert served_parameters(got, '"allocation"') == list(PARAMS.values())
    put = got.decode().replace('"allocation":', '"devices":[{"driver":"gpu.example.com",'
                               '"pool":"node-1","device":"gpu-0"}],"allocation":', 1)
    status, updated = raw_request(server, "PUT", f"{CLAIMS}/c/status", put)
    assert status == 200, updated[:300]
    assert b'"devices":[{"driver":"gpu.example.com","pool":"node-1","device":"gpu-0"}]' in updated
    status, patched = raw_request(server, "PATCH", f"{CLAIMS}/c",
                                  '{"metadata":{"labels":{"a":"b"}}}',
                                  content_type="application/merge-patch+json")
    assert status == 200, patched[:300]
    assert served_parameters(patched, '"allocation"') == list(PARAMS.values())
    status, again = raw_request(server, "PUT", f"{CLAIMS}/c/status", patched.decode())
    assert status == 200 and again == patched  # a no-op update writes nothing


def test_watch_events_carry_the_parameters(server: FakeApiServer) -> None:
    api = KubeApi(api_client=server.api_client(), timeout=5)
    rv = api.list(CLAIMS)["metadata"]["resourceVersion"]
    server.seed(claim_text("c"))
    resp = api.send("GET", CLAIMS, query=[("watch", "1"), ("resourceVersion", rv)], stream=True)
    try:
        line = resp.readline()
    finally:
        resp.release_conn()
    assert line.startswith(b'{"type":"ADDED"')
    assert served_parameters(line, '"spec"') == list(PARAMS.values())


def test_a_long_integer_in_a_typed_field_is_refused_like_go(server: FakeApiServer) -> None:
    text = claim_text("c").replace('"deviceClassName"', f'"count":{BIG},"deviceClassName"', 1)
    status, body = raw_request(server, "POST", CLAIMS, text)
    assert status == 400
    assert json.loads(body)["message"].startswith(
        "the object provided is unrecognized: json: cannot unmarshal number 7777")


def test_deep_unknown_fields_do_not_break_the_fake(server: FakeApiServer) -> None:
    text = claim_text("c").replace('"name":"gpu"', f'"name":"gpu","unknown":{DEEP}')
    status, _ = raw_request(server, "POST", CLAIMS, text)
    assert status == 201

