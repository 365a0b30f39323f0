"""Properties of prepare and unprepare over generated claims, through the real DRA socket.

Batches of allocated claims (``strategies``) are seeded into the fake API server and prepared by
the running plugin of a backend (``example``, and ``nvidia-gpu`` on fake NVML), then unprepared.
Whatever the claims hold, for every batch:

* the RPC answers every requested claim UID exactly once and never fails as a whole;
* a claim whose config holds a value of another JSON type is not prepared, and its error names
  that field; a claim with valid config, on devices of this node, is prepared with them;
* a claim that failed leaves nothing behind: no CDI spec and no plugin state names it;
* once every claim is unprepared, no CDI spec, no state naming a claim and nothing the backend
  set up for a claim remain.

Each test draws batches of different shapes, so that a defect in one kind of input is reported
by the test of that kind alone.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .backends import EXAMPLE, NVIDIA
from .conftest import RunningNode
from .strategies import BackendShape, Batch, batches

BACKENDS = [pytest.param(EXAMPLE, id="example"), pytest.param(NVIDIA, id="nvidia-gpu")]

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])


def node_for(request: pytest.FixtureRequest, shape: BackendShape) -> RunningNode:
    node: RunningNode = request.getfixturevalue(
        "example_node" if shape.backend == "example" else "nvidia_node")
    return node


def check_batch(node: RunningNode, batch: Batch) -> None:
    """Prepare and unprepare ``batch``; assert every property of the module docstring."""
    refs = [node.harness.add_claim(case.obj) for case in batch.claims]
    uids = [ref.uid for ref in refs]
    try:
        answers = node.conn.prepare(refs)
        assert sorted(answers) == sorted(uids)
        for case in batch.claims:
            answer = answers[case.uid]
            if case.shape == "valid":
                assert answer.error == "", case
                assert sorted(d.device_name for d in answer.devices) == sorted(case.devices)
            if case.shape == "coerced":
                assert case.field in answer.error, (case.note, answer.error)
            if answer.error:
                assert node.traces(case.uid) == [], (case, answer.error)
    finally:
        unprepared = node.conn.unprepare(refs)
    assert unprepared == dict.fromkeys(uids, "")
    assert node.harness.cdi_specs() == []
    assert {uid: node.traces(uid) for uid in uids} == {uid: [] for uid in uids}
    assert node.held() == []


@pytest.mark.parametrize("shape", BACKENDS)
@PROPERTY
@given(data=st.data())
def test_config_decides_whether_a_claim_is_prepared(request: pytest.FixtureRequest,
                                                     shape: BackendShape,
                                                     data: st.DataObject) -> None:
    """Valid configs and configs with one coerced value, several claims per call."""
    node = node_for(request, shape)
    check_batch(node, data.draw(batches(shape, shapes=("valid", "coerced"))))


@pytest.mark.parametrize("shape", BACKENDS)
@PROPERTY
@given(data=st.data())
def test_arbitrary_parameters_are_answered_claim_by_claim(request: pytest.FixtureRequest,
                                                          shape: BackendShape,
                                                          data: st.DataObject) -> None:
    """Opaque parameters that are any JSON (deep nesting, large integers, unknown keys)."""
    node = node_for(request, shape)
    check_batch(node, data.draw(batches(shape, shapes=("valid", "garbage"))))


@pytest.mark.parametrize("shape", BACKENDS)
@PROPERTY
@given(data=st.data())
def test_malformed_allocations_are_answered_claim_by_claim(request: pytest.FixtureRequest,
                                                           shape: BackendShape,
                                                           data: st.DataObject) -> None:
    """Allocations with fields of the wrong JSON type, missing, or naming absent devices."""
    node = node_for(request, shape)
    check_batch(node, data.draw(batches(shape, shapes=("valid", "malformed"))))
