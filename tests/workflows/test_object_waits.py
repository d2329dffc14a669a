"""The saga workflow's side of waiting Kubernetes actions, with fake activities: events, re-arm, timeout, undo.

The shared watch is out of the picture here: the test raises the event it would raise, and the re-arm event
the binding raises when an operator resumes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from workflow_fakes import Call, Harness, Subject

from steadfast.api.kinds import TASK_SAGA
from steadfast.api.saga import TaskSagaSpec
from steadfast.records import Outcome
from steadfast.workflows import saga
from steadfast.workflows.common import REARM_EVENT

pytestmark = pytest.mark.engine

UNDO = {"apiVersion": "v1", "kind": "ConfigMap", "name": "gate", "namespace": "default", "created": True, "uid": "u1"}


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}


def spec(timeout: str = "5m") -> TaskSagaSpec:
    waiting = {
        "object": configmap("gate"),
        "successWhen": 'object.data.open == "yes"',
        "timeout": timeout,
    }
    return TaskSagaSpec.model_validate(
        {
            "task": {"id": "t-1"},
            "steps": [
                {
                    "name": "first",
                    "action": {"kubernetes": {"object": configmap("a")}},
                },
                {"name": "gate", "action": {"kubernetes": waiting}, "outputs": {"opened": "object.data.open"}},
            ],
        }
    )


def pending(undo: dict[str, Any] | None = UNDO) -> Outcome:
    return Outcome(
        False, 200, 'apply ConfigMap default/gate: waiting for object.data.open == "yes"', pending=True, undo=undo
    )


def calls_to(subject: Subject, name: str, count: int) -> list[Call]:
    deadline = time.monotonic() + 30
    while len(found := subject.service.calls_to(f"/objects/{name}")) < count:
        assert time.monotonic() < deadline, f"fewer than {count} calls for {name}: {subject.service.order()}"
        time.sleep(0.05)
    return found


def start(harness: Harness, the_spec: TaskSagaSpec) -> tuple[Subject, str]:
    subject = harness.subject(TASK_SAGA)
    subject.service.object_answers("gate", pending())
    return subject, harness.start_saga(subject, the_spec)


def test_the_watchs_event_decides_the_wait(harness: Harness) -> None:
    subject, iid = start(harness, spec())
    first = calls_to(subject, "gate", 1)[0]
    assert first.wait_event and not first.rearm
    shown = subject.log.wait_for(lambda s: "waiting for" in (s["steps"][1].get("message") or ""), "waiting shown")
    assert shown["steps"][1]["phase"] == "Running"
    decided = Outcome(True, 200, "apply ConfigMap default/gate", outputs={"opened": "yes"})
    harness.client.raise_workflow_event(iid, first.wait_event, data=decided.to_dict())
    result = harness.finish(iid)
    assert result["status"] == "Succeeded"
    assert subject.log.latest()["steps"][1]["outputs"] == {"opened": "yes"}
    assert len(subject.service.calls_to("/objects/gate")) == 1  # no polling


def test_a_resumed_operator_registers_the_wait_again_without_repeating_the_apply(harness: Harness) -> None:
    subject, iid = start(harness, spec())
    first = calls_to(subject, "gate", 1)[0]
    subject.service.object_answers("gate", Outcome(True, 200, "wait ConfigMap default/gate", outputs={"opened": "yes"}))
    harness.client.raise_workflow_event(iid, REARM_EVENT, data={"reason": "operator resumed"})
    again = calls_to(subject, "gate", 2)[1]
    assert again.rearm and again.key == first.key and again.wait_event == first.wait_event
    assert harness.finish(iid)["status"] == "Succeeded"


def test_a_wait_that_times_out_undoes_its_own_apply_then_the_earlier_steps(harness: Harness) -> None:
    subject = harness.subject(TASK_SAGA)
    undo_a = {**UNDO, "name": "a", "created": False, "uid": None, "restore": {"data": None}}
    subject.service.object_answers("a", Outcome(True, 200, "apply ConfigMap default/a", undo=undo_a))
    subject.service.object_answers("gate", pending())
    iid = harness.start_saga(subject, spec(timeout="1s"))
    result = harness.finish(iid)
    assert result["status"] == "Compensated"
    status = subject.log.latest()
    assert 'object.data.open == "yes" did not hold within 1s' in status["steps"][1]["message"]
    undo_calls = [c for c in subject.service.calls if c.category == "compensation"]
    assert [c.path for c in undo_calls] == ["/objects/gate", "/objects/a"]
    assert undo_calls[0].undo == UNDO  # the record the apply returned, from history
    assert undo_calls[1].undo == undo_a
    assert [c["phase"] for c in status["compensations"]] == ["Succeeded", "Succeeded"]


def test_deleting_a_waiting_saga_stops_the_wait_and_undoes_the_apply(harness: Harness) -> None:
    subject, iid = start(harness, spec())
    calls_to(subject, "gate", 1)
    harness.client.raise_workflow_event(iid, saga.CANCEL_EVENT, data={"reason": "deleted"})
    result = harness.finish(iid)  # well before the 5m timeout
    assert result["status"] == "Compensated"
    assert result["error"].startswith("the TaskSaga was deleted while running")
    undo_calls = [c for c in subject.service.calls if c.category == "compensation"]
    assert [c.undo for c in undo_calls] == [UNDO]  # the first step's fake apply returned no undo record


def test_a_later_wait_still_hears_the_re_arm_event(harness: Harness) -> None:
    """Two waiting steps in one saga: the resume event reaches the one waiting now, not the finished one."""
    subject = harness.subject(TASK_SAGA)
    waiting = {"successWhen": 'object.data.open == "yes"', "timeout": "5m"}
    the_spec = TaskSagaSpec.model_validate(
        {
            "task": {"id": "t-2"},
            "steps": [
                {"name": "one", "action": {"kubernetes": {"object": configmap("one"), **waiting}}},
                {"name": "two", "action": {"kubernetes": {"object": configmap("two"), **waiting}}},
            ],
        }
    )
    subject.service.object_answers("one", pending())
    subject.service.object_answers("two", pending())
    iid = harness.start_saga(subject, the_spec)
    first = calls_to(subject, "one", 1)[0]
    harness.client.raise_workflow_event(iid, first.wait_event, data=Outcome(True, 200, "one").to_dict())
    calls_to(subject, "two", 1)
    harness.client.raise_workflow_event(iid, REARM_EVENT, data={"reason": "operator resumed"})
    again = calls_to(subject, "two", 2)[1]  # answered ok by the fake: the saga ends
    assert again.rearm
    assert harness.finish(iid)["status"] == "Succeeded"


def test_a_re_arm_that_comes_between_two_waits_is_not_lost(harness: Harness) -> None:
    """The operator restarts while the next waiting step is being applied: the re-arm event arrives before that
    step waits (the registration its apply made may have died with the old process), and the wait re-registers
    at once instead of after REARM_EVERY."""
    subject = harness.subject(TASK_SAGA)
    waiting = {"successWhen": 'object.data.open == "yes"', "timeout": "5m"}
    the_spec = TaskSagaSpec.model_validate(
        {
            "task": {"id": "t-3"},
            "steps": [
                {"name": "one", "action": {"kubernetes": {"object": configmap("one"), **waiting}}},
                {"name": "two", "action": {"kubernetes": {"object": configmap("two"), **waiting}}},
            ],
        }
    )
    subject.service.object_answers("one", pending())
    subject.service.object_answers("two", pending())
    entered, release = subject.service.hold("/objects/two")
    iid = harness.start_saga(subject, the_spec)
    first = calls_to(subject, "one", 1)[0]
    harness.client.raise_workflow_event(iid, first.wait_event, data=Outcome(True, 200, "one").to_dict())
    assert entered.wait(10), "step two was not applied"
    harness.client.raise_workflow_event(iid, REARM_EVENT, data={"reason": "operator resumed"})
    time.sleep(0.5)  # the event reaches the instance while step two's apply is still in flight
    release.set()
    again = calls_to(subject, "two", 2)[1]
    assert again.rearm
    assert harness.finish(iid)["status"] == "Succeeded"
