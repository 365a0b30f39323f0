"""The generated kubelet gRPC modules: up to date with their sources, and true to the wire.

Two kinds of checks:

* freshness: regenerating into a temporary directory must reproduce the committed
  ``dra_framework/kubelet/_proto`` tree byte for byte (no file missing, extra or different);
* the wire contract of docs/kubelet-grpc.md, read back from the descriptors and the generated
  stubs: proto packages, file names, every message's exact field set (numbers, types, labels),
  enum values, services and full gRPC method paths, and ``share_id`` presence semantics.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from dra_framework.kubelet.protos import generate

REGENERATE = f"run `{generate.COMMAND}` and commit the result"

MODULES = {
    "pluginregistration.v1": "dra_framework.kubelet._proto.pluginregistration.v1",
    "dra.v1": "dra_framework.kubelet._proto.dra.v1",
    "dra.v1beta1": "dra_framework.kubelet._proto.dra.v1beta1",
    "drahealth.v1alpha1": "dra_framework.kubelet._proto.drahealth.v1alpha1",
}


def pb2(api: str) -> ModuleType:
    return importlib.import_module(f"{MODULES[api]}.api_pb2")


def pb2_grpc(api: str) -> ModuleType:
    return importlib.import_module(f"{MODULES[api]}.api_pb2_grpc")


# --- freshness -------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_committed_modules_match_the_proto_sources(tmp_path: Path) -> None:
    fresh_dir = tmp_path / "_proto"
    assert generate.main(["--out", str(fresh_dir)]) == 0
    fresh, committed = _tree(fresh_dir), _tree(generate.DEFAULT_OUT)

    missing = sorted(set(fresh) - set(committed))
    extra = sorted(set(committed) - set(fresh))
    different = sorted(
        name for name in set(fresh) & set(committed) if fresh[name] != committed[name]
    )
    problems = [
        *(f"missing: {name}" for name in missing),
        *(f"not generated any more: {name}" for name in extra),
        *(f"out of date: {name}" for name in different),
    ]
    assert not problems, (
        "dra_framework/kubelet/_proto does not match the .proto sources:\n  "
        + "\n  ".join(problems)
        + f"\n{REGENERATE}"
    )


def test_generation_is_deterministic_and_removes_stale_files(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    generate.generate(out=first)
    stale = second / "dra" / "v0" / "api_pb2.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("# stale\n")
    (second / "dra" / "NOTES.txt").write_text("kept\n")
    generate.generate(out=second)
    assert not stale.parent.exists()
    assert (second / "dra" / "NOTES.txt").read_text() == "kept\n"
    (second / "dra" / "NOTES.txt").unlink()
    assert _tree(first) == _tree(second)


# --- files and packages ----------------------------------------------------------------------


EXPECTED_FILES = [
    ("pluginregistration.v1", "dra_framework/kubelet/_proto/pluginregistration/v1/api.proto",
     "pluginregistration"),
    ("dra.v1", "dra_framework/kubelet/_proto/dra/v1/api.proto", "k8s.io.kubelet.pkg.apis.dra.v1"),
    ("dra.v1beta1", "dra_framework/kubelet/_proto/dra/v1beta1/api.proto",
     "k8s.io.kubelet.pkg.apis.dra.v1beta1"),
    ("drahealth.v1alpha1", "dra_framework/kubelet/_proto/drahealth/v1alpha1/api.proto", "v1alpha1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("api", "file_name", "package"), EXPECTED_FILES, ids=[row[0] for row in EXPECTED_FILES]
)
def test_proto3_file_with_documented_package_and_distinct_name(
    api: str, file_name: str, package: str
) -> None:
    descriptor = pb2(api).DESCRIPTOR
    proto = descriptor_pb2.FileDescriptorProto()
    descriptor.CopyToProto(proto)
    assert (descriptor.name, descriptor.package, proto.syntax) == (file_name, package, "proto3")


# --- messages --------------------------------------------------------------------------------

_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT64: "int64",
}


def _type_of(field: FieldDescriptor) -> str:
    """Render a field's type the way the doc's tables write it."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        entry: Descriptor = field.message_type
        if entry.GetOptions().map_entry:
            key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
            return f"map<{_type_of(key)}, {_type_of(value)}>"
        name = str(entry.name)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        name = str(field.enum_type.name)
    else:
        name = _SCALARS[field.type]
    if field.is_repeated:
        return f"repeated {name}"
    if field.has_presence and field.type != FieldDescriptor.TYPE_MESSAGE:
        return f"optional {name}"
    return name


_DRA_COMMON: dict[str, dict[str, tuple[int, str]]] = {
    "NodePrepareResourcesRequest": {"claims": (1, "repeated Claim")},
    "NodePrepareResourcesResponse": {
        "claims": (1, "map<string, NodePrepareResourceResponse>"),
    },
    "NodePrepareResourceResponse": {"devices": (1, "repeated Device"), "error": (2, "string")},
    "Device": {
        "request_names": (1, "repeated string"),
        "pool_name": (2, "string"),
        "device_name": (3, "string"),
        "cdi_device_ids": (4, "repeated string"),
    },
    "NodeUnprepareResourcesRequest": {"claims": (1, "repeated Claim")},
    "NodeUnprepareResourcesResponse": {
        "claims": (1, "map<string, NodeUnprepareResourceResponse>"),
    },
    "NodeUnprepareResourceResponse": {"error": (1, "string")},
    "Claim": {"namespace": (1, "string"), "uid": (2, "string"), "name": (3, "string")},
}

EXPECTED_MESSAGES: dict[str, dict[str, dict[str, tuple[int, str]]]] = {
    "pluginregistration.v1": {
        "InfoRequest": {},
        "PluginInfo": {
            "type": (1, "string"),
            "name": (2, "string"),
            "endpoint": (3, "string"),
            "supported_versions": (4, "repeated string"),
        },
        "RegistrationStatus": {"plugin_registered": (1, "bool"), "error": (2, "string")},
        "RegistrationStatusResponse": {},
    },
    "dra.v1": {
        **_DRA_COMMON,
        "Device": {**_DRA_COMMON["Device"], "share_id": (5, "optional string")},
    },
    "dra.v1beta1": _DRA_COMMON,
    "drahealth.v1alpha1": {
        "NodeWatchResourcesRequest": {},
        "NodeWatchResourcesResponse": {"devices": (1, "repeated DeviceHealth")},
        "DeviceHealth": {
            "device": (1, "DeviceIdentifier"),
            "health": (2, "HealthStatus"),
            "last_updated_time": (3, "int64"),
            "health_check_timeout_seconds": (4, "int64"),
            "message": (5, "string"),
        },
        "DeviceIdentifier": {"pool_name": (1, "string"), "device_name": (2, "string")},
    },
}


@pytest.mark.parametrize("api", list(EXPECTED_MESSAGES))
def test_file_declares_exactly_the_documented_messages(api: str) -> None:
    assert set(pb2(api).DESCRIPTOR.message_types_by_name) == set(EXPECTED_MESSAGES[api])


@pytest.mark.parametrize(
    ("api", "message", "fields"),
    [
        pytest.param(api, message, fields, id=f"{api}:{message}")
        for api, messages in EXPECTED_MESSAGES.items()
        for message, fields in messages.items()
    ],
)
def test_message_fields_match_the_doc(
    api: str, message: str, fields: dict[str, tuple[int, str]]
) -> None:
    descriptor = pb2(api).DESCRIPTOR.message_types_by_name[message]
    actual = {field.name: (field.number, _type_of(field)) for field in descriptor.fields}
    assert actual == fields


def test_health_status_enum_values() -> None:
    enum = pb2("drahealth.v1alpha1").DESCRIPTOR.enum_types_by_name["HealthStatus"]
    assert {value.name: value.number for value in enum.values} == {
        "UNKNOWN": 0,
        "HEALTHY": 1,
        "UNHEALTHY": 2,
    }


# --- services and method paths ---------------------------------------------------------------


class _RecordingChannel:
    """Stands in for a ``grpc.Channel``: records the paths a generated stub binds."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}

    def _record(self, kind: str) -> Callable[..., object]:
        def bind(path: str, **_: Any) -> object:
            self.paths[path] = kind
            return object()

        return bind

    def __getattr__(self, kind: str) -> Callable[..., object]:
        return self._record(kind)


EXPECTED_METHODS = [
    ("pluginregistration.v1", "Registration", "GetInfo",
     "/pluginregistration.Registration/GetInfo",
     "InfoRequest", "PluginInfo", "unary_unary"),
    ("pluginregistration.v1", "Registration", "NotifyRegistrationStatus",
     "/pluginregistration.Registration/NotifyRegistrationStatus",
     "RegistrationStatus", "RegistrationStatusResponse", "unary_unary"),
    ("dra.v1", "DRAPlugin", "NodePrepareResources",
     "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources",
     "NodePrepareResourcesRequest", "NodePrepareResourcesResponse", "unary_unary"),
    ("dra.v1", "DRAPlugin", "NodeUnprepareResources",
     "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodeUnprepareResources",
     "NodeUnprepareResourcesRequest", "NodeUnprepareResourcesResponse", "unary_unary"),
    ("dra.v1beta1", "DRAPlugin", "NodePrepareResources",
     "/k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin/NodePrepareResources",
     "NodePrepareResourcesRequest", "NodePrepareResourcesResponse", "unary_unary"),
    ("dra.v1beta1", "DRAPlugin", "NodeUnprepareResources",
     "/k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin/NodeUnprepareResources",
     "NodeUnprepareResourcesRequest", "NodeUnprepareResourcesResponse", "unary_unary"),
    ("drahealth.v1alpha1", "DRAResourceHealth", "NodeWatchResources",
     "/v1alpha1.DRAResourceHealth/NodeWatchResources",
     "NodeWatchResourcesRequest", "NodeWatchResourcesResponse", "unary_stream"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("api", "service", "method", "path", "request_type", "response_type", "kind"),
    EXPECTED_METHODS,
    ids=[row[3] for row in EXPECTED_METHODS],
)
def test_method_descriptor_and_stub_path(
    api: str,
    service: str,
    method: str,
    path: str,
    request_type: str,
    response_type: str,
    kind: str,
) -> None:
    service_descriptor = pb2(api).DESCRIPTOR.services_by_name[service]
    method_descriptor = service_descriptor.methods_by_name[method]
    assert f"/{service_descriptor.full_name}/{method_descriptor.name}" == path
    assert method_descriptor.input_type.name == request_type
    assert method_descriptor.output_type.name == response_type
    assert method_descriptor.client_streaming is False
    assert method_descriptor.server_streaming is (kind == "unary_stream")

    channel = _RecordingChannel()
    getattr(pb2_grpc(api), f"{service}Stub")(channel)
    assert channel.paths[path] == kind


@pytest.mark.parametrize("api", list(MODULES))
def test_file_declares_exactly_the_documented_services(api: str) -> None:
    expected = {(row[1], row[2]) for row in EXPECTED_METHODS if row[0] == api}
    actual = {
        (service.name, method.name)
        for service in pb2(api).DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert actual == expected


# --- share_id presence -----------------------------------------------------------------------


def test_v1_share_id_has_explicit_presence() -> None:
    device_type = pb2("dra.v1").Device
    assert not device_type().HasField("share_id")
    empty = device_type(share_id="")
    assert empty.HasField("share_id")
    decoded = device_type.FromString(empty.SerializeToString())
    assert decoded.HasField("share_id")
    assert decoded.share_id == ""
    decoded.ClearField("share_id")
    assert not device_type.FromString(decoded.SerializeToString()).HasField("share_id")


def test_v1beta1_device_has_no_share_id() -> None:
    device_type = pb2("dra.v1beta1").Device
    assert "share_id" not in device_type.DESCRIPTOR.fields_by_name
    with pytest.raises(ValueError):
        device_type().HasField("share_id")


def test_v1_share_id_is_dropped_when_read_as_v1beta1() -> None:
    sent = pb2("dra.v1").Device(pool_name="pool", device_name="dev", share_id="abc")
    received = pb2("dra.v1beta1").Device.FromString(sent.SerializeToString())
    assert (received.pool_name, received.device_name) == ("pool", "dev")
    assert "share_id" not in {field.name for field, _ in received.ListFields()}
