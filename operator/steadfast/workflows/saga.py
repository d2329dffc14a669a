"""The TaskSaga workflow: steps in order; on failure, compensations of completed steps in reverse.

A compensation is recorded the moment its step succeeds; a failing compensation is retried, then
recorded as failed, and the others still run. Deleting a running saga (onDelete: Compensate) sends the
`cancel` event: the attempt in flight finishes, no further attempt of its step starts (the retry backoff
races the event), then everything done is undone.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, when_any

from steadfast.api.saga import (
    CompensationPhase,
    CompensationStatus,
    RetryPolicy,
    SagaPhase,
    SagaResult,
    Step,
    StepPhase,
    StepStatus,
    TaskSagaSpec,
    TaskSagaStatus,
)
from steadfast.approval import rules as approval
from steadfast.approval.policy import EffectiveGate
from steadfast.conditions import State, conditions
from steadfast.records import Outcome, WorkflowInput
from steadfast.workflows.common import Reporter, run_action, second

NAME = "steadfast.tasksaga"
CANCEL_EVENT = "cancel"
# Compensations without their own retry policy still get a few tries: undoing matters.
COMPENSATION_RETRY = RetryPolicy(max_attempts=3, initial_interval="1s", backoff_coefficient=2, max_interval="10s")

_CONDITION_STATE: dict[SagaPhase, State] = {
    SagaPhase.SUCCEEDED: "ready",
    SagaPhase.COMPENSATED: "stalled",
    SagaPhase.COMPENSATION_FAILED: "stalled",
    SagaPhase.FAILED: "stalled",
    SagaPhase.REJECTED: "stalled",
}


class SagaInput(WorkflowInput[TaskSagaSpec]):
    """A saga's input: the spec and the gate resolved when it started (its spec's and the policies')."""

    gate: EffectiveGate | None = None
    # False: started by an operator that did not read policies; the spec's own gate applies.
    gate_resolved: bool = False

    def effective_gate(self) -> EffectiveGate | None:
        if self.gate_resolved:
            return self.gate
        own = self.spec.approval
        return (
            EffectiveGate(approvers=own.approvers, timeout=own.timeout) if own and self.spec.needs_approval() else None
        )


class _Saga:
    """The saga's status as the workflow sees it; every method is deterministic."""

    def __init__(self, ctx: DaprWorkflowContext, inp: dict[str, Any]) -> None:
        given = SagaInput.model_validate(inp)
        self.reporter = Reporter(ctx, given)
        self.spec = given.spec
        self.gate = given.effective_gate()
        self.state = TaskSagaStatus(
            phase=SagaPhase.RUNNING,
            steps=[StepStatus(name=s.name, phase=StepPhase.PENDING) for s in self.spec.steps],
            started_at=second(self.reporter.now),
            observed_generation=self.reporter.generation,
            workflow_instance_id=ctx.instance_id,
        )
        # How to undo each Kubernetes apply/patch that happened (from activity results: a replay rebuilds it).
        self.undo: dict[str, dict[str, Any]] = {}

    @property
    def phase(self) -> SagaPhase:
        return self.state.phase or SagaPhase.RUNNING

    @phase.setter
    def phase(self, value: SagaPhase) -> None:
        self.state.phase = value

    def status(self, message: str = "") -> TaskSagaStatus:
        self.state.conditions = conditions(
            _CONDITION_STATE.get(self.phase, "progressing"),
            reason=self.phase.value,
            message=message or self._message(),
            generation=self.reporter.generation,
            now=self.reporter.now,
            previous=self.state.conditions,
        )
        return self.state

    def variables(self) -> dict[str, Any]:
        """What placeholders see: the task, the saga, and the outputs the steps so far recorded.

        Outputs come from recorded activity results (kept in status), so a retry, a compensation after a
        restart and a replay all render the same request.
        """
        ref = self.reporter.ref
        outputs: dict[str, Any] = {}
        for record in self.state.steps:
            outputs.update(record.outputs or {})
        return {
            "task": self.spec.task.model_dump(mode="json", by_alias=True, exclude_none=True),
            "saga": {"name": ref.name, "namespace": ref.namespace, "uid": ref.uid},
            "outputs": outputs,
        }

    def undoable(self, step: Step) -> bool:
        """Whether `step` has something to undo: its compensation, or the recorded undo of its apply/patch."""
        return step.compensation is not None or step.name in self.undo

    def _message(self) -> str:
        if self.state.result and self.state.result.error:
            return self.state.result.error
        if self.state.current_step:
            return f"{self.phase.value}: {self.state.current_step}"
        return self.phase.value

    def run(
        self, step: Step, record: StepStatus | CompensationStatus, *, compensation: bool, cancel: Any = None
    ) -> Generator[Any, Any, bool]:
        record.phase = CompensationPhase.RUNNING if compensation else StepPhase.RUNNING
        record.started_at = second(self.reporter.now)
        self.state.current_step = step.name

        def snapshot(attempt: int) -> TaskSagaStatus:
            record.attempts = attempt
            return self.status()

        def waiting(outcome: Outcome) -> TaskSagaStatus:
            record.message = outcome.message  # e.g. "apply Job team-a/etl: waiting for object.status..."
            return self.status()

        action = step.compensation if compensation and step.compensation else step.action
        undo = self.undo.get(step.name) if compensation and step.compensation is None else None
        retry = step.retry if step.retry else (COMPENSATION_RETRY if compensation else None)
        outcome, attempts = yield from run_action(
            self.reporter,
            action,
            key_parts=(step.name, "compensation" if compensation else "action"),
            retry=retry,
            timeout=step.timeout,
            snapshot=snapshot,
            variables=self.variables(),
            outputs=None if compensation else step.outputs,
            undo=undo,
            waiting=waiting,
            interrupt=None if compensation else cancel,  # a deleted saga stops waiting; undoing always finishes
        )
        if not compensation and outcome.undo is not None:
            self.undo[step.name] = outcome.undo
        record.attempts = attempts
        record.finished_at = second(self.reporter.now)
        record.message = outcome.message
        if not compensation and outcome.ok and isinstance(record, StepStatus):
            record.outputs = outcome.outputs
        if compensation:
            record.phase = CompensationPhase.SUCCEEDED if outcome.ok else CompensationPhase.FAILED
        else:
            record.phase = StepPhase.SUCCEEDED if outcome.ok else StepPhase.FAILED
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
    outcome = approval.GateOutcome.model_validate(decided.get_result() or {})
    name = saga.state.approval_request
    if outcome.approved:
        saga.phase = SagaPhase.RUNNING
        saga.reporter.event("Approved", f"ApprovalRequest {name} approved by {outcome.approver}")
        yield saga.reporter.report(saga.status())
        return None, False
    return f"ApprovalRequest {name} {outcome.phase.value}: {outcome.reason}", True


def saga_workflow(ctx: DaprWorkflowContext, inp: dict[str, Any]) -> Generator[Any, Any, dict[str, Any]]:
    saga = _Saga(ctx, inp)
    cancel = ctx.wait_for_external_event(CANCEL_EVENT)
    steps = saga.state.steps
    saga.reporter.event("Started", f"saga started with {len(steps)} step(s)")
    gated = saga.gate is not None
    if saga.gate is not None:
        saga.phase = SagaPhase.AWAITING_APPROVAL
        saga.state.approval_request = approval.gate_request_name(saga.reporter.ref.name)
        saga.state.approval_policy = ", ".join(saga.gate.rules) or None
        saga.reporter.event(
            "AwaitingApproval", f"waiting for ApprovalRequest {saga.state.approval_request}: {saga.gate.describe()}"
        )
    yield saga.reporter.report(saga.status())

    done: list[Step] = []
    error: str | None = None
    rejected = False
    if gated:
        error, rejected = yield from _await_approval(saga, cancel)
    for step, record in zip(saga.spec.steps, steps, strict=True):
        if error is not None:
            break
        if cancel.is_complete:
            error = "the TaskSaga was deleted while running"
            break
        if (yield from saga.run(step, record, compensation=False, cancel=cancel)):
            done.append(step)
        else:
            error = (
                "the TaskSaga was deleted while running"
                if cancel.is_complete
                else f"step {step.name} failed: {record.message or ''}"
            )
            if step.compensation is None and step.name in saga.undo:
                done.append(step)  # its apply happened (its wait failed): undo that too
            break
    if error is None and cancel.is_complete and len(done) < len(steps):
        error = "the TaskSaga was deleted while running"

    if error is None:
        saga.phase = SagaPhase.SUCCEEDED
    else:
        for record in steps:
            if record.phase == StepPhase.PENDING:
                record.phase = StepPhase.SKIPPED
        to_undo = [s for s in reversed(done) if saga.undoable(s)]
        saga.phase = SagaPhase.COMPENSATING if to_undo else SagaPhase.REJECTED if rejected else SagaPhase.FAILED
        if to_undo:
            saga.reporter.event("Compensating", f"{error}; compensating {len(to_undo)} step(s)", warning=True)
        failed = 0
        for step in to_undo:
            undo = CompensationStatus(step=step.name, phase=CompensationPhase.RUNNING)
            saga.state.compensations.append(undo)
            if not (yield from saga.run(step, undo, compensation=True)):
                failed += 1
        if to_undo:
            saga.phase = SagaPhase.COMPENSATION_FAILED if failed else SagaPhase.COMPENSATED
        if failed:
            error += f"; {failed} compensation(s) failed"

    saga.state.current_step = None
    saga.state.finished_at = second(saga.reporter.now)
    saga.state.result = SagaResult(status=saga.phase, task_id=saga.spec.task.id, error=error)
    saga.reporter.event(saga.phase.value, error or f"all {len(steps)} step(s) succeeded", warning=error is not None)
    yield saga.reporter.report(saga.status(), wait=True)
    return saga.state.result.model_dump(mode="json", by_alias=True)
