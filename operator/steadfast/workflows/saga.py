"""The TaskSaga workflow: steps in order; on failure, compensations of completed steps in reverse.

A compensation is recorded the moment its step succeeds; a failing compensation is retried, then
recorded as failed, and the others still run. Deleting a running saga (onDelete: Compensate) sends the
`cancel` event: the step in flight finishes, then everything done is undone.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, when_any

from steadfast.api.saga import RetryPolicy, SagaPhase, Step, TaskSagaSpec
from steadfast.approval import rules as approval
from steadfast.conditions import conditions
from steadfast.workflows.common import Reporter, run_action, stamp

NAME = "steadfast.tasksaga"
CANCEL_EVENT = "cancel"
# Compensations without their own retry policy still get a few tries: undoing matters.
COMPENSATION_RETRY = RetryPolicy(max_attempts=3, initial_interval="1s", backoff_coefficient=2, max_interval="10s")

_CONDITION_STATE = {
    SagaPhase.SUCCEEDED: "ready",
    SagaPhase.COMPENSATED: "stalled",
    SagaPhase.COMPENSATION_FAILED: "stalled",
    SagaPhase.FAILED: "stalled",
    SagaPhase.REJECTED: "stalled",
}


class _Saga:
    """The saga's status as the workflow sees it; every method is deterministic."""

    def __init__(self, ctx: DaprWorkflowContext, inp: dict[str, Any]) -> None:
        self.reporter = Reporter(ctx, inp)
        self.spec = TaskSagaSpec.model_validate(inp["spec"])
        self.phase = SagaPhase.RUNNING
        self.current: str | None = None
        self.steps: list[dict[str, Any]] = [
            {"name": s.name, "phase": "Pending", "attempts": 0} for s in self.spec.steps
        ]
        self.compensations: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None
        self.started_at = stamp(self.reporter.now)
        self.finished_at: str | None = None
        self.approval_request: str | None = None
        self.conditions: list[dict[str, Any]] = []

    def status(self, message: str = "") -> dict[str, Any]:
        state = _CONDITION_STATE.get(self.phase, "progressing")
        reason = self.phase.value
        self.conditions = conditions(
            state,
            reason=reason,
            message=message or self._message(),
            generation=self.reporter.generation,
            now=self.reporter.now,
            previous=self.conditions,
        )
        out: dict[str, Any] = {
            "phase": self.phase.value,
            "currentStep": self.current,
            "steps": self.steps,
            "compensations": self.compensations,
            "result": self.result,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "approvalRequest": self.approval_request,
            "observedGeneration": self.reporter.generation,
            "workflowInstanceId": self.reporter.ctx.instance_id,
            "conditions": self.conditions,
        }
        return out

    def _message(self) -> str:
        if self.result and self.result.get("error"):
            return str(self.result["error"])
        if self.current:
            return f"{self.phase.value}: {self.current}"
        return self.phase.value

    def run(self, step: Step, record: dict[str, Any], *, compensation: bool) -> Generator[Any, Any, bool]:
        now = stamp(self.reporter.now)
        record.update(phase="Running", startedAt=now)
        self.current = step.name

        def snapshot(attempt: int) -> dict[str, Any]:
            record["attempts"] = attempt
            return self.status()

        action = step.compensation if compensation and step.compensation else step.action
        retry = step.retry if step.retry else (COMPENSATION_RETRY if compensation else None)
        outcome, attempts = yield from run_action(
            self.reporter,
            action,
            key_parts=(step.name, "compensation" if compensation else "action"),
            retry=retry,
            timeout=step.timeout,
            snapshot=snapshot,
        )
        record.update(
            attempts=attempts,
            finishedAt=stamp(self.reporter.now),
            message=outcome.message,
            phase="Succeeded" if outcome.ok else "Failed",
        )
        what = "Compensation" if compensation else "Step"
        # Events mark phase changes and what went wrong or was undone; a step that simply succeeded is in
        # status, and an Event for it would cost the API server a write per step for no news.
        if outcome.ok and (compensation or attempts > 1):
            self.reporter.event(f"{what}Succeeded", f"{what.lower()} {step.name} succeeded after {attempts} attempt(s)")
        elif not outcome.ok:
            self.reporter.event(
                f"{what}Failed",
                f"{what.lower()} {step.name} failed after {attempts} attempt(s): {outcome.message}",
                warning=True,
            )
        return outcome.ok


def _await_approval(saga: _Saga, cancel: Any) -> Generator[Any, Any, tuple[str | None, bool]]:
    """The approval gate, before the first step: (error, rejected); (None, False) means approved."""
    ctx = saga.reporter.ctx
    decided = ctx.wait_for_external_event(approval.GATE_EVENT)
    if (yield when_any([decided, cancel])) is cancel:
        return "the TaskSaga was deleted while awaiting approval", False
    data: dict[str, Any] = decided.get_result() or {}
    name = saga.approval_request
    if data.get("approved"):
        saga.phase = SagaPhase.RUNNING
        saga.reporter.event("Approved", f"ApprovalRequest {name} approved by {data.get('approver')}")
        yield saga.reporter.report(saga.status())
        return None, False
    return f"ApprovalRequest {name} {data.get('phase', 'Rejected')}: {data.get('reason', '')}", True


def saga_workflow(ctx: DaprWorkflowContext, inp: dict[str, Any]) -> Generator[Any, Any, dict[str, Any]]:
    saga = _Saga(ctx, inp)
    cancel = ctx.wait_for_external_event(CANCEL_EVENT)
    saga.reporter.event("Started", f"saga started with {len(saga.steps)} step(s)")
    gated = saga.spec.needs_approval()
    if gated:
        saga.phase = SagaPhase.AWAITING_APPROVAL
        saga.approval_request = approval.gate_request_name(saga.reporter.ref["name"])
        saga.reporter.event("AwaitingApproval", f"waiting for ApprovalRequest {saga.approval_request}")
    yield saga.reporter.report(saga.status())

    done: list[Step] = []
    error: str | None = None
    rejected = False
    if gated:
        error, rejected = yield from _await_approval(saga, cancel)
    for step, record in zip(saga.spec.steps, saga.steps, strict=True):
        if error is not None:
            break
        if cancel.is_complete:
            error = "the TaskSaga was deleted while running"
            break
        if (yield from saga.run(step, record, compensation=False)):
            done.append(step)
        else:
            error = f"step {step.name} failed: {record.get('message', '')}"
            break
    if error is None and cancel.is_complete and len(done) < len(saga.steps):
        error = "the TaskSaga was deleted while running"

    if error is None:
        saga.phase = SagaPhase.SUCCEEDED
    else:
        for record in saga.steps:
            if record["phase"] == "Pending":
                record["phase"] = "Skipped"
        to_undo = [s for s in reversed(done) if s.compensation is not None]
        saga.phase = SagaPhase.COMPENSATING if to_undo else SagaPhase.REJECTED if rejected else SagaPhase.FAILED
        if to_undo:
            saga.reporter.event("Compensating", f"{error}; compensating {len(to_undo)} step(s)", warning=True)
        failed = 0
        for step in to_undo:
            record = {"step": step.name, "phase": "Running", "attempts": 0}
            saga.compensations.append(record)
            if not (yield from saga.run(step, record, compensation=True)):
                failed += 1
        if to_undo:
            saga.phase = SagaPhase.COMPENSATION_FAILED if failed else SagaPhase.COMPENSATED
        if failed:
            error += f"; {failed} compensation(s) failed"

    saga.current = None
    saga.finished_at = stamp(saga.reporter.now)
    saga.result = {"status": saga.phase.value, "taskId": saga.spec.task.id, "error": error}
    saga.reporter.event(
        saga.phase.value, error or f"all {len(saga.steps)} step(s) succeeded", warning=error is not None
    )
    yield saga.reporter.report(saga.status(), wait=True)
    return saga.result
