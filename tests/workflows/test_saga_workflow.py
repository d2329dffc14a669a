"""The TaskSaga workflow's rules, run on the local engine with fake activities (no API server, no HTTP).

Each test scripts what the service answers, runs the real `saga_workflow` and checks what a user would see:
the final status the workflow reports, its Events, and the calls the service received, in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import dapr.ext.workflow as wf
import pytest
from workflow_fakes import SERVICE, Harness, Subject

from steadfast.api.kinds import TASK_SAGA
from steadfast.api.repair import RepairAction
from steadfast.api.saga import RENDERED, TaskSagaSpec, TemplateKind, TemplateRecord
from steadfast.approval import rules as approval
from steadfast.binding import instance_id
from steadfast.repair.rules import REPAIR_EVENT, RepairEvent
from steadfast.workflows import saga

pytestmark = pytest.mark.engine

FAST_RETRY = {"initialInterval": "10ms", "backoffCoefficient": 1, "maxInterval": "10ms"}


def step(
    name: str, *, undo: bool = True, retry: dict[str, Any] | None = None, timeout: str | None = None
) -> dict[str, Any]:
    """A step that POSTs to /<name>; its compensation (if any) DELETEs /<name>/undo."""
    out: dict[str, Any] = {
        "name": name,
        "action": {"http": {"method": "POST", "url": f"{SERVICE}/{name}", "body": {"step": name}}},
    }
    if undo:
        out["compensation"] = {"http": {"method": "DELETE", "url": f"{SERVICE}/{name}/undo"}}
    if retry is not None:
        out["retry"] = retry
    if timeout is not None:
        out["timeout"] = timeout
    return out


def spec(*steps: dict[str, Any], **extra: Any) -> TaskSagaSpec:
    return TaskSagaSpec.model_validate(
        {"task": {"id": "task-1", "title": "Onboard Ada"}, "steps": list(steps), **extra}
    )


def run(harness: Harness, the_spec: TaskSagaSpec) -> tuple[Subject, dict[str, Any], dict[str, Any]]:
    """Run a saga to its end: (subject, the workflow's result, the last status it reported)."""
    subject = harness.subject(TASK_SAGA)
    return subject, *finish(harness, subject, harness.start_saga(subject, the_spec))


def finish(harness: Harness, subject: Subject, iid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    result = harness.finish(iid)
    status = subject.log.latest()
    assert status["result"] == result, "the last reported status must carry the workflow's result"
    assert status["workflowInstanceId"] == iid
    return result, status


def wait_until(test: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.02)


def phases(status: dict[str, Any]) -> list[str]:
    return [s["phase"] for s in status["steps"]]


def condition(status: dict[str, Any], kind: str) -> str:
    return str(next(c["status"] for c in status["conditions"] if c["type"] == kind))


def test_all_steps_succeed_in_order(harness: Harness) -> None:
    subject, result, status = run(harness, spec(step("reserve"), step("charge"), step("notify", undo=False)))

    assert subject.service.order() == ["reserve/action", "charge/action", "notify/action"]
    assert [c.body for c in subject.service.calls] == [{"step": "reserve"}, {"step": "charge"}, {"step": "notify"}]
    assert result == {"status": "Succeeded", "taskId": "task-1", "error": None}
    assert status["phase"] == "Succeeded"
    assert phases(status) == ["Succeeded"] * 3
    assert [s["attempts"] for s in status["steps"]] == [1, 1, 1]
    assert status["compensations"] == []
    assert status["currentStep"] is None and status["finishedAt"] is not None
    assert condition(status, "Ready") == "True" and condition(status, "Stalled") == "False"
    assert subject.log.reasons() == ["Started", "Succeeded"]
    # While a step runs, status shows it running, the earlier ones done and the later ones pending.
    during = subject.log.wait_for(lambda s: s["currentStep"] == "charge", "charge running")
    assert during["phase"] == "Running"
    assert phases(during) == ["Succeeded", "Running", "Pending"]


def test_failed_step_compensates_completed_steps_in_reverse(harness: Harness) -> None:
    """Completed steps are undone newest first; the failed step and the steps after it are not."""
    plan = spec(step("reserve"), step("log", undo=False), step("charge"), step("ship"), step("notify"))
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/ship")
    result, status = finish(harness, subject, harness.start_saga(subject, plan))

    assert subject.service.order() == [
        "reserve/action",
        "log/action",
        "charge/action",
        "ship/action",
        "charge/compensation",
        "reserve/compensation",
    ]
    assert [c.method for c in subject.service.calls[-2:]] == ["DELETE", "DELETE"]
    assert status["phase"] == "Compensated"
    assert phases(status) == ["Succeeded", "Succeeded", "Succeeded", "Failed", "Skipped"]
    assert status["steps"][3]["attempts"] == 1
    assert "HTTP 503" in status["steps"][3]["message"]
    assert [(c["step"], c["phase"], c["attempts"]) for c in status["compensations"]] == [
        ("charge", "Succeeded", 1),
        ("reserve", "Succeeded", 1),
    ]
    assert result["status"] == "Compensated"
    assert result["error"].startswith("step ship failed: POST http://svc.test/ship: HTTP 503")
    assert condition(status, "Ready") == "False" and condition(status, "Stalled") == "True"
    reasons = subject.log.reasons()
    assert reasons[0] == "Started" and reasons[-1] == "Compensated"
    assert reasons.index("StepFailed") < reasons.index("Compensating")
    assert reasons.count("CompensationSucceeded") == 2


def test_failure_with_nothing_to_undo_ends_failed(harness: Harness) -> None:
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/reserve")
    result, status = finish(harness, subject, harness.start_saga(subject, spec(step("reserve"), step("charge"))))

    assert subject.service.order() == ["reserve/action"]  # a failed step's own compensation never runs
    assert status["phase"] == "Failed"
    assert phases(status) == ["Failed", "Skipped"]
    assert status["compensations"] == []
    assert result["status"] == "Failed"
    assert "Compensating" not in subject.log.reasons()


def test_failing_compensation_is_recorded_and_the_rest_still_run(harness: Harness) -> None:
    plan = spec(step("reserve"), step("charge", retry={"maxAttempts": 2, **FAST_RETRY}), step("ship"))
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/ship")
    subject.service.fail("/charge/undo")  # every time (until the test repairs it below)
    iid = harness.start_saga(subject, plan)
    status = subject.log.wait_for(lambda s: s["phase"] == "CompensationFailed", "CompensationFailed")
    result = status["result"]

    assert subject.service.order() == [
        "reserve/action",
        "charge/action",
        "ship/action",
        "charge/compensation",
        "charge/compensation",  # the step's retry policy covers its compensation
        "reserve/compensation",
    ]
    assert status["phase"] == "CompensationFailed"
    charge, reserve = status["compensations"]
    assert (charge["step"], charge["phase"], charge["attempts"]) == ("charge", "Failed", 2)
    assert "HTTP 503" in charge["message"]
    assert (reserve["step"], reserve["phase"], reserve["attempts"]) == ("reserve", "Succeeded", 1)
    assert result["status"] == "CompensationFailed"
    assert result["error"].endswith("; 1 compensation(s) failed")
    assert subject.log.reasons()[-1] == "CompensationFailed"
    assert "CompensationFailed" in subject.log.reasons()[:-1]  # the Event for the compensation itself
    # The saga waits for a person: the refund service is back, a Retry runs only the failed compensation, with
    # its original idempotency key, and the saga ends Compensated with every attempt recorded.
    subject.service.script("/charge/undo", then=True)
    repair(harness, iid, "Retry", generation=2)
    result, status = finish(harness, subject, iid)
    assert subject.service.order()[-1] == "charge/compensation"
    assert len({c.key for c in subject.service.calls_to("/charge/undo")}) == 1
    assert status["phase"] == "Compensated" and result["error"].startswith("step ship failed:")
    assert "compensation(s) failed" not in result["error"]
    charge, reserve = status["compensations"]
    assert (charge["phase"], charge["attempts"], reserve["attempts"]) == ("Succeeded", 3, 1)
    assert [(d["action"], d["user"], d["result"]) for d in status["decisions"]] == [
        ("Retry", "oscar", "retrying the compensation of charge")
    ]
    assert status["observedGeneration"] == 2


def repair(
    harness: Harness, iid: str, action: str, *, generation: int, user: str | None = "oscar", **more: Any
) -> None:
    """A repair decision as the operator raises it once admission recorded the decider."""
    event = RepairEvent(action=RepairAction(action), user=user, generation=generation, **more)
    harness.client.raise_workflow_event(iid, REPAIR_EVENT, data=event.wire())


def test_compensation_without_retry_policy_still_gets_retried(harness: Harness) -> None:
    """Undoing matters: a compensation is retried even when its step has no retry policy (waits 1s once)."""
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/ship")
    subject.service.fail("/reserve/undo", times=1)
    result, status = finish(harness, subject, harness.start_saga(subject, spec(step("reserve"), step("ship"))))

    assert subject.service.order() == ["reserve/action", "ship/action", "reserve/compensation", "reserve/compensation"]
    assert status["phase"] == "Compensated"
    assert [(c["step"], c["phase"], c["attempts"]) for c in status["compensations"]] == [("reserve", "Succeeded", 2)]
    assert result["status"] == "Compensated"


def test_transient_failure_is_retried_to_success(harness: Harness) -> None:
    plan = spec(step("reserve"), step("charge", retry={"maxAttempts": 3, **FAST_RETRY}), step("notify"))
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/charge", times=2)
    result, status = finish(harness, subject, harness.start_saga(subject, plan))

    assert subject.service.order() == ["reserve/action"] + ["charge/action"] * 3 + ["notify/action"]
    assert [c.ok for c in subject.service.calls_to("/charge")] == [False, False, True]
    assert status["phase"] == "Succeeded"
    assert [s["attempts"] for s in status["steps"]] == [1, 3, 1]
    assert status["compensations"] == []
    assert result["error"] is None
    assert subject.log.reasons() == ["Started", "StepSucceeded", "Succeeded"]  # the retry is news; plain steps not
    # Each attempt was visible in status as it started.
    seen = [
        s["steps"][1]["attempts"]
        for s in subject.log.snapshots()
        if s["currentStep"] == "charge" and s["steps"][1]["phase"] == "Running"
    ]
    assert seen == [1, 2, 3]


def test_a_step_that_keeps_failing_is_tried_max_attempts_times(harness: Harness) -> None:
    plan = spec(step("reserve"), step("charge", retry={"maxAttempts": 4, **FAST_RETRY}))
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/charge")
    _, status = finish(harness, subject, harness.start_saga(subject, plan))

    assert len(subject.service.calls_to("/charge")) == 4
    assert status["steps"][1]["phase"] == "Failed" and status["steps"][1]["attempts"] == 4
    assert status["phase"] == "Compensated"
    assert subject.service.order()[-1] == "reserve/compensation"


def test_idempotency_key_is_the_same_on_every_attempt(harness: Harness) -> None:
    plan = spec(step("reserve"), step("charge", retry={"maxAttempts": 3, **FAST_RETRY}), step("ship"))
    first = harness.subject(TASK_SAGA)
    first.service.fail("/charge", times=2)
    first.service.fail("/charge/undo", times=1)
    first.service.fail("/ship")
    finish(harness, first, harness.start_saga(first, plan))

    charge = first.service.calls_to("/charge")
    assert len(charge) == 3 and len({c.key for c in charge}) == 1
    undo = first.service.calls_to("/charge/undo")
    assert len(undo) == 2 and len({c.key for c in undo}) == 1
    # Different operations carry different keys, so a receiver never mistakes one for a retry of another.
    by_what = {c.what: c.key for c in first.service.calls}
    assert len(set(by_what.values())) == len(by_what) == 5

    # Another resource with the same spec is a different saga: none of its keys collide with the first's.
    second = harness.subject(TASK_SAGA)
    second.service.fail("/ship")
    finish(harness, second, harness.start_saga(second, plan))
    assert not {c.key for c in second.service.calls} & {c.key for c in first.service.calls}


def test_step_time_limit_stops_retries_early(harness: Harness) -> None:
    """With a 1s limit, a retry whose wait would end past it is not attempted; each attempt gets what is left."""
    retry = {"maxAttempts": 10, "initialInterval": "100ms", "backoffCoefficient": 10, "maxInterval": "10s"}
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/charge")
    _, status = finish(harness, subject, harness.start_saga(subject, spec(step("charge", retry=retry, timeout="1s"))))

    calls = subject.service.calls_to("/charge")
    assert len(calls) == 2  # 100ms wait fits in the limit, the following 1s wait does not
    assert status["phase"] == "Failed"
    assert status["steps"][0]["attempts"] == 2
    assert status["steps"][0]["message"].endswith("(time limit 1s reached)")
    first, second = (c.timeout for c in calls)
    assert first is not None and second is not None
    assert 0 < second < first <= 1.0


def test_crashing_activity_is_a_step_failure(harness: Harness) -> None:
    """An action that cannot even run fails its step; the saga still compensates and ends."""
    subject = harness.subject(TASK_SAGA)
    subject.service.script("/charge", then="crash")
    _, status = finish(harness, subject, harness.start_saga(subject, spec(step("reserve"), step("charge"))))

    assert status["phase"] == "Compensated"
    assert status["steps"][1]["message"].startswith("the action could not run")
    assert subject.service.order() == ["reserve/action", "charge/action", "reserve/compensation"]


def test_cancel_lets_the_running_step_finish_then_undoes_everything_done(harness: Harness) -> None:
    """Deleting a running saga (onDelete: Compensate) sends `cancel`: nothing new starts, completed work is undone."""
    subject = harness.subject(TASK_SAGA)
    entered, release = subject.service.hold("/charge")
    iid = harness.start_saga(subject, spec(step("reserve"), step("charge"), step("ship")))
    assert entered.wait(10), "charge never started"
    # The engine has the event once this returns, before charge answers: the saga sees it as charge ends.
    harness.client.raise_workflow_event(iid, saga.CANCEL_EVENT, data={"reason": "deleted"})
    release.set()
    result, status = finish(harness, subject, iid)

    assert subject.service.order() == ["reserve/action", "charge/action", "charge/compensation", "reserve/compensation"]
    assert phases(status) == ["Succeeded", "Succeeded", "Skipped"]
    assert status["phase"] == "Compensated"
    assert result["error"] == "the TaskSaga was deleted while running"


def test_cancel_stops_a_retrying_step_no_further_attempt_then_undoes_everything_done(harness: Harness) -> None:
    """A step failing with hours of retries left: deleting the saga starts no further attempt and compensates now,
    not after the retries (the backoff races the cancel event)."""
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/charge")
    hourly = {"maxAttempts": 5, "initialInterval": "1h", "backoffCoefficient": 1, "maxInterval": "1h"}
    iid = harness.start_saga(subject, spec(step("reserve"), step("charge", retry=hourly), step("ship")))
    subject.log.wait_for(lambda s: s["steps"][1].get("attempts") == 1, "charge's first attempt")
    harness.client.raise_workflow_event(iid, saga.CANCEL_EVENT, data={"reason": "deleted"})
    result, status = finish(harness, subject, iid)

    assert subject.service.order() == ["reserve/action", "charge/action", "reserve/compensation"]
    assert phases(status) == ["Succeeded", "Failed", "Skipped"]
    assert status["steps"][1]["attempts"] == 1
    assert status["steps"][1]["message"].endswith("(deleted: no further attempt)")
    assert status["phase"] == "Compensated"
    assert result["error"] == "the TaskSaga was deleted while running"


def test_an_instance_of_the_previous_release_replays_its_retries_unchanged(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Versioning: an instance that reached its retry under the previous release (which had no such check) keeps
    its old behaviour after the upgrade: the cancel waits for the backoff, and the replay raises no
    non-determinism error (the instance stays Running, not Failed)."""
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/charge")
    hourly = {"maxAttempts": 2, "initialInterval": "1h", "backoffCoefficient": 1, "maxInterval": "1h"}
    with monkeypatch.context() as old_release:  # the previous release never asked: the patch is not in its history
        old_release.setattr(wf.DaprWorkflowContext, "is_patched", lambda self, name: False)
        iid = harness.start_saga(subject, spec(step("reserve"), step("charge", retry=hourly)))
        subject.log.wait_for(lambda s: s["steps"][1].get("attempts") == 1, "charge's first attempt")
        wait_until(lambda: len(subject.service.calls_to("/charge")) == 1, "charge called")
        time.sleep(0.5)  # the failed attempt's result is recorded and the backoff timer created
    harness.client.raise_workflow_event(iid, saga.CANCEL_EVENT, data={"reason": "deleted"})
    time.sleep(1.0)
    state = harness.client.get_workflow_state(iid, fetch_payloads=False)
    assert state is not None and state.runtime_status == wf.WorkflowStatus.RUNNING
    assert subject.service.order() == ["reserve/action", "charge/action"]  # still in its hour of backoff


def test_cancel_during_an_attempt_lets_it_finish_and_undoes_it_if_it_succeeded(harness: Harness) -> None:
    """The attempt in flight when the saga is deleted finishes; it succeeded, so its step is undone too."""
    subject = harness.subject(TASK_SAGA)
    subject.service.script("/charge", False, then=True)
    entered, release = subject.service.hold("/charge")
    fast = {"maxAttempts": 3, **FAST_RETRY}
    iid = harness.start_saga(subject, spec(step("reserve"), step("charge", retry=fast), step("ship")))
    assert entered.wait(10), "charge never started"
    harness.client.raise_workflow_event(iid, saga.CANCEL_EVENT, data={"reason": "deleted"})
    release.set()  # the first attempt fails after the cancel: no second one
    result, status = finish(harness, subject, iid)

    assert subject.service.order() == ["reserve/action", "charge/action", "reserve/compensation"]
    assert status["steps"][1]["attempts"] == 1
    assert result["error"] == "the TaskSaga was deleted while running"


def gated(**task: Any) -> TaskSagaSpec:
    return TaskSagaSpec.model_validate(
        {
            "task": {"id": "task-1", **task},
            "steps": [step("reserve"), step("charge")],
            "approval": {"priorities": ["high"], "approvers": {"users": ["alice"]}},
        }
    )


def test_approval_gate_holds_steps_until_approved(harness: Harness) -> None:
    subject = harness.subject(TASK_SAGA)
    iid = harness.start_saga(subject, gated(priority="high"))
    waiting = subject.log.wait_for(lambda s: s["phase"] == "AwaitingApproval", "AwaitingApproval")
    assert waiting["approvalRequest"] == f"{subject.ref.name}-approval"
    assert subject.service.calls == []
    harness.client.raise_workflow_event(
        iid, approval.GATE_EVENT, data={"approved": True, "approver": "alice", "phase": "Approved"}
    )
    result, status = finish(harness, subject, iid)

    assert subject.service.order() == ["reserve/action", "charge/action"]
    assert status["phase"] == "Succeeded" and result["error"] is None
    assert subject.log.reasons() == ["Started", "AwaitingApproval", "Approved", "Succeeded"]


def test_rejected_approval_runs_nothing(harness: Harness) -> None:
    subject = harness.subject(TASK_SAGA)
    iid = harness.start_saga(subject, gated(priority="high"))
    subject.log.wait_for(lambda s: s["phase"] == "AwaitingApproval", "AwaitingApproval")
    harness.client.raise_workflow_event(
        iid, approval.GATE_EVENT, data={"approved": False, "phase": "Rejected", "reason": "not this week"}
    )
    result, status = finish(harness, subject, iid)

    assert subject.service.calls == []
    assert status["phase"] == "Rejected"
    assert phases(status) == ["Skipped", "Skipped"]
    assert status["compensations"] == []
    assert result["error"] == f"ApprovalRequest {subject.ref.name}-approval Rejected: not this week"


def test_approval_gate_ignores_priorities_it_does_not_list(harness: Harness) -> None:
    subject, _, status = run(harness, gated(priority="low"))

    assert subject.service.order() == ["reserve/action", "charge/action"]
    assert status["phase"] == "Succeeded" and status["approvalRequest"] is None
    assert "AwaitingApproval" not in [s["phase"] for s in subject.log.snapshots()]


def test_a_templated_saga_runs_its_pinned_definition_with_typed_parameters(harness: Harness) -> None:
    """The input carries the rendered template (steps and values) and its record: actions read `params`, status
    shows the template, and nothing else of the template is read again."""
    rendered = TaskSagaSpec.model_validate(
        {
            "task": {"id": "task-1"},
            "template": {"kind": "ClusterSagaTemplate", "name": "onboard"},
            "parameters": {"region": "eu", "seats": 2, "vip": False},
            "steps": [{"name": "record", "action": {"http": {"method": "POST", "url": f"{SERVICE}/$(params.region)"}}}],
        },
        context={RENDERED: True},
    )
    subject = harness.subject(TASK_SAGA)
    record = TemplateRecord(kind=TemplateKind.CLUSTER_SAGA_TEMPLATE, name="onboard", uid="t-1", generation=4)
    iid = instance_id(TASK_SAGA, subject.ref.namespace, subject.ref.name, subject.ref.uid)
    given = saga.SagaInput(ref=subject.ref, generation=1, spec=rendered, template=record)
    harness.client.schedule_new_workflow(saga.NAME, input=given.wire(), instance_id=iid)
    result, status = finish(harness, subject, iid)
    assert result["status"] == "Succeeded"
    (call,) = subject.service.calls
    assert call.variables is not None and call.variables["params"] == {"region": "eu", "seats": 2, "vip": False}
    assert status["template"] == {"kind": "ClusterSagaTemplate", "name": "onboard", "uid": "t-1", "generation": 4}


def test_an_inline_saga_reads_no_parameters(harness: Harness) -> None:
    subject, result, status = run(harness, spec(step("one")))
    assert result["status"] == "Succeeded" and status.get("template") is None
    (call,) = subject.service.calls
    assert call.variables is not None and call.variables["params"] == {}
