"""Faults and hostile input on the prepare path, in-process.

Each case is answered for its own claim (never by an exception out of the call), and nothing is
lost, leaked or left blocked: after the fault, the claim's CDI spec, the backend's state and the
device-in-use markers are gone, or all still there for a retry.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from dra_framework.models import ClaimRef
from dra_framework.node.allocation import MAX_PARAMETER_DEPTH
from dra_framework.node.calls import MAX_ERROR_CHARS, STOPPING
from dra_framework.testing.claims import Config, Result, allocated_claim

from .env import Env

Damage = Callable[[str], str]
"""Turns the stored body of a claim's record into something else."""


def spec_path(env: Env, claim: ClaimRef) -> Path:
    return env.cdi / f"k8s.gpu.example.com-gpu_{claim.uid}.json"


def damage_record(env: Env, claim: ClaimRef, damage: Damage) -> None:
    """Change the claim's row from outside, as a disk error or another writer would."""
    with sqlite3.connect(env.preparer.checkpoint.path) as db:
        (body,) = db.execute("SELECT body FROM claims WHERE uid=?", (claim.uid,)).fetchone()
        db.execute("UPDATE claims SET body=? WHERE uid=?", (damage(body), claim.uid))


def holds(env: Env, device: str) -> str | None:
    return env.preparer.checkpoint.device_owner("node-1", device)


def nothing_left(env: Env, claim: ClaimRef, *devices: str) -> None:
    assert not spec_path(env, claim).exists()
    assert env.preparer.checkpoint.peek(claim.uid) is None
    assert not set(devices) & set(env.markers())  # the backend's state of those devices
    assert all(holds(env, d) is None for d in devices)


DAMAGE: list[Any] = [
    pytest.param(lambda body: "garbage", id="garbage"),
    pytest.param(lambda body: "", id="empty"),
    pytest.param(lambda body: body[:40], id="truncated"),
    pytest.param(lambda body: body.replace('"gpu-0"', '"gpu-7"'), id="checksum-mismatch"),
    pytest.param(lambda body: json.dumps({"uid": "someone-else"}), id="another-shape"),
]


# -- a record that cannot be read is not a corrupt record --------------------------------------


def fail_reads_of(env: Env, monkeypatch: pytest.MonkeyPatch, claim: ClaimRef,
                  error: str) -> None:
    checkpoint = env.preparer.checkpoint
    real = checkpoint._all

    def failing(sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if "FROM claims WHERE uid" in sql and params == (claim.uid,):
            raise sqlite3.OperationalError(error)
        return real(sql, params)

    monkeypatch.setattr(checkpoint, "_all", failing)


def test_a_record_that_cannot_be_read_fails_the_call_and_keeps_the_claim(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    c = env.claim("a", "gpu-0")
    assert env.preparer.prepare([c])[c.uid].error == ""
    fail_reads_of(env, monkeypatch, c, "disk I/O error")
    assert "disk I/O error" in env.preparer.prepare([c])[c.uid].error
    assert "disk I/O error" in env.preparer.unprepare([c])[c.uid]
    # nothing was forgotten: the claim is still prepared, and answers once reads work again
    monkeypatch.undo()
    assert spec_path(env, c).exists() and holds(env, "gpu-0") == c.uid
    assert env.preparer.prepare([c])[c.uid].devices
    assert env.preparer.unprepare([c]) == {c.uid: ""}
    nothing_left(env, c, "gpu-0")


# -- a corrupt record is rolled back completely ------------------------------------------------


@pytest.mark.parametrize("damage", DAMAGE)
def test_unprepare_of_a_corrupt_record_cleans_up_everything(env: Env, damage: Damage) -> None:
    c = env.claim("a", "gpu-0", "gpu-1")
    assert env.preparer.prepare([c])[c.uid].error == ""
    damage_record(env, c, damage)
    assert env.preparer.unprepare([c]) == {c.uid: ""}
    nothing_left(env, c, "gpu-0", "gpu-1")
    other = env.claim("b", "gpu-0", "gpu-1")
    assert env.preparer.prepare([other])[other.uid].error == ""


@pytest.mark.parametrize("damage", DAMAGE)
def test_prepare_of_a_corrupt_record_rolls_back_then_prepares_again(
        env: Env, damage: Damage) -> None:
    c = env.claim("a", "gpu-0")
    assert env.preparer.prepare([c])[c.uid].error == ""
    damage_record(env, c, damage)
    again = env.preparer.prepare([c])[c.uid]
    assert again.error == "" and [d.device for d in again.devices] == ["gpu-0"]
    assert holds(env, "gpu-0") == c.uid and env.markers() == ["gpu-0"]
    assert env.preparer.unprepare([c]) == {c.uid: ""}
    nothing_left(env, c, "gpu-0")


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_corrupt_record_found_at_start_is_rolled_back(env: Env, damage: Damage) -> None:
    c = env.claim("a", "gpu-0")
    assert env.preparer.prepare([c])[c.uid].error == ""
    damage_record(env, c, damage)
    env.restart()
    nothing_left(env, c, "gpu-0")
    with sqlite3.connect(env.preparer.checkpoint.path) as db:
        assert db.execute("SELECT uid FROM corrupt").fetchall() == [(c.uid,)]


# -- whatever goes wrong, each claim gets its own answer ---------------------------------------


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


def test_parameters_nested_thousands_deep_fail_that_claim_only(env: Env) -> None:
    deep = env.claims.add(allocated_claim(
        name="deep", results=[Result("gpu", "gpu-0")],
        configs=[Config(parameters={"apiVersion": "gpu.example.com/v1", "kind": "GpuConfig",
                                    "x": nested(3000)})]))
    fine = env.claim("fine", "gpu-1")
    results = env.preparer.prepare([deep, fine])
    assert f"nested deeper than {MAX_PARAMETER_DEPTH} levels" in results[deep.uid].error
    assert "opaque.parameters" in results[deep.uid].error
    assert results[fine.uid].error == ""
    nothing_left(env, deep, "gpu-0")


def _results(value: Any) -> Callable[[dict[str, Any]], None]:
    def change(claim: dict[str, Any]) -> None:
        claim["status"]["allocation"]["devices"]["results"] = value
    return change


def _in_result(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(claim: dict[str, Any]) -> None:
        claim["status"]["allocation"]["devices"]["results"][0][key] = value
    return change


def _config(value: Any) -> Callable[[dict[str, Any]], None]:
    def change(claim: dict[str, Any]) -> None:
        claim["status"]["allocation"]["devices"]["config"] = value
    return change


@pytest.mark.parametrize(("change", "names"), [
    pytest.param(_results(7), "status.allocation.devices.results: must be a list",
                 id="results-number"),
    pytest.param(_results(["gpu-0"]), "status.allocation.devices.results[0]: must be an object",
                 id="result-string"),
    pytest.param(_in_result("adminAccess", "false"), "results[0].adminAccess: must be a boolean",
                 id="admin-access-string"),
    pytest.param(_in_result("shareID", 5), "results[0].shareID: must be a string",
                 id="share-id-number"),
    pytest.param(_in_result("device", 0), "results[0]: missing or invalid 'device'",
                 id="device-number"),
    pytest.param(_config({"opaque": {}}), "status.allocation.devices.config: must be a list",
                 id="config-object"),
    pytest.param(_config([{"requests": "gpu", "opaque": {
        "driver": "gpu.example.com", "parameters": {}}}]),
        "config[0].requests: must be a list", id="requests-string"),
    pytest.param(lambda c: c["status"].update(allocation=["x"]),
                 "status.allocation: must be an object", id="allocation-list"),
])
def test_allocation_fields_of_the_wrong_json_type_fail_that_claim_only(
        env: Env, change: Callable[[dict[str, Any]], None], names: str) -> None:
    obj = allocated_claim(name="odd", results=[Result("gpu", "gpu-0")])
    change(obj)
    odd = env.claims.add(obj)
    fine = env.claim("fine", "gpu-1")
    results = env.preparer.prepare([odd, fine])
    assert names in results[odd.uid].error
    assert results[fine.uid].error == ""


def test_a_failing_state_store_fails_each_claim_on_its_own(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    done = env.claim("done", "gpu-0")
    assert env.preparer.prepare([done])[done.uid].error == ""
    new = env.claim("new", "gpu-1")

    def failing(sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(env.preparer.checkpoint, "_all", failing)
    prepared = env.preparer.prepare([done, new])
    unprepared = env.preparer.unprepare([done, new])
    for uid in (done.uid, new.uid):
        assert "database is locked" in prepared[uid].error
        assert "database is locked" in unprepared[uid]
    monkeypatch.undo()
    assert env.preparer.prepare([done, new])[new.uid].error == ""


def test_an_unusable_database_is_set_aside_at_start(env: Env) -> None:
    c = env.claim("a", "gpu-0")
    assert env.preparer.prepare([c])[c.uid].error == ""
    path = env.preparer.checkpoint.path
    env.preparer.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"garbage" * 1000)
    env.preparer = env.start()
    assert [p.name.split(".")[0] for p in (env.state / "corrupt").iterdir()] == [path.stem]
    assert not spec_path(env, c).exists()  # an orphan of a state no longer known
    other = env.claim("b", "gpu-0")
    assert env.preparer.prepare([other])[other.uid].error == ""


def test_a_link_at_the_database_path_is_refused(env: Env, tmp_path: Path) -> None:
    from dra_framework.errors import SetupError

    env.preparer.close()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    path = env.preparer.checkpoint.path
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.symlink_to(victim)
    with pytest.raises(SetupError, match="not a regular file"):
        env.start()
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("uid", [
    pytest.param("ü" * 128, id="multibyte-256-bytes"),
    pytest.param("../../etc/passwd", id="path"),
    pytest.param(".hidden", id="dot"),
    pytest.param("a" * 129, id="too-long"),
])
def test_a_uid_that_is_no_file_name_fails_that_claim_only(env: Env, uid: str) -> None:
    odd = ClaimRef(namespace="default", name="odd", uid=uid)
    fine = env.claim("fine", "gpu-0")
    results = env.preparer.prepare([odd, fine])
    assert "invalid claim UID" in results[uid].error
    assert results[fine.uid].error == ""
    assert "invalid claim UID" in env.preparer.unprepare([odd])[uid]


def test_an_unexpected_exception_is_that_claims_error(env: Env) -> None:
    fine = env.claim("fine", "gpu-0")
    broken = ClaimRef(namespace="default", name="broken", uid="0000-broken")
    real_get = env.claims.get

    def get(claim: ClaimRef, *, timeout: float | None = None) -> Mapping[str, Any]:
        if claim.name == "broken":
            raise RuntimeError("a bug")
        return real_get(claim, timeout=timeout)

    env.claims.get = get  # type: ignore[method-assign]
    results = env.preparer.prepare([broken, fine])
    assert results[broken.uid].error.startswith("internal error: RuntimeError: a bug")
    assert results[fine.uid].error == ""


def test_an_error_answer_is_bounded(env: Env) -> None:
    huge = env.claims.add(allocated_claim(
        name="huge", results=[Result("gpu", "gpu-0")],
        configs=[Config(parameters={"apiVersion": "gpu.example.com/v1", "kind": "GpuConfig",
                                    "x" * 10_000_000: 1})]))
    error = env.preparer.prepare([huge])[huge.uid].error
    assert error and len(error) <= MAX_ERROR_CHARS


# -- a failed CDI write is what the kubelet hears, and it is rolled back completely -----------


def test_a_directory_at_the_cdi_spec_path_is_reported_and_rolled_back(env: Env) -> None:
    c = env.claim("a", "gpu-0", "gpu-1")
    spec_path(env, c).parent.mkdir(parents=True, exist_ok=True)
    spec_path(env, c).mkdir()
    error = env.preparer.prepare([c])[c.uid].error
    assert "cannot write CDI spec" in error and "cannot remove" not in error
    assert env.preparer.checkpoint.peek(c.uid) is None
    assert env.markers() == [] and holds(env, "gpu-0") is None and holds(env, "gpu-1") is None
    other = env.claim("b", "gpu-0", "gpu-1")
    assert env.preparer.prepare([other])[other.uid].error == ""


# -- time: every call answers before its deadline, and calls do not wait for each other -------


class SlowClaims:
    """Claims named ``slow-*`` are read only once ``release`` is set (or the timeout passes)."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.release = threading.Event()
        self.timeouts: list[float | None] = []

    def lookup(self, claim: ClaimRef) -> Mapping[str, Any] | None:
        return None

    def get(self, claim: ClaimRef, *, timeout: float | None = None) -> Mapping[str, Any]:
        if claim.name.startswith("slow"):
            self.timeouts.append(timeout)
            if not self.release.wait(timeout):
                from dra_framework.errors import TransientApiError
                raise TransientApiError(f"the API server did not answer within {timeout:.1f} s")
        return self.env.claims.get(claim)


def test_reads_are_bounded_by_the_call_deadline(env: Env) -> None:
    slow_source = SlowClaims(env)
    env.preparer._claims = slow_source
    slow, fine = env.claim("slow", "gpu-0"), env.claim("fine", "gpu-1")
    started = time.monotonic()
    results = env.preparer.prepare([slow, fine], deadline=started + 2.0)
    assert time.monotonic() - started < 2.0
    assert "did not answer" in results[slow.uid].error
    assert results[fine.uid].error == ""
    assert slow_source.timeouts and all(t is not None and t < 2.0 for t in slow_source.timeouts)
    slow_source.release.set()


def test_a_call_waiting_on_reads_does_not_delay_another(env: Env) -> None:
    slow_source = SlowClaims(env)
    env.preparer._claims = slow_source
    stuck = [env.claim(f"slow-{i}", f"gpu-{i}") for i in range(2)]
    quick = [env.claim(f"quick-{i}", f"gpu-{i + 2}") for i in range(2)]
    first: dict[str, Any] = {}
    caller = threading.Thread(target=lambda: first.update(env.preparer.prepare(
        stuck, deadline=time.monotonic() + 30)))
    caller.start()
    while len(slow_source.timeouts) < 2:
        time.sleep(0.01)
    second = env.preparer.prepare(quick, deadline=time.monotonic() + 30)
    assert all(second[c.uid].error == "" for c in quick)
    assert caller.is_alive() and not first  # the first call is still waiting on its reads
    slow_source.release.set()
    caller.join(10)
    assert all(first[c.uid].error == "" for c in stuck)


# -- shutdown: the lock outlives every call that holds it --------------------------------------


def test_close_waits_for_the_call_in_flight_and_refuses_new_ones(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = env.preparer.backend
    entered, finish = threading.Event(), threading.Event()
    real_prepare = backend.prepare

    def slow_prepare(**kw: Any) -> Any:
        entered.set()
        finish.wait(10)
        return real_prepare(**kw)

    monkeypatch.setattr(backend, "prepare", slow_prepare)
    c, late = env.claim("a", "gpu-0"), env.claim("late", "gpu-1")
    answer: dict[str, Any] = {}
    call = threading.Thread(target=lambda: answer.update(env.preparer.prepare([c])))
    call.start()
    assert entered.wait(10)
    closer = threading.Thread(target=env.preparer.close)
    closer.start()
    while not env.preparer._calls._closing:
        time.sleep(0.01)
    assert env.preparer.prepare([late])[late.uid].error == STOPPING
    assert env.preparer.unprepare([late])[late.uid] == STOPPING
    closer.join(0.3)
    assert closer.is_alive()  # the lock is still held for the call in flight
    finish.set()
    call.join(10)
    closer.join(10)
    assert not closer.is_alive() and answer[c.uid].error == ""
    with pytest.raises(OSError):  # released only now
        os.fstat(env.preparer.lock._fd)
    env.preparer = env.start()
    assert env.preparer.checkpoint.peek(c.uid) is not None
    assert holds(env, "gpu-0") == c.uid and env.markers() == ["gpu-0"]


# -- a batch: concurrent backend work only where the backend allows it ---------------------------


def test_claims_of_one_call_prepare_at_once_when_the_backend_allows_it(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import attrs

    backend = env.preparer.backend
    monkeypatch.setattr(backend, "_info", attrs.evolve(backend.info, concurrent_prepare=True))
    claims = [env.claim(f"c{i}", f"gpu-{i}") for i in range(4)]
    meet = threading.Barrier(4, timeout=10)  # passes only if all four run at the same time
    real_prepare = backend.prepare

    def together(**kw: Any) -> Any:
        meet.wait()
        return real_prepare(**kw)

    monkeypatch.setattr(backend, "prepare", together)
    results = env.preparer.prepare(claims)
    assert all(results[c.uid].error == "" for c in claims)


def test_claims_of_one_call_prepare_one_by_one_otherwise(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = env.preparer.backend
    assert not backend.info.concurrent_prepare  # the example backend's choice
    claims = [env.claim(f"c{i}", f"gpu-{i}") for i in range(4)]
    running, most = [0], [0]
    guard = threading.Lock()
    real_prepare = backend.prepare

    def counted(**kw: Any) -> Any:
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with guard:
            running[0] -= 1
        return real_prepare(**kw)

    monkeypatch.setattr(backend, "prepare", counted)
    results = env.preparer.prepare(claims)
    assert all(results[c.uid].error == "" for c in claims) and most[0] == 1


def test_two_claims_of_one_call_wanting_one_device_get_it_once(env: Env) -> None:
    first, second = env.claim("first", "gpu-0"), env.claim("second", "gpu-0")
    results = env.preparer.prepare([first, second])
    assert results[first.uid].error == ""
    assert f"already prepared for claim {first.uid}" in results[second.uid].error
    nothing_left(env, second)


def test_a_failing_claim_of_a_batch_is_rolled_back_alone(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from dra_framework.errors import BackendError

    backend = env.preparer.backend
    good, bad = env.claim("good", "gpu-0"), env.claim("bad", "gpu-1")
    real_prepare = backend.prepare

    def fail_one(**kw: Any) -> Any:
        if kw["claim"].name == "bad":
            raise BackendError("the device did not come up")
        return real_prepare(**kw)

    monkeypatch.setattr(backend, "prepare", fail_one)
    results = env.preparer.prepare([good, bad])
    assert results[good.uid].error == ""
    assert "did not come up" in results[bad.uid].error
    nothing_left(env, bad, "gpu-1")
    assert holds(env, "gpu-0") == good.uid
