"""Behaviour of the CDI writer: names, minimum versions, spec validation, atomic spec files."""

from __future__ import annotations

import json
import os
import re
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dra_framework.errors import ClaimError
from dra_framework.models import ContainerEdits, DeviceNode, Hook, Mount
from dra_framework.node.cdi import (
    CdiError,
    CdiSpecStore,
    build_spec,
    claim_device_name,
    minimum_version,
    validate_device_name,
    validate_kind,
)

KIND = "k8s.gpu.example.com/gpu"
UID = "3f2b9c1e-8d4a-4c7e-9b1a-2e6f0d5c7a11"
ROOT = "/var/run/cdi"
EDITS = ContainerEdits(env=("A=1",))
VENDOR_CLASS_RE = r"[A-Za-z]([A-Za-z0-9_.-]*[A-Za-z0-9])?"
DEVICE_NAME_RE = r"[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?"


def spec_with(
    edits: dict[str, Any] | None = None,
    *,
    kind: str = "vendor.com/cls",
    name: str = "dev",
    common: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    device = {"name": name, "containerEdits": edits or {"env": ["A=1"]}, **extra.pop("dev", {})}
    spec: dict[str, Any] = {"kind": kind, "devices": [device], **extra}
    if common is not None:
        spec["containerEdits"] = common
    return spec


# ------------------------------------------------------------------------------ minimum version

MIN_VERSION_CASES = [
    pytest.param(spec_with(), "0.3.0", id="baseline"),
    pytest.param(
        spec_with({"mounts": [{"hostPath": "/a", "containerPath": "/b"}]}),
        "0.3.0",
        id="mount-without-type",
    ),
    pytest.param(
        spec_with({"mounts": [{"hostPath": "/a", "containerPath": "/b", "type": "bind"}]}),
        "0.4.0",
        id="mount-type",
    ),
    pytest.param(
        spec_with({"deviceNodes": [{"path": "/dev/a", "hostPath": "/dev/b"}]}),
        "0.5.0",
        id="devicenode-hostpath",
    ),
    pytest.param(
        spec_with({"deviceNodes": [{"path": "/dev/a"}]}), "0.3.0", id="devicenode-without-hostpath"
    ),
    pytest.param(spec_with(name="0dev"), "0.5.0", id="name-leading-digit"),
    pytest.param(spec_with(name=f"{UID}-gpu-0"), "0.5.0", id="name-uid-prefix"),
    pytest.param(spec_with(name="dev0"), "0.3.0", id="name-trailing-digit"),
    pytest.param(spec_with(annotations={"a": "b"}), "0.6.0", id="spec-annotations"),
    pytest.param(spec_with(dev={"annotations": {"a": "b"}}), "0.6.0", id="device-annotations"),
    pytest.param(spec_with(annotations={}), "0.3.0", id="empty-annotations"),
    pytest.param(spec_with(kind="vendor.com/cls.x"), "0.6.0", id="dot-in-class"),
    pytest.param(spec_with(kind="a.b.c/cls"), "0.3.0", id="dot-in-vendor-only"),
    pytest.param(spec_with({"intelRdt": {}}), "0.7.0", id="intelrdt-any"),
    pytest.param(spec_with({"intelRdt": {"closID": "x"}}), "0.7.0", id="intelrdt-closid"),
    pytest.param(spec_with({"additionalGids": [5]}), "0.7.0", id="additional-gids"),
    pytest.param(
        spec_with({"env": ["A=1"], "additionalGids": []}), "0.3.0", id="additional-gids-empty"
    ),
    pytest.param(
        spec_with({"netDevices": [{"hostInterfaceName": "eth1", "name": "net1"}]}),
        "1.1.0",
        id="net-devices",
    ),
    pytest.param(spec_with({"env": ["A=1"], "netDevices": []}), "0.3.0", id="net-devices-empty"),
    pytest.param(
        spec_with({"intelRdt": {"schemata": ["L3:0=f"]}}), "1.1.0", id="intelrdt-schemata"
    ),
    pytest.param(
        spec_with({"intelRdt": {"enableMonitoring": True}}),
        "1.1.0",
        id="intelrdt-enable-monitoring",
    ),
    pytest.param(
        spec_with(common={"deviceNodes": [{"path": "/dev/a", "hostPath": "/dev/b"}]}),
        "0.5.0",
        id="spec-level-edits",
    ),
    pytest.param(
        spec_with(
            {"mounts": [{"hostPath": "/a", "containerPath": "/b", "type": "t"}]},
            name="0x",
            annotations={"a": "b"},
        ),
        "0.6.0",
        id="highest-row-wins",
    ),
    pytest.param({"kind": "v/c", "devices": []}, "0.3.0", id="no-devices"),
]


@pytest.mark.parametrize(("spec", "expected"), MIN_VERSION_CASES)
def test_minimum_version(spec: dict[str, Any], expected: str) -> None:
    assert minimum_version(spec) == expected


def test_minimum_version_checks_every_device() -> None:
    spec = spec_with()
    spec["devices"].append({"name": "b", "containerEdits": {"additionalGids": [1]}})
    assert minimum_version(spec) == "0.7.0"


@given(st.from_regex(DEVICE_NAME_RE, fullmatch=True))
def test_minimum_version_digit_rule(name: str) -> None:
    expected = "0.5.0" if name[0] in string.digits else "0.3.0"
    assert minimum_version(spec_with(name=name)) == expected


# -------------------------------------------------------------------------------- name grammar


@pytest.mark.parametrize(
    "kind",
    ["a/b", "k8s.gpu.example.com/gpu", "vendor.com/class.with.dots", "V_1-x/C_2", "a1/b-c_d"],
)
def test_valid_kinds(kind: str) -> None:
    validate_kind(kind)


@pytest.mark.parametrize(
    ("kind", "part"),
    [
        pytest.param("novendor", "expected", id="no-slash"),
        pytest.param("/cls", "vendor", id="empty-vendor"),
        pytest.param("vendor/", "class", id="empty-class"),
        pytest.param("1vendor/cls", "vendor", id="vendor-leading-digit"),
        pytest.param("vendor-/cls", "vendor", id="vendor-trailing-dash"),
        pytest.param("ven dor/cls", "vendor", id="vendor-space"),
        pytest.param("vendor/cls/x", "class", id="second-slash"),
        pytest.param("vendor/_cls", "class", id="class-leading-underscore"),
        pytest.param("vendor/cls:x", "class", id="class-colon"),
        pytest.param("vendör/cls", "vendor", id="non-ascii-letter"),
        pytest.param("vendor/cls\n", "class", id="trailing-newline"),
    ],
)
def test_invalid_kinds(kind: str, part: str) -> None:
    with pytest.raises(CdiError, match=part):
        validate_kind(kind)


@pytest.mark.parametrize("name", ["a", "0", "gpu-0", "a:b", "a_b.c-d", f"{UID}-gpu-0", "Z9"])
def test_valid_device_names(name: str) -> None:
    validate_device_name(name)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("-a", id="leading-dash"),
        pytest.param("a-", id="trailing-dash"),
        pytest.param("a:", id="trailing-colon"),
        pytest.param("_a", id="leading-underscore"),
        pytest.param("a/b", id="slash"),
        pytest.param("a=b", id="equals"),
        pytest.param("a b", id="space"),
        pytest.param("/dev/a", id="device-path"),
        pytest.param("gpü", id="non-ascii"),
        pytest.param("a\n", id="trailing-newline"),
    ],
)
def test_invalid_device_names(name: str) -> None:
    with pytest.raises(CdiError, match=re.escape(repr(name))):
        validate_device_name(name)


@given(
    st.from_regex(VENDOR_CLASS_RE, fullmatch=True), st.from_regex(VENDOR_CLASS_RE, fullmatch=True)
)
def test_kind_grammar_accepts_generated(vendor: str, cls: str) -> None:
    validate_kind(f"{vendor}/{cls}")


@given(st.from_regex(DEVICE_NAME_RE, fullmatch=True))
def test_device_name_grammar_accepts_generated(name: str) -> None:
    validate_device_name(name)


@given(
    st.from_regex(DEVICE_NAME_RE, fullmatch=True),
    st.characters().filter(lambda c: not re.fullmatch(r"[A-Za-z0-9_.:-]", c)),
    st.data(),
)
def test_device_name_grammar_rejects_foreign_char(name: str, bad: str, data: st.DataObject) -> None:
    pos = data.draw(st.integers(0, len(name)))
    with pytest.raises(CdiError):
        validate_device_name(name[:pos] + bad + name[pos:])


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        pytest.param("gpu-0", f"{UID}-gpu-0", id="plain"),
        pytest.param("gpu/0", f"{UID}-gpu-0", id="slash"),
        pytest.param("a b=c", f"{UID}-a-b-c", id="space-equals"),
        pytest.param("gpü0", f"{UID}-gp-0", id="non-ascii"),
        pytest.param("mig:1g.5gb_0", f"{UID}-mig:1g.5gb_0", id="allowed-punctuation"),
    ],
)
def test_claim_device_name(device: str, expected: str) -> None:
    assert claim_device_name(claim_uid=UID, device=device) == expected


@pytest.mark.parametrize(
    ("uid", "device"),
    [("", "gpu"), (UID, ""), (UID, "gpu-"), ("-uid", "gpu")],
    ids=["empty-uid", "empty-device", "ends-with-dash", "uid-leading-dash"],
)
def test_claim_device_name_rejects(uid: str, device: str) -> None:
    with pytest.raises(CdiError):
        claim_device_name(claim_uid=uid, device=device)


@given(st.uuids(), st.text(min_size=1))
def test_claim_device_name_is_valid_or_rejected(uid: Any, device: str) -> None:
    try:
        name = claim_device_name(claim_uid=str(uid), device=device)
    except CdiError:
        return
    assert name.startswith(f"{uid}-")
    assert len(name) == len(str(uid)) + 1 + len(device)
    validate_device_name(name)


# -------------------------------------------------------------------------------- build_spec


def test_build_spec_minimal() -> None:
    spec = build_spec(kind="v/c", devices=[("a", EDITS)])
    assert spec == {
        "cdiVersion": "0.3.0",
        "kind": "v/c",
        "devices": [{"name": "a", "containerEdits": {"env": ["A=1"]}}],
    }


def test_build_spec_all_edits_known_keys_only() -> None:
    edits = ContainerEdits(
        env=("A=1",),
        device_nodes=(DeviceNode(path="/dev/a", host_path="/dev/b", permissions="rw", type="c"),),
        mounts=(Mount(host_path="/h", container_path="/c", options=("ro",), type="bind"),),
        hooks=(Hook(hook_name="createContainer", path="/bin/hook", args=("hook", "x")),),
        additional_gids=(44,),
    )
    spec = build_spec(kind="v/c", devices=[("a", edits)], common_edits=EDITS)
    assert spec["cdiVersion"] == "0.7.0"
    assert spec["containerEdits"] == {"env": ["A=1"]}
    assert spec["devices"][0]["containerEdits"] == {
        "env": ["A=1"],
        "deviceNodes": [{"path": "/dev/a", "hostPath": "/dev/b", "permissions": "rw", "type": "c"}],
        "mounts": [{"hostPath": "/h", "containerPath": "/c", "options": ["ro"], "type": "bind"}],
        "hooks": [{"hookName": "createContainer", "path": "/bin/hook", "args": ["hook", "x"]}],
        "additionalGids": [44],
    }


def test_build_spec_omits_empty_common_edits() -> None:
    spec = build_spec(kind="v/c", devices=[("a", EDITS)], common_edits=ContainerEdits())
    assert "containerEdits" not in spec


def test_build_spec_version_from_common_edits() -> None:
    common = ContainerEdits(mounts=(Mount(host_path="/h", container_path="/c", type="tmpfs"),))
    assert build_spec(kind="v/c", devices=[("a", EDITS)], common_edits=common)["cdiVersion"] == (
        "0.4.0"
    )


def node(**kw: Any) -> ContainerEdits:
    return ContainerEdits(device_nodes=(DeviceNode(**{"path": "/dev/a", **kw}),))


def hook(**kw: Any) -> ContainerEdits:
    return ContainerEdits(hooks=(Hook(**{"hook_name": "prestart", "path": "/bin/h", **kw}),))


INVALID_EDITS = [
    pytest.param(ContainerEdits(), "containerEdits must not be empty", id="empty-edits"),
    pytest.param(ContainerEdits(env=("NOEQUALS",)), r"containerEdits\.env\[0\]", id="env-no-eq"),
    pytest.param(
        ContainerEdits(env=("A=1", "=x")), r"containerEdits\.env\[1\]", id="env-leading-eq"
    ),
    pytest.param(node(path=""), r"deviceNodes\[0\]\.path", id="node-no-path"),
    pytest.param(node(type="x"), r"deviceNodes\[0\]\.type", id="node-bad-type"),
    pytest.param(node(permissions="rx"), r"deviceNodes\[0\]\.permissions", id="node-bad-perms"),
    pytest.param(node(uid=-1), r"deviceNodes\[0\]\.uid", id="node-negative-uid"),
    pytest.param(node(gid=2**32), r"deviceNodes\[0\]\.gid", id="node-gid-overflow"),
    pytest.param(
        ContainerEdits(mounts=(Mount(host_path="", container_path="/c"),)),
        r"mounts\[0\]\.hostPath",
        id="mount-no-hostpath",
    ),
    pytest.param(
        ContainerEdits(mounts=(Mount(host_path="/h", container_path=""),)),
        r"mounts\[0\]\.containerPath",
        id="mount-no-containerpath",
    ),
    pytest.param(hook(hook_name="preStart"), r"hooks\[0\]\.hookName", id="hook-bad-name"),
    pytest.param(hook(path=""), r"hooks\[0\]\.path", id="hook-no-path"),
    pytest.param(hook(path="bin/h"), r"hooks\[0\]\.path", id="hook-relative-path"),
    pytest.param(hook(timeout=0), r"hooks\[0\]\.timeout", id="hook-zero-timeout"),
    pytest.param(hook(env=("X",)), r"hooks\[0\]\.env\[0\]", id="hook-bad-env"),
    pytest.param(ContainerEdits(additional_gids=(-5,)), r"additionalGids\[0\]", id="negative-gid"),
]


@pytest.mark.parametrize(("edits", "field"), INVALID_EDITS)
def test_build_spec_rejects_invalid_edits(edits: ContainerEdits, field: str) -> None:
    devices = [("good", EDITS), ("bad-dev", edits)]
    with pytest.raises(CdiError, match=f"device 'bad-dev'.*{field}"):
        build_spec(kind="v/c", devices=devices)


@pytest.mark.parametrize(
    "edits",
    [
        node(permissions=""),
        node(permissions="none"),
        node(permissions="rwm"),
        node(type=""),
        node(type="b"),
        node(type="p"),
        hook(hook_name="poststop", timeout=5),
    ],
    ids=["perms-empty", "perms-none", "perms-rwm", "type-empty", "type-b", "type-p", "hook-ok"],
)
def test_build_spec_accepts_allowed_values(edits: ContainerEdits) -> None:
    build_spec(kind="v/c", devices=[("a", edits)])


def test_build_spec_rejects_invalid_common_edits() -> None:
    with pytest.raises(CdiError, match=r"spec containerEdits\.env\[0\]"):
        build_spec(kind="v/c", devices=[("a", EDITS)], common_edits=ContainerEdits(env=("X",)))


@pytest.mark.parametrize(
    ("kind", "devices", "message"),
    [
        pytest.param("v/c", [], "no devices", id="no-devices"),
        pytest.param(
            "v/c", [("a", EDITS), ("a", EDITS)], "'a': name appears twice", id="duplicate-names"
        ),
        pytest.param("v/c", [("-a", EDITS)], "device name '-a'", id="bad-device-name"),
        pytest.param("v", [("a", EDITS)], "kind 'v'", id="bad-kind"),
    ],
)
def test_build_spec_rejects_invalid_specs(
    kind: str, devices: list[tuple[str, ContainerEdits]], message: str
) -> None:
    with pytest.raises(CdiError, match=message):
        build_spec(kind=kind, devices=devices)


def test_cdi_error_is_a_claim_error() -> None:
    assert issubclass(CdiError, ClaimError)


# ------------------------------------------------------------------------------ spec store

DOC_EXAMPLE = {
    "cdiVersion": "0.5.0",
    "kind": "k8s.gpu.example.com/gpu",
    "devices": [
        {
            "name": "3f2b9c1e-8d4a-4c7e-9b1a-2e6f0d5c7a11-gpu-0",
            "containerEdits": {
                "env": ["GPU_DEVICE_0=gpu-0"],
                "deviceNodes": [{"path": "/dev/accel0"}],
            },
        }
    ],
}
DOC_EDITS = ContainerEdits(env=("GPU_DEVICE_0=gpu-0",), device_nodes=(DeviceNode("/dev/accel0"),))


@pytest.fixture
def store(fs: Any) -> CdiSpecStore:
    return CdiSpecStore(root=ROOT, kind=KIND)


def listing(root: str = ROOT) -> list[str]:
    return sorted(os.listdir(root))


def test_doc_example_reproduced(store: CdiSpecStore) -> None:
    ids = store.write_claim_spec(claim_uid=UID, devices=[("gpu-0", DOC_EDITS)])
    assert ids == ["k8s.gpu.example.com/gpu=3f2b9c1e-8d4a-4c7e-9b1a-2e6f0d5c7a11-gpu-0"]
    path = Path(ROOT, f"k8s.gpu.example.com-gpu_{UID}.json")
    assert store.spec_path(UID) == path
    assert json.loads(path.read_text()) == DOC_EXAMPLE
    assert listing() == [path.name]


def test_written_file_round_trips_compact_and_deterministic(store: CdiSpecStore) -> None:
    devices = [("gpu-0", DOC_EDITS), ("gpu-1", EDITS)]
    store.write_claim_spec(claim_uid=UID, devices=devices, common_edits=EDITS)
    path = store.spec_path(UID)
    first = path.read_bytes()
    expected = build_spec(
        kind=KIND,
        devices=[(f"{UID}-gpu-0", DOC_EDITS), (f"{UID}-gpu-1", EDITS)],
        common_edits=EDITS,
    )
    assert json.loads(first) == expected
    assert first.endswith(b"}\n") and b"\n" not in first[:-1] and b": " not in first
    store.write_claim_spec(claim_uid=UID, devices=devices, common_edits=EDITS)
    assert path.read_bytes() == first


def test_file_and_directory_modes(tmp_path: Path) -> None:
    # A real directory: pyfakefs does not apply the umask to os.open.
    root = tmp_path / "a" / "b" / "cdi"
    store = CdiSpecStore(root=root, kind=KIND)
    old = os.umask(0o022)
    try:
        store.write_claim_spec(claim_uid=UID, devices=[("x", EDITS)])
        assert root.stat().st_mode & 0o777 == 0o755
        os.umask(0o077)
        store.write_claim_spec(claim_uid="other", devices=[("x", EDITS)])
    finally:
        os.umask(old)
    for uid in (UID, "other"):
        assert store.spec_path(uid).stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in root.iterdir()) == sorted(
        store.spec_path(uid).name for uid in (UID, "other")
    )


def test_spec_path_replaces_slashes(store: CdiSpecStore) -> None:
    assert store.spec_path("a/b/c") == Path(ROOT, "k8s.gpu.example.com-gpu_a_b_c.json")


def test_temp_file_name_is_invisible_to_runtimes(
    store: CdiSpecStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        seen.append(os.path.basename(src))
        assert os.path.dirname(src) == os.path.dirname(dst) == ROOT
        real_replace(src, dst)

    monkeypatch.setattr("dra_framework.node.cdi.os.replace", spy)
    store.write_claim_spec(claim_uid=UID, devices=[("x", EDITS)])
    assert len(seen) == 1
    assert re.fullmatch(r"spec\..+\.tmp", seen[0])
    assert not seen[0].endswith((".json", ".yaml"))


@pytest.mark.parametrize("fail_at", ["fchmod", "replace", "dumps"])
def test_failed_write_leaves_no_temp_and_keeps_old_file(
    store: CdiSpecStore, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    store.write_claim_spec(claim_uid=UID, devices=[("old", EDITS)])
    before = store.spec_path(UID).read_bytes()

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise OSError("injected failure") if fail_at != "dumps" else TypeError("not JSON")

    module = "json" if fail_at == "dumps" else "os"
    monkeypatch.setattr(f"dra_framework.node.cdi.{module}.{fail_at}", boom)
    with pytest.raises(CdiError, match="cannot write CDI spec"):
        store.write_claim_spec(claim_uid=UID, devices=[("new", EDITS)])
    monkeypatch.undo()
    assert listing() == [store.spec_path(UID).name]
    assert store.spec_path(UID).read_bytes() == before


def test_disk_full_midway_leaves_nothing(fs: Any) -> None:
    store = CdiSpecStore(root=ROOT, kind=KIND)
    os.makedirs(ROOT)
    fs.set_disk_usage(200, ROOT)
    big = ContainerEdits(env=tuple(f"VAR_{i}=value" for i in range(100)))
    with pytest.raises(CdiError, match="cannot write CDI spec"):
        store.write_claim_spec(claim_uid=UID, devices=[("x", big)])
    assert listing() == []


def test_invalid_input_writes_nothing(store: CdiSpecStore) -> None:
    with pytest.raises(CdiError, match=rf"device '{UID}-bad'.*env\[0\]"):
        store.write_claim_spec(claim_uid=UID, devices=[("bad", ContainerEdits(env=("X",)))])
    assert not os.path.exists(ROOT) or listing() == []


def test_duplicate_device_names_made_unique(store: CdiSpecStore) -> None:
    devices = [("gpu-0", EDITS), ("gpu-0", EDITS), ("gpu/0", EDITS), ("gpu-0-2", EDITS)]
    ids = store.write_claim_spec(claim_uid=UID, devices=devices)
    names = [f"{UID}-gpu-0", f"{UID}-gpu-0-3", f"{UID}-gpu-0-4", f"{UID}-gpu-0-2"]
    assert ids == [f"{KIND}={n}" for n in names]
    written = json.loads(store.spec_path(UID).read_text())
    assert [d["name"] for d in written["devices"]] == names


def test_remove_is_idempotent(store: CdiSpecStore) -> None:
    store.write_claim_spec(claim_uid=UID, devices=[("x", EDITS)])
    assert store.remove_claim_spec(claim_uid=UID) is True
    assert not store.spec_path(UID).exists()
    assert store.remove_claim_spec(claim_uid=UID) is False
    assert store.remove_claim_spec(claim_uid="never-written") is False


def test_claim_uids_lists_only_this_kind(store: CdiSpecStore, fs: Any) -> None:
    assert store.claim_uids() == set()  # root does not exist yet
    for uid in ("uid-1", "uid-2"):
        store.write_claim_spec(claim_uid=uid, devices=[("x", EDITS)])
    other = CdiSpecStore(root=ROOT, kind="k8s.gpu.example.com/gpu-x")
    other.write_claim_spec(claim_uid="uid-3", devices=[("x", EDITS)])
    # Same file-name prefix as ours, but a different kind inside: not ours.
    collide = CdiSpecStore(root=ROOT, kind="k8s.gpu.example.com-gpu/x")
    collide.write_claim_spec(claim_uid="uid-4", devices=[("x", EDITS)])
    fs.create_file(f"{ROOT}/nvidia.com-gpu_uid-5.json", contents="{}")
    fs.create_file(f"{ROOT}/k8s.gpu.example.com-gpu_uid-6.yaml", contents="{}")
    fs.create_file(f"{ROOT}/spec.k8s.gpu.example.com-gpu.abc.tmp", contents="{")
    fs.create_file(f"{ROOT}/k8s.gpu.example.com-gpu_.json", contents="{}")
    fs.create_dir(f"{ROOT}/k8s.gpu.example.com-gpu_uid-7.json")
    fs.create_file(f"{ROOT}/k8s.gpu.example.com-gpu_uid-8.json", contents="{garbage")
    assert store.claim_uids() == {"uid-1", "uid-2", "uid-8"}
    assert other.claim_uids() == {"uid-3"}


def test_remove_stale_temp_files(store: CdiSpecStore, fs: Any) -> None:
    assert store.remove_stale_temp_files() == 0  # root does not exist yet
    store.write_claim_spec(claim_uid=UID, devices=[("x", EDITS)])
    ours = [f"{ROOT}/spec.k8s.gpu.example.com-gpu.{n}.tmp" for n in ("a1", "b2")]
    for path in ours:
        fs.create_file(path, contents="{partial")
    foreign = f"{ROOT}/spec.123456.tmp"
    fs.create_file(foreign, contents="another writer's in-flight file")
    assert store.remove_stale_temp_files() == 2
    assert listing() == sorted([store.spec_path(UID).name, os.path.basename(foreign)])
    assert store.remove_stale_temp_files() == 0


def test_store_rejects_bad_kind_and_uid(fs: Any) -> None:
    with pytest.raises(CdiError, match="kind"):
        CdiSpecStore(root=ROOT, kind="no-slash")
    with pytest.raises(CdiError):
        CdiSpecStore(root=ROOT, kind=KIND).spec_path("")
