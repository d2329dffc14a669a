"""The TaskSaga workflow: steps in order; on failure, compensations of completed steps in reverse.

A compensation is recorded the moment its step succeeds; a failing compensation is retried, then
recorded as failed, and the others still run. Deleting a running saga (onDelete: Compensate) sends the
`cancel` event: the attempt in flight finishes, no further attempt of its step starts (the retry backoff
races the event), then everything done is undone.

A person may step in (steadfast.repair): a saga whose onFailure is Pause stops at a failed step until a
decision (Retry, Skip, Compensate) or its pauseTimeout; a CompensationFailed saga waits for Retry (of the
failed compensations, with their original idempotency keys) or Resolve (undone by hand) until it is deleted.

A saga with a concurrency key (steadfast.concurrency) waits, once approved, for a slot of its key's keeper
(phase Queued) and releases it at every end: after its steps, or its compensations, or when deleted while queued.
Only inputs that carry a key take this path, so instances started before it replay as they ran.

Steps that declare dependsOn run as a graph (steadfast.workflows.graph): a separate path chosen by the spec, so
sagas without dependsOn, and every instance started before it, run and replay as they did.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import suppress
from datetime import timedelta
from typing import Annotated, Any

from dapr.ext.workflow import DaprWorkflowContext, when_any
from dapr.ext.workflow import RetryPolicy as EngineRetry
from dapr.ext.workflow._durabletask.task import TaskFailedError
from pydantic import SkipValidation, field_validator

from steadfast.api.duration import parse_duration
from steadfast.api.kinds import TASK_SAGA
from steadfast.api.repair import FailureAction, OnFailure, PauseStatus, RepairAction
from steadfast.api.retention import Retention
from steadfast.api.saga import (
    RENDERED,
    CompensationPhase,
    CompensationStatus,
    QueueStatus,
    RetryPolicy,
    SagaPhase,
    SagaResult,
    Step,
    StepPhase,
    StepStatus,
    TaskSagaSpec,
    TaskSagaStatus,
    TemplateRecord,
)
from steadfast.approval import rules as approval
from steadfast.approval.policy import EffectiveGate
from steadfast.concurrency.records import (
    ACQUIRE,
    POSITION_EVENT,
    RELEASE,
    SLOT_EVENT,
    KeeperMessage,
    SagaConcurrency,
    SlotRequest,
    Ticket,
)
from steadfast.conditions import State, conditions
from steadfast.records import Outcome, WorkflowInput
from steadfast.repair import workflow as repairs
from steadfast.repair.rules import RepairEvent, Situation, misfit
from steadfast.retention import rules as retention
from steadfast.workflows import graph
from steadfast.workflows.common import Reporter, run_action, second, stamp

NAME = "steadfast.tasksaga"
CANCEL_EVENT = "cancel"
# Compensations without their own retry policy still get a few tries: undoing matters.
COMPENSATION_RETRY = RetryPolicy(max_attempts=3, initial_interval="1s", backoff_coefficient=2, max_interval="10s")
# A queued saga asks its keeper again this often: a slot event lost on the way (an engine outage) is sent again.
REACQUIRE_EVERY = timedelta(minutes=5)
SLOT_RETRY = EngineRetry(
    first_retry_interval=timedelta(seconds=1),
    max_number_of_attempts=8,
    backoff_coefficient=2,
    max_retry_interval=timedelta(seconds=30),
)

_CONDITION_STATE: dict[SagaPhase, State] = {
    SagaPhase.PAUSED: "stalled",  # needs a person: kstatus shows it as needing attention, Argo CD as Suspended
    SagaPhase.SUCCEEDED: "ready",
    SagaPhase.COMPENSATED: "stalled",
    SagaPhase.COMPENSATION_FAILED: "stalled",
    SagaPhase.FAILED: "stalled",
    SagaPhase.REJECTED: "stalled",
}
# Phases after a failure: the progress of the steps is no longer updated.
_UNDOING = frozenset(
    {
        SagaPhase.COMPENSATING,
        SagaPhase.COMPENSATED,
        SagaPhase.COMPENSATION_FAILED,
        SagaPhase.FAILED,
        SagaPhase.REJECTED,
    }
)


class SagaInput(WorkflowInput[TaskSagaSpec]):
    """A saga's input: the spec and the gate resolved when it started (its spec's and the policies')."""

    gate: EffectiveGate | None = None
    # False: started by an operator that did not read policies; the spec's own gate applies.
    gate_resolved: bool = False
    # What to do when a step fails, resolved at start (its spec's, else the policies'); None: compensate.
    on_failure: OnFailure | None = None
    # How long the finished saga is kept, resolved at start (steadfast.retention.policy); None: kept.
    retention: Retention | None = None
    # Its concurrency key and limit, resolved at start (steadfast.concurrency.rules); None: not limited.
    concurrency: SagaConcurrency | None = None
    # The template the spec was rendered from at start (steadfast.templates); the spec is then the template's
    # definition with the saga's task and parameter values, pinned for the whole run.
    template: TemplateRecord | None = None
    # Validated by `_rendered` alone: a rendered spec carries both steps and template, and its steps read its
    # parameters, which the model accepts only in the RENDERED context.
    spec: Annotated[TaskSagaSpec, SkipValidation]

    @field_validator("spec", mode="before")
    @classmethod
    def _rendered(cls, value: Any) -> TaskSagaSpec:
        if isinstance(value, TaskSagaSpec):
            return value
        return TaskSagaSpec.model_validate(value, context={RENDERED: True})

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
        self.on_failure = given.on_failure
        self.retention = given.retention
        self.concurrency = given.concurrency
        self.asked = False  # whether it asked its keeper for a slot (so it must release at its end)
        self.decisions = repairs.Decisions(ctx, given.generation)
        self.state = TaskSagaStatus(
            phase=SagaPhase.RUNNING,
            steps=[StepStatus(name=s.name, phase=StepPhase.PENDING) for s in self.spec.steps],
            started_at=second(self.reporter.now),
            observed_generation=self.reporter.generation,
            workflow_instance_id=ctx.instance_id,
            template=given.template,
        )
        if self.spec.is_graph():  # status-only (the report's content): instances in order replay as they ran
            for record, step in zip(self.state.steps, self.spec.steps, strict=True):
                record.depends_on = list(step.depends_on or [])
        # How to undo each Kubernetes apply/patch that happened (from activity results: a replay rebuilds it).
        self.undo: dict[str, dict[str, Any]] = {}

    @property
    def phase(self) -> SagaPhase:
        return self.state.phase or SagaPhase.RUNNING

    @phase.setter
    def phase(self, value: SagaPhase) -> None:
        self.state.phase = value

    def status(self, message: str = "") -> TaskSagaStatus:
        self.state.observed_generation = self.reporter.generation
        steps = self.state.steps
        if self.phase not in _UNDOING:  # kept as it was once steps stop (those not run are then Skipped too)
            finished = sum(1 for r in steps if r.phase in (StepPhase.SUCCEEDED, StepPhase.SKIPPED))
            self.state.progress = f"{finished}/{len(steps)}"
        if self.spec.is_graph() and self.state.finished_at is None:  # several steps may run at once
            running = [r.name for r in steps if r.phase == StepPhase.RUNNING]
            running += [c.step for c in self.state.compensations if c.phase == CompensationPhase.RUNNING]
            pause = self.state.pause
            self.state.current_step = pause.step if pause else ", ".join(running) or None
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
            "params": dict(self.spec.parameters),
        }

    def undoable(self, step: Step) -> bool:
        """Whether `step` has something to undo: its compensation, or the recorded undo of its apply/patch."""
        return step.compensation is not None or step.name in self.undo

    def queued(self) -> None:
        """Show the saga waiting for a slot of its key (until the first step's snapshot says Running)."""
        assert self.concurrency is not None
        self.phase = SagaPhase.QUEUED
        policy = ", ".join(self.concurrency.rules) or None
        self.state.queue = QueueStatus(key=self.concurrency.key, limit=self.concurrency.limit, policy=policy)

    def _message(self) -> str:
        queue = self.state.queue
        if self.phase == SagaPhase.QUEUED and queue is not None:
            where = f"; position {queue.position}" if queue.position else ""
            return f"waiting for a slot of concurrency key {queue.key!r} (limit {queue.limit}){where}"
        if self.state.pause is not None:
            return (
                f"step {self.state.pause.step} failed; paused for a decision (spec.repair: Retry, Skip or "
                f"Compensate) until {stamp(self.state.pause.expires_at or self.reporter.now)}"
            )
        if self.state.result and self.state.result.error:
            return self.state.result.error
        if self.state.current_step:
            return f"{self.phase.value}: {self.state.current_step}"
        return self.phase.value

    def situation(self) -> Situation:
        """The saga as repair decisions are judged (steadfast.repair.rules), from the workflow's own state."""
        pause = self.state.pause
        recorded: set[str] = set()
        for record in self.state.steps:
            if pause is not None and record.name == pause.step:
                recorded.update((record.outputs or {}).keys())
        return Situation(
            kind="TaskSaga",
            name=f"{self.reporter.ref.namespace}/{self.reporter.ref.name}",
            phase=self.phase.value,
            paused_step=pause.step if pause else None,
            failed_compensations=tuple(c.step for c in self.state.compensations if c.phase == CompensationPhase.FAILED),
            recorded_outputs=frozenset(recorded),
            creator=self.reporter.actor.user if self.reporter.actor else None,
        )

    def judge(self, event: RepairEvent) -> str | None:
        """Why a decision is refused (recorded, with an Event), or None when it is taken."""
        self.reporter.generation = max(self.reporter.generation, event.generation)
        problem = repairs.UNSEALED if event.user is None else None
        problem = problem or misfit(self.situation(), event.action, event.step, user=event.user, spec=self.spec)
        if problem is not None:
            repairs.record(self.state.decisions, event, second(self.reporter.now), f"refused: {problem}")
            self.reporter.event("RepairRefused", f"{event.action.value} by {event.user}: {problem}", warning=True)
        return problem

    def take(self, event: RepairEvent, result: str) -> None:
        """Record a decision that is taken, and say so in an Event."""
        repairs.record(self.state.decisions, event, second(self.reporter.now), result)
        why = f" ({event.reason})" if event.reason else ""
        self.reporter.event(f"Repair{event.action.value}", f"{event.user}: {result}{why}")

    def run(
        self,
        step: Step,
        record: StepStatus | CompensationStatus,
        *,
        compensation: bool,
        cancel: Any = None,
        earlier: int = 0,
        reporter: Reporter | None = None,
    ) -> Generator[Any, Any, bool]:
        """One run of a step's action (or compensation) with its retries; `earlier`: attempts of earlier runs
        (a person's Retry), so status counts them all; `reporter`: a lane's (steadfast.workflows.lanes)."""
        record.phase = CompensationPhase.RUNNING if compensation else StepPhase.RUNNING
        record.started_at = record.started_at if earlier else second(self.reporter.now)
        self.state.current_step = step.name

        def snapshot(attempt: int) -> TaskSagaStatus:
            record.attempts = earlier + attempt
            return self.status()

        def waiting(outcome: Outcome) -> TaskSagaStatus:
            record.message = outcome.message  # e.g. "apply Job team-a/etl: waiting for object.status..."
            return self.status()

        action = step.compensation if compensation and step.compensation else step.action
        undo = self.undo.get(step.name) if compensation and step.compensation is None else None
        retry = step.retry if step.retry else (COMPENSATION_RETRY if compensation else None)
        outcome, attempts = yield from run_action(
            reporter or self.reporter,
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
        record.attempts = earlier + attempts
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
        if saga.concurrency is not None:
            saga.queued()
        saga.reporter.event("Approved", f"ApprovalRequest {name} approved by {outcome.approver}")
        yield saga.reporter.report(saga.status())
        return None, False
    return f"ApprovalRequest {name} {outcome.phase.value}: {outcome.reason}", True


def _slot_request(saga: _Saga, message: KeeperMessage) -> dict[str, Any]:
    assert saga.concurrency is not None
    ref = saga.reporter.ref
    return SlotRequest(
        keeper=saga.concurrency.keeper, namespace=ref.namespace, key=saga.concurrency.key, message=message
    ).wire()


def _take_slot(saga: _Saga, cancel: Any) -> Generator[Any, Any, bool]:
    """Wait in phase Queued for a slot of the saga's key: True once it holds one, False when deleted first."""
    ctx = saga.reporter.ctx
    assert saga.concurrency is not None
    ticket = Ticket(
        instance=ctx.instance_id,
        created=saga.concurrency.created,
        name=saga.reporter.ref.name,
        limit=saga.concurrency.limit,
    )
    acquire = _slot_request(saga, KeeperMessage(op="acquire", instance=ctx.instance_id, ticket=ticket))
    slot = ctx.wait_for_external_event(SLOT_EVENT)
    position = ctx.wait_for_external_event(POSITION_EVENT)
    saga.asked = True
    timer: Any = None
    while True:
        if timer is None:  # ask (again): the keeper grants a holder again, and keeps a waiter's place
            try:
                yield ctx.call_activity(ACQUIRE, input=acquire, retry_policy=SLOT_RETRY)
            except TaskFailedError as exc:
                saga.reporter.event("QueueUnreachable", f"cannot reach the concurrency keeper: {exc}", warning=True)
            timer = ctx.create_timer(ctx.current_utc_datetime + REACQUIRE_EVERY)
        winner = yield when_any([slot, position, cancel, timer])
        if winner is slot:
            break
        if winner is cancel:
            saga.state.queue = None
            return False
        if winner is timer:
            timer = None
            continue
        queue = saga.state.queue
        if queue is not None:
            first = queue.position is None
            queue.position = int((position.get_result() or {}).get("position") or 0) or None
            if first:
                saga.reporter.event("Queued", saga._message())
            yield saga.reporter.report(saga.status())
        position = ctx.wait_for_external_event(POSITION_EVENT)
    saga.state.queue = None
    saga.phase = SagaPhase.RUNNING
    return True


def _release(saga: _Saga) -> Generator[Any, Any, None]:
    """Leave the key's keeper, holding a slot or still in line (once; nothing when it never asked)."""
    if not saga.asked:
        return
    saga.asked = False
    ctx = saga.reporter.ctx
    release = _slot_request(saga, KeeperMessage(op="release", instance=ctx.instance_id))
    with suppress(TaskFailedError):  # if it fails for good, the keeper's check finds this instance ended
        yield ctx.call_activity(RELEASE, input=release, retry_policy=SLOT_RETRY)


def _pause(saga: _Saga, step: Step, cancel: Any) -> Generator[Any, Any, RepairEvent | str]:
    """Wait at a failed step for a person's decision: the decision taken, or why the saga compensates instead."""
    ctx = saga.reporter.ctx
    assert saga.on_failure is not None
    expires = saga.reporter.now + parse_duration(saga.on_failure.pause_timeout)
    saga.phase = SagaPhase.PAUSED
    saga.state.current_step = step.name
    saga.state.pause = PauseStatus(step=step.name, since=second(saga.reporter.now), expires_at=second(expires))
    saga.reporter.event("Paused", saga._message(), warning=True)
    yield saga.reporter.report(saga.status())
    timer = ctx.create_timer(expires)
    while True:
        winner = yield when_any([saga.decisions.waiter(), timer, cancel])
        if winner is timer:
            saga.state.pause = None
            saga.reporter.event("PauseTimedOut", f"no decision within {saga.on_failure.pause_timeout}", warning=True)
            return f"step {step.name} failed and no decision came within {saga.on_failure.pause_timeout}"
        if winner is cancel:
            saga.state.pause = None
            return "the TaskSaga was deleted while paused"
        event = saga.decisions.take()
        if event is None:
            continue
        if saga.judge(event) is not None:
            yield saga.reporter.report(saga.status())
            continue
        saga.state.pause = None
        if event.action == RepairAction.RETRY:
            saga.take(event, f"retrying step {step.name}")
        elif event.action == RepairAction.SKIP:
            saga.take(event, f"skipped step {step.name}")
        else:
            saga.take(event, f"compensating instead of step {step.name}")
        return event


def _repair_compensations(saga: _Saga, cancel: Any, base_error: str) -> Generator[Any, Any, None]:
    """After CompensationFailed: retry the failed compensations (original order, original idempotency keys) or
    record one as undone by hand, on a person's decision, until none is left failed or the saga is deleted."""
    by_name = {s.name: s for s in saga.spec.steps}
    while saga.phase == SagaPhase.COMPENSATION_FAILED:
        winner = yield when_any([saga.decisions.waiter(), cancel])
        if winner is cancel:
            return
        event = saga.decisions.take()
        if event is None:
            continue
        if saga.judge(event) is not None:
            yield saga.reporter.report(saga.status(), wait=True)
            continue
        failed = [c for c in saga.state.compensations if c.phase == CompensationPhase.FAILED]
        chosen = [c for c in failed if event.step in (None, c.step)]
        if event.action == RepairAction.RESOLVE:
            for undo in chosen:
                undo.phase = CompensationPhase.RESOLVED
                undo.message = f"undone by hand, as {event.user} recorded: {event.reason}"
            saga.take(event, f"compensation of step {event.step} recorded as undone by hand")
        else:
            saga.take(event, f"retrying the compensation of {', '.join(c.step for c in chosen)}")
            saga.phase = SagaPhase.COMPENSATING
            yield saga.reporter.report(saga.status())
            for undo in chosen:
                yield from saga.run(by_name[undo.step], undo, compensation=True, earlier=undo.attempts)
        left = sum(1 for c in saga.state.compensations if c.phase == CompensationPhase.FAILED)
        saga.phase = SagaPhase.COMPENSATION_FAILED if left else SagaPhase.COMPENSATED
        _finish(saga, base_error + (f"; {left} compensation(s) failed" if left else ""))
        yield saga.reporter.report(saga.status(), wait=True)


def _finish(saga: _Saga, error: str | None) -> None:
    steps = saga.state.steps
    saga.state.current_step = None
    saga.state.finished_at = second(saga.reporter.now)
    saga.state.result = SagaResult(status=saga.phase, task_id=saga.spec.task.id, error=error)
    # A status-only field (the report's content, no new activity): instances replay as they ran.
    outcome = retention.outcome_of(TASK_SAGA.kind, saga.phase.value)
    saga.state.retained_until = retention.retained_until(saga.retention, outcome, saga.state.finished_at)
    saga.reporter.event(saga.phase.value, error or f"all {len(steps)} step(s) succeeded", warning=error is not None)


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
    elif saga.concurrency is not None:
        saga.queued()
    yield saga.reporter.report(saga.status())

    done: list[Step] = []
    error: str | None = None
    rejected = False
    pauses = saga.on_failure is not None and saga.on_failure.action == FailureAction.PAUSE
    if gated:
        error, rejected = yield from _await_approval(saga, cancel)
    if error is None and saga.concurrency is not None and not (yield from _take_slot(saga, cancel)):
        error = "the TaskSaga was deleted while queued"
    if saga.spec.is_graph():
        if error is None:
            error, done = yield from graph.run_steps(saga, cancel, pause=_pause if pauses else None)
    else:
        for step, record in zip(saga.spec.steps, steps, strict=True):
            if error is not None:
                break
            if cancel.is_complete:
                error = "the TaskSaga was deleted while running"
                break
            while True:  # a person's Retry runs the step again
                if (yield from saga.run(step, record, compensation=False, cancel=cancel, earlier=record.attempts)):
                    done.append(step)
                    break
                failure = f"step {step.name} failed: {record.message or ''}"
                decided: RepairEvent | str = "the TaskSaga was deleted while running" if cancel.is_complete else failure
                if pauses and not cancel.is_complete:
                    decided = yield from _pause(saga, step, cancel)
                if isinstance(decided, RepairEvent) and decided.action == RepairAction.RETRY:
                    saga.phase = SagaPhase.RUNNING
                    continue
                if step.compensation is None and step.name in saga.undo:
                    done.append(step)  # its apply happened (its wait failed): undo that too
                if isinstance(decided, RepairEvent) and decided.action == RepairAction.SKIP:
                    saga.phase = SagaPhase.RUNNING
                    record.phase = StepPhase.SKIPPED
                    record.message = f"skipped by {decided.user}: {decided.reason} (it had failed: {record.message})"
                    yield saga.reporter.report(saga.status())
                    break
                error = failure if isinstance(decided, RepairEvent) else decided
                if isinstance(decided, RepairEvent):
                    error = f"{failure}; compensating on {decided.user}'s decision"
                break
        if error is None and cancel.is_complete and len(done) < len(steps):
            error = "the TaskSaga was deleted while running"

    if error is None:
        saga.phase = SagaPhase.SUCCEEDED
        yield from _release(saga)
    else:
        for record in steps:
            if record.phase == StepPhase.PENDING:
                record.phase = StepPhase.SKIPPED
        to_undo = [s for s in reversed(done) if saga.undoable(s)]
        saga.phase = SagaPhase.COMPENSATING if to_undo else SagaPhase.REJECTED if rejected else SagaPhase.FAILED
        if to_undo:
            saga.reporter.event("Compensating", f"{error}; compensating {len(to_undo)} step(s)", warning=True)
        failed = 0
        if saga.spec.is_graph():
            failed = yield from graph.compensate(saga, to_undo)
        for step in [] if saga.spec.is_graph() else to_undo:
            undo = CompensationStatus(step=step.name, phase=CompensationPhase.RUNNING)
            saga.state.compensations.append(undo)
            if not (yield from saga.run(step, undo, compensation=True)):
                failed += 1
        yield from _release(saga)  # after the compensations, which still call the key's downstream
        if to_undo:
            saga.phase = SagaPhase.COMPENSATION_FAILED if failed else SagaPhase.COMPENSATED
        base_error = error
        if failed:
            error += f"; {failed} compensation(s) failed"
        if failed and ctx.is_patched(repairs.REPAIRS):
            _finish(saga, error)
            yield saga.reporter.report(saga.status(), wait=True)
            yield from _repair_compensations(saga, cancel, base_error)
            return saga.state.result.model_dump(mode="json", by_alias=True) if saga.state.result else {}

    _finish(saga, error)
    yield saga.reporter.report(saga.status(), wait=True)
    assert saga.state.result is not None
    return saga.state.result.model_dump(mode="json", by_alias=True)
