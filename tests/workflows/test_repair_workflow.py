"""Pause on failure and a person's decisions, on the real saga workflow with fake activities (no API server).

Decisions arrive as the `repair` events the operator raises once admission recorded and sealed the decider; the
tests raise them directly, so what each decision does (and what is refused) is checked in milliseconds.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_saga_workflow import FAST_RETRY, finish, phases, repair, spec, step
from workflow_fakes import SERVICE, Harness, Subject

from steadfast.api.kinds import TASK_SAGA
from steadfast.api.repair import FailureAction, OnFailure
from steadfast.api.saga import TaskSagaSpec
from steadfast.binding import instance_id
from steadfast.records import Actor
from steadfast.workflows import saga

pytestmark = pytest.mark.engine


def start_pausing(
    harness: Harness,
    the_spec: TaskSagaSpec,
    *,
    failing: str,
    times: int | None = None,
    timeout: str = "1h",
    creator: str = "ada",
    subject: Subject | None = None,
) -> tuple[Subject, str]:
    """A saga whose failure policy (resolved at start) is Pause, as `Bindings.start` schedules it; calls to the
    path `failing` fail (`times` times, or until the test scripts otherwise). `subject`: one the test prepared."""
    subject = subject or harness.subject(TASK_SAGA)
    subject.service.fail(failing, times=times)
    iid = instance_id(TASK_SAGA, subject.ref.namespace, subject.ref.name, subject.ref.uid)
    given = saga.SagaInput(
        ref=subject.ref,
        generation=1,
        spec=the_spec,
        gate_resolved=True,
        on_failure=OnFailure(action=FailureAction.PAUSE, pause_timeout=timeout),
        actor=Actor(user=creator, groups=()),
    )
    harness.client.schedule_new_workflow(saga.NAME, input=given.wire(), instance_id=iid)
    harness.started.append(iid)
    return subject, iid


def paused(subject: Subject) -> dict[str, Any]:
    return subject.log.wait_for(lambda s: s["phase"] == "Paused", "Paused")


def test_a_paused_step_retried_after_the_cause_is_fixed_keeps_its_key_and_earlier_outputs(harness: Harness) -> None:
    subject, iid = start_pausing(harness, spec(step("reserve"), step("charge"), step("ship")), failing="/charge")
    status = paused(subject)
    assert status["pause"]["step"] == "charge" and status["currentStep"] == "charge"
    assert phases(status) == ["Succeeded", "Failed", "Pending"]
    assert "paused for a decision" in next(c["message"] for c in status["conditions"] if c["type"] == "Stalled")
    assert subject.service.order() == ["reserve/action", "charge/action"]  # nothing compensated meanwhile

    subject.service.script("/charge", then=True)  # the quota was raised
    repair(harness, iid, "Retry", generation=2)
    result, status = finish(harness, subject, iid)
    assert result["status"] == "Succeeded" and phases(status) == ["Succeeded"] * 3
    assert status["steps"][1]["attempts"] == 2 and status["pause"] is None
    assert len({c.key for c in subject.service.calls_to("/charge")}) == 1  # the same idempotency key
    assert subject.service.order() == ["reserve/action", "charge/action", "charge/action", "ship/action"]
    assert [r for r in subject.log.reasons() if r in ("Paused", "RepairRetry")] == ["Paused", "RepairRetry"]


def test_skip_runs_the_later_steps_and_records_why(harness: Harness) -> None:
    subject, iid = start_pausing(
        harness, spec(step("reserve"), step("notify", undo=False), step("ship")), failing="/notify"
    )
    paused(subject)
    repair(harness, iid, "Skip", generation=2, reason="the mail relay is down; customers get a letter")
    result, status = finish(harness, subject, iid)
    assert result["status"] == "Succeeded"
    assert phases(status) == ["Succeeded", "Skipped", "Succeeded"]
    assert "skipped by oscar: the mail relay is down" in status["steps"][1]["message"]
    assert status["decisions"][0]["result"] == "skipped step notify"


def test_compensate_now_and_a_pause_timeout_both_undo_what_was_done(harness: Harness) -> None:
    subject, iid = start_pausing(harness, spec(step("reserve"), step("charge")), failing="/charge")
    paused(subject)
    repair(harness, iid, "Compensate", generation=2, reason="the customer cancelled")
    result, _ = finish(harness, subject, iid)
    assert result["status"] == "Compensated" and "on oscar's decision" in result["error"]
    assert subject.service.order()[-1] == "reserve/compensation"

    late, late_iid = start_pausing(harness, spec(step("reserve"), step("charge")), timeout="1s", failing="/charge")
    result, _ = finish(harness, late, late_iid)
    assert result["status"] == "Compensated" and "no decision came within 1s" in result["error"]
    assert "PauseTimedOut" in late.log.reasons()


def test_decisions_that_do_not_fit_are_refused_and_the_saga_keeps_waiting(harness: Harness) -> None:
    """Each refusal is recorded with why; a resend of a handled generation is dropped; the next fit is taken."""
    outputs = step("charge", retry={"maxAttempts": 1, **FAST_RETRY})
    outputs["outputs"] = {"paymentId": "response.status"}
    reader = step("ship")
    reader["action"]["http"]["body"] = {"payment": "$(outputs.paymentId)"}
    subject, iid = start_pausing(harness, spec(step("reserve"), outputs, reader), failing="/charge", times=1)
    paused(subject)
    repair(harness, iid, "Skip", generation=2, reason="later")  # ship reads its outputs
    repair(harness, iid, "Resolve", generation=3, step="charge", reason="by hand")  # not a paused saga's decision
    repair(harness, iid, "Retry", generation=4, user=None)  # no sealed decider: admission did not run
    repair(harness, iid, "Retry", generation=3)  # a resend of a generation already handled: dropped
    status = subject.log.wait_for(lambda s: len(s["decisions"]) == 3, "three refusals")
    refused = [d["result"] for d in status["decisions"]]
    assert "later steps use its outputs (spec.steps[2].action reads outputs.paymentId)" in refused[0]
    assert "Resolve does not apply (possible: Retry, Skip, Compensate)" in refused[1]
    assert "admission webhook did not run" in refused[2]
    assert status["phase"] == "Paused" and status["observedGeneration"] == 4
    repair(harness, iid, "Retry", generation=5)
    result, status = finish(harness, subject, iid)
    assert result["status"] == "Succeeded" and len(status["decisions"]) == 4


def test_only_the_creator_may_skip_before_kubernetes_steps(harness: Harness) -> None:
    """Skipping a failed check would let later Kubernetes steps act, as the creator, on what it guarded."""
    kube = {
        "name": "scale",
        "action": {
            "kubernetes": {
                "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}
            }
        },
    }
    check = {"name": "check", "action": {"http": {"method": "GET", "url": f"{SERVICE}/check"}}}
    subject, iid = start_pausing(harness, spec(check, kube), creator="ada", failing="/check")
    paused(subject)
    repair(harness, iid, "Skip", generation=2, reason="trust me")  # oscar is not the creator
    status = subject.log.wait_for(lambda s: len(s["decisions"]) == 1, "a refusal")
    assert "only its creator (ada) may skip step check" in status["decisions"][0]["result"]
    repair(harness, iid, "Compensate", generation=3)
    assert finish(harness, subject, iid)[0]["status"] == "Failed"  # nothing was done, nothing to undo
