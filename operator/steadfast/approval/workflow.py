"""The ApprovalRequest workflow: deterministic; the rules it applies are in `rules`, its effects are activities.

It opens the request (sends spec.notify), then races each `approval_received` event against one durable
timer of spec.timeout counted from the resource's creation, so an operator restart neither restarts nor
extends the wait. It counts distinct approvers to `approvers.required`, and any rejection rejects. On
approval spec.action runs once (its Idempotency-Key makes a redelivered attempt harmless). If it fails
(ActionFailed), the workflow waits for a person's repair decision (spec.repair: Retry) and runs it again with
the same Idempotency-Key, until it succeeds or the request is deleted.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, when_any

from steadfast.api.action import ActionResult
from steadfast.api.approval import ApprovalPhase, ApprovalRecord, ApprovalRequestStatus
from steadfast.api.duration import parse_duration
from steadfast.api.kinds import APPROVAL_REQUEST
from steadfast.api.saga import RetryPolicy
from steadfast.approval.rules import DECISION_EVENT, ApprovalInput, DecisionEvent, screen, tally
from steadfast.conditions import State, conditions
from steadfast.records import Outcome
from steadfast.repair import workflow as repairs
from steadfast.repair.rules import REQUEST, Situation, misfit
from steadfast.retention import rules as retention
from steadfast.workflows.common import Reporter, run_action, second, stamp, utc

NAME = "steadfast.approvalrequest"

# Notifying and acting are worth a few tries; the Idempotency-Key keeps the effect single.
NOTIFY_RETRY = RetryPolicy(max_attempts=3, initial_interval="1s", backoff_coefficient=2, max_interval="5s")
ACTION_RETRY = RetryPolicy(max_attempts=3, initial_interval="1s", backoff_coefficient=2, max_interval="10s")
_CONDITION_STATE: dict[ApprovalPhase, State] = {
    ApprovalPhase.COMPLETED: "ready",
    ApprovalPhase.REJECTED: "stalled",
    ApprovalPhase.TIMED_OUT: "stalled",
    ApprovalPhase.ACTION_FAILED: "stalled",
}


class _Request:
    """The request's status as the workflow sees it; deterministic."""

    def __init__(self, ctx: DaprWorkflowContext, inp: dict[str, Any]) -> None:
        given = ApprovalInput.model_validate(inp)
        self.reporter = Reporter(ctx, given)
        self.spec = given.spec
        self.requester = given.requested_by
        self.retention = given.retention
        opened = utc(given.created_at) if given.created_at else utc(ctx.current_utc_datetime)
        self.expires = opened + parse_duration(self.spec.timeout)
        self.decisions = repairs.Decisions(ctx, given.generation)
        self.state = ApprovalRequestStatus(
            phase=ApprovalPhase.PENDING,
            expires_at=second(self.expires),
            observed_generation=self.reporter.generation,
            workflow_instance_id=ctx.instance_id,
        )

    @property
    def phase(self) -> ApprovalPhase:
        return self.state.phase or ApprovalPhase.PENDING

    @phase.setter
    def phase(self, value: ApprovalPhase) -> None:
        self.state.phase = value

    @property
    def approvals(self) -> list[ApprovalRecord]:
        return self.state.approvals

    def status(self) -> ApprovalRequestStatus:
        final_approved = self.phase == ApprovalPhase.APPROVED and self.spec.action is None
        self.state.observed_generation = self.reporter.generation
        self.state.retained_until = self._retained_until()
        self.state.conditions = conditions(
            "ready" if final_approved else _CONDITION_STATE.get(self.phase, "progressing"),
            reason=self.phase.value,
            message=self.state.reason or self._waiting(),
            generation=self.reporter.generation,
            now=self.reporter.now,
            previous=self.state.conditions,
        )
        return self.state

    def _retained_until(self) -> datetime | None:
        """When the finished request goes (its end: the action's, else the decision's, plus its retention)."""
        outcome = retention.outcome_of(APPROVAL_REQUEST.kind, self.phase.value, has_action=self.spec.action is not None)
        result = self.state.action_result
        ended = result.finished_at if result is not None and result.finished_at else self.state.decided_at
        return retention.retained_until(self.retention, outcome, ended)

    def variables(self) -> dict[str, Any]:
        """What notify's and action's placeholders see; `approvedBy` once approvals are in."""
        ref = self.reporter.ref
        request: dict[str, Any] = {
            "name": ref.name,
            "namespace": ref.namespace,
            "subject": self.spec.subject.model_dump(mode="json", by_alias=True, exclude_none=True),
            "requestedBy": self.requester,
            "approvedBy": [a.user for a in self.approvals if a.approved],
        }
        return {"request": request}

    def _waiting(self) -> str:
        approved = sum(1 for a in self.approvals if a.approved)
        return f"waiting for approval ({approved} of {self.spec.approvers.required}) until {stamp(self.expires)}"

    def decide(self, phase: ApprovalPhase, approver: str | None, reason: str) -> None:
        self.phase, self.state.approver, self.state.reason = phase, approver, reason
        self.state.decided_at = second(self.reporter.now)
        self.reporter.event(phase.value, reason, warning=phase != ApprovalPhase.APPROVED)

    def act(self, outcome: Outcome, attempts: int) -> ActionResult:
        return ActionResult(
            succeeded=outcome.ok,
            status_code=outcome.status_code,
            attempts=attempts,
            message=outcome.message,
            finished_at=second(self.reporter.now),
        )


def approval_workflow(ctx: DaprWorkflowContext, inp: dict[str, Any]) -> Generator[Any, Any, dict[str, Any]]:
    req = _Request(ctx, inp)
    timer = ctx.create_timer(req.expires)  # created first: time spent notifying counts against the timeout
    required = req.spec.approvers.required
    req.reporter.event("Opened", f"waiting for {required} approval(s) until {stamp(req.expires)}")
    yield req.reporter.report(req.status())

    if req.spec.notify is not None:
        outcome, attempts = yield from run_action(
            req.reporter,
            req.spec.notify,
            key_parts=("notify",),
            retry=NOTIFY_RETRY,
            timeout="1m",
            snapshot=lambda _: None,
            variables=req.variables(),
        )
        req.state.notify_result = req.act(outcome, attempts)
        if not outcome.ok:
            req.reporter.event("NotifyFailed", f"spec.notify failed: {outcome.message}", warning=True)
        yield req.reporter.report(req.status())

    while req.phase == ApprovalPhase.PENDING:
        decision = ctx.wait_for_external_event(DECISION_EVENT)
        if (yield when_any([decision, timer])) is timer:
            approved = sum(1 for a in req.approvals if a.approved)
            req.decide(
                ApprovalPhase.TIMED_OUT,
                None,
                f"no decision within {req.spec.timeout} (expired at "
                f"{stamp(req.expires)}; {approved} of {required} approval(s))",
            )
            break
        data = DecisionEvent.model_validate(decision.get_result() or {})
        req.reporter.generation = max(req.reporter.generation, data.generation)
        problem = screen(data, req.approvals, req.requester)
        if problem is not None:
            if not any(
                (a.user, a.approved, a.reason) == (data.user, data.approved, data.reason) for a in req.approvals
            ):  # a resend is silent
                req.reporter.event("DecisionIgnored", problem, warning=True)
            yield req.reporter.report(req.status())
            continue
        user, reason = str(data.user), data.reason
        req.approvals.append(
            ApprovalRecord(user=user, approved=data.approved, reason=reason, at=second(req.reporter.now))
        )
        outcome_phase = tally(req.approvals, required)
        if outcome_phase == ApprovalPhase.REJECTED:
            req.decide(outcome_phase, user, f"rejected by {user}: {reason or 'no reason given'}")
        elif outcome_phase == ApprovalPhase.APPROVED:
            req.decide(
                outcome_phase,
                user,
                f"approved by {', '.join(a.user for a in req.approvals)}" + (f": {reason}" if reason else ""),
            )
        else:
            req.reporter.event("Approval", f"{user} approved ({len(req.approvals)} of {required})")
            yield req.reporter.report(req.status())

    if req.phase == ApprovalPhase.APPROVED and req.spec.action is not None:
        yield req.reporter.report(req.status())
        yield from _act(req)
    yield req.reporter.report(req.status(), wait=True)
    if req.phase == ApprovalPhase.ACTION_FAILED and ctx.is_patched(repairs.REPAIRS):
        yield from _repairs(req)
    return {"phase": req.phase.value, "approver": req.state.approver, "reason": req.state.reason}


def _act(req: _Request) -> Generator[Any, Any, None]:
    """Run spec.action (again, on a Retry: the same Idempotency-Key, attempts counted on)."""
    assert req.spec.action is not None
    earlier = (req.state.action_result.attempts or 0) if req.state.action_result else 0
    decided = (req.state.reason or "").split("; action ")[0]
    req.phase = ApprovalPhase.EXECUTING

    def snapshot(attempt: int) -> ApprovalRequestStatus:
        req.state.action_result = ActionResult(succeeded=False, attempts=earlier + attempt, message="running")
        return req.status()

    outcome, attempts = yield from run_action(
        req.reporter,
        req.spec.action,
        key_parts=("action",),
        retry=ACTION_RETRY,
        timeout=None,
        snapshot=snapshot,
        variables=req.variables(),
    )
    req.state.action_result = req.act(outcome, earlier + attempts)
    req.phase = ApprovalPhase.COMPLETED if outcome.ok else ApprovalPhase.ACTION_FAILED
    req.state.reason = f"{decided}; action {'succeeded' if outcome.ok else 'failed'}: {outcome.message}"
    req.reporter.event(req.phase.value, f"spec.action: {outcome.message}", warning=not outcome.ok)


def _repairs(req: _Request) -> Generator[Any, Any, None]:
    """After ActionFailed: a person's Retry runs the action again, until it succeeds (or the request is deleted)."""
    now = req.reporter.ctx.current_utc_datetime
    name = f"{req.reporter.ref.namespace}/{req.reporter.ref.name}"
    while req.phase == ApprovalPhase.ACTION_FAILED:
        yield req.decisions.waiter()
        event = req.decisions.take()
        if event is None:
            continue
        now = req.reporter.ctx.current_utc_datetime
        req.reporter.generation = max(req.reporter.generation, event.generation)
        problem = repairs.UNSEALED if event.user is None else None
        situation = Situation(REQUEST, name, req.phase.value)
        problem = problem or misfit(situation, event.action, event.step, user=event.user)
        if problem is not None:
            repairs.record(req.state.decisions, event, second(now), f"refused: {problem}")
            req.reporter.event("RepairRefused", f"{event.action.value} by {event.user}: {problem}", warning=True)
        else:
            repairs.record(req.state.decisions, event, second(now), "retrying spec.action")
            req.reporter.event("RepairRetry", f"{event.user}: retrying spec.action")
            yield req.reporter.report(req.status())
            yield from _act(req)
        yield req.reporter.report(req.status(), wait=True)
