"""Retention in the workflows: the final status says when the finished resource goes (`status.retainedUntil`),
from the retention resolved at start, for ends that need nobody only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_approval_workflow import decide, request_spec
from test_saga_workflow import finish, spec, step
from workflow_fakes import Harness, Subject

from steadfast.api.approval import ApprovalRequestSpec
from steadfast.api.kinds import APPROVAL_REQUEST, TASK_SAGA
from steadfast.api.retention import Retention
from steadfast.api.saga import TaskSagaSpec
from steadfast.approval import workflow as approval_workflow
from steadfast.approval.rules import ApprovalInput
from steadfast.binding import instance_id
from steadfast.workflows import saga

pytestmark = pytest.mark.engine


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def start_saga(harness: Harness, the_spec: TaskSagaSpec, retention: Retention | None, fail: str = "") -> Subject:
    subject = harness.subject(TASK_SAGA)
    if fail:
        subject.service.fail(fail)
    iid = instance_id(TASK_SAGA, subject.ref.namespace, subject.ref.name, subject.ref.uid)
    given = saga.SagaInput(ref=subject.ref, generation=1, spec=the_spec, gate_resolved=True, retention=retention)
    harness.client.schedule_new_workflow(saga.NAME, input=given.wire(), instance_id=iid)
    harness.started.append(iid)
    finish(harness, subject, iid)
    return subject


def test_a_succeeded_saga_says_when_it_goes(harness: Harness) -> None:
    subject = start_saga(harness, spec(step("reserve")), Retention(succeeded="2s", failed="1h"))
    status = subject.log.latest()
    assert status["phase"] == "Succeeded"
    assert moment(status["retainedUntil"]) == moment(status["finishedAt"]) + timedelta(seconds=2)
    # Only the final report carries it: nothing unfinished is ever due.
    assert all(s.get("retainedUntil") is None or s["phase"] == "Succeeded" for s in subject.log.snapshots())


def test_a_compensated_saga_takes_the_failed_retention(harness: Harness) -> None:
    subject = start_saga(harness, spec(step("reserve"), step("charge")), Retention(failed="168h"), fail="/charge")
    status = subject.log.latest()
    assert status["phase"] == "Compensated"
    assert moment(status["retainedUntil"]) == moment(status["finishedAt"]) + timedelta(days=7)


@pytest.mark.parametrize("retention", [Retention(succeeded="2s"), None])
def test_a_failed_saga_without_a_failed_retention_is_kept(harness: Harness, retention: Retention | None) -> None:
    subject = start_saga(harness, spec(step("reserve"), step("charge")), retention, fail="/charge")
    status = subject.log.latest()
    assert status["phase"] == "Compensated" and status.get("retainedUntil") is None


def test_a_compensation_failed_saga_is_never_due(harness: Harness) -> None:
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/charge")
    subject.service.fail("/reserve/undo")
    iid = instance_id(TASK_SAGA, subject.ref.namespace, subject.ref.name, subject.ref.uid)
    given = saga.SagaInput(
        ref=subject.ref,
        generation=1,
        spec=spec(step("reserve"), step("charge")),
        gate_resolved=True,
        retention=Retention(succeeded="1s", failed="1s"),
    )
    harness.client.schedule_new_workflow(saga.NAME, input=given.wire(), instance_id=iid)
    harness.started.append(iid)
    status = subject.log.wait_for(lambda s: s["phase"] == "CompensationFailed", "CompensationFailed")
    assert status.get("retainedUntil") is None  # it waits for a person's repair decision
    harness.client.terminate_workflow(iid)


def open_with(harness: Harness, the_spec: ApprovalRequestSpec, retention: Retention) -> tuple[Subject, str]:
    subject = harness.subject(APPROVAL_REQUEST)
    iid = instance_id(APPROVAL_REQUEST, subject.ref.namespace, subject.ref.name, subject.ref.uid)
    given = ApprovalInput(
        ref=subject.ref,
        generation=1,
        spec=the_spec,
        requested_by="dave",
        created_at=datetime.now(UTC),
        retention=retention,
    )
    harness.client.schedule_new_workflow(approval_workflow.NAME, input=given.wire(), instance_id=iid)
    harness.started.append(iid)
    subject.log.wait_for(lambda s: s["phase"] == "Pending", "opened")
    return subject, iid


KEEP = Retention(succeeded="1h", failed="2h")


def test_a_completed_request_goes_after_its_action_finished(harness: Harness) -> None:
    subject, iid = open_with(harness, request_spec(), KEEP)
    decide(harness, iid, "alice")
    harness.finish(iid)
    status = subject.log.latest()
    assert status["phase"] == "Completed"
    assert moment(status["retainedUntil"]) == moment(status["actionResult"]["finishedAt"]) + timedelta(hours=1)
    earlier: list[dict[str, Any]] = [s for s in subject.log.snapshots() if s["phase"] != "Completed"]
    assert earlier and all(s.get("retainedUntil") is None for s in earlier)  # Approved with an action to run


@pytest.mark.parametrize(("approved", "hours"), [(True, 1), (False, 2)])
def test_a_decided_request_without_action_goes_after_its_decision(harness: Harness, approved: bool, hours: int) -> None:
    subject, iid = open_with(harness, request_spec(action=False), KEEP)
    decide(harness, iid, "alice", approved=approved, reason=None if approved else "no")
    harness.finish(iid)
    status = subject.log.latest()
    assert status["phase"] == ("Approved" if approved else "Rejected")
    assert moment(status["retainedUntil"]) == moment(status["decidedAt"]) + timedelta(hours=hours)
