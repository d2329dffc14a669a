"""The ApprovalRequest workflow: deterministic; the rules it applies are in `rules`, its effects are activities.

It opens the request (sends spec.notify), then races each `approval_received` event against one durable
timer of spec.timeout counted from the resource's creation, so an operator restart neither restarts nor
extends the wait. It counts distinct approvers to `approvers.required`, and any rejection rejects. On
approval spec.action runs once (its Idempotency-Key makes a redelivered attempt harmless).
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, when_any

from steadfast.api.approval import ApprovalPhase, ApprovalRequestSpec
from steadfast.api.duration import parse_duration
from steadfast.api.saga import RetryPolicy
from steadfast.approval.rules import DECISION_EVENT, screen, tally
from steadfast.conditions import conditions
from steadfast.records import Outcome
from steadfast.workflows.common import Reporter, run_action, stamp, utc

NAME = "steadfast.approvalrequest"

# Notifying and acting are worth a few tries; the Idempotency-Key keeps the effect single.
NOTIFY_RETRY = RetryPolicy(max_attempts=3, initial_interval="1s", backoff_coefficient=2, max_interval="5s")
ACTION_RETRY = RetryPolicy(max_attempts=3, initial_interval="1s", backoff_coefficient=2, max_interval="10s")
_CONDITION_STATE = {
    ApprovalPhase.COMPLETED: "ready",
    ApprovalPhase.REJECTED: "stalled",
    ApprovalPhase.TIMED_OUT: "stalled",
    ApprovalPhase.ACTION_FAILED: "stalled",
}


class _Request:
    """The request's status as the workflow sees it; deterministic."""

    def __init__(self, ctx: DaprWorkflowContext, inp: dict[str, Any]) -> None:
        self.reporter = Reporter(ctx, inp)
        self.spec = ApprovalRequestSpec.model_validate(inp["spec"])
        self.requester: str | None = inp.get("requestedBy")
        self.phase = ApprovalPhase.PENDING
        self.approvals: list[dict[str, Any]] = []
        self.approver: str | None = None
        self.decided_at: str | None = None
        self.reason: str | None = None
        self.notify_result: dict[str, Any] | None = None
        self.action_result: dict[str, Any] | None = None
        self.conditions: list[dict[str, Any]] = []
        created = inp.get("createdAt")
        opened = utc(datetime.fromisoformat(created)) if created else utc(ctx.current_utc_datetime)
        self.expires = opened + parse_duration(self.spec.timeout)

    def status(self) -> dict[str, Any]:
        final_approved = self.phase == ApprovalPhase.APPROVED and self.spec.action is None
        state = "ready" if final_approved else _CONDITION_STATE.get(self.phase, "progressing")
        message = self.reason or self._waiting()
        self.conditions = conditions(
            state,
            reason=self.phase.value,
            message=message,
            generation=self.reporter.generation,
            now=self.reporter.now,
            previous=self.conditions,
        )
        return {
            "phase": self.phase.value,
            "approvals": self.approvals,
            "approver": self.approver,
            "decidedAt": self.decided_at,
            "expiresAt": stamp(self.expires),
            "reason": self.reason,
            "notifyResult": self.notify_result,
            "actionResult": self.action_result,
            "observedGeneration": self.reporter.generation,
            "workflowInstanceId": self.reporter.ctx.instance_id,
            "conditions": self.conditions,
        }

    def _waiting(self) -> str:
        approved = sum(1 for a in self.approvals if a["approved"])
        return f"waiting for approval ({approved} of {self.spec.approvers.required}) until {stamp(self.expires)}"

    def decide(self, phase: ApprovalPhase, approver: str | None, reason: str) -> None:
        self.phase, self.approver, self.reason = phase, approver, reason
        self.decided_at = stamp(self.reporter.now)
        self.reporter.event(phase.value, reason, warning=phase != ApprovalPhase.APPROVED)

    def act(self, outcome: Outcome, attempts: int) -> dict[str, Any]:
        return {
            "succeeded": outcome.ok,
            "statusCode": outcome.status_code,
            "attempts": attempts,
            "message": outcome.message,
            "finishedAt": stamp(self.reporter.now),
        }


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
        )
        req.notify_result = req.act(outcome, attempts)
        if not outcome.ok:
            req.reporter.event("NotifyFailed", f"spec.notify failed: {outcome.message}", warning=True)
        yield req.reporter.report(req.status())

    while req.phase == ApprovalPhase.PENDING:
        decision = ctx.wait_for_external_event(DECISION_EVENT)
        if (yield when_any([decision, timer])) is timer:
            approved = sum(1 for a in req.approvals if a["approved"])
            req.decide(
                ApprovalPhase.TIMED_OUT,
                None,
                f"no decision within {req.spec.timeout} (expired at "
                f"{stamp(req.expires)}; {approved} of {required} approval(s))",
            )
            break
        data: dict[str, Any] = decision.get_result() or {}
        req.reporter.generation = max(req.reporter.generation, int(data.get("generation") or 0))
        problem = screen(data, req.approvals, req.requester)
        if problem is not None:
            if not any(
                a["user"] == data.get("user")
                and a["approved"] == data.get("approved")
                and a.get("reason") == data.get("reason")
                for a in req.approvals
            ):  # a resend is silent
                req.reporter.event("DecisionIgnored", problem, warning=True)
            yield req.reporter.report(req.status())
            continue
        user, reason = str(data["user"]), data.get("reason")
        req.approvals.append(
            {"user": user, "approved": bool(data.get("approved")), "reason": reason, "at": stamp(req.reporter.now)}
        )
        outcome_phase = tally(req.approvals, required)
        if outcome_phase == ApprovalPhase.REJECTED:
            req.decide(outcome_phase, user, f"rejected by {user}: {reason or 'no reason given'}")
        elif outcome_phase == ApprovalPhase.APPROVED:
            req.decide(
                outcome_phase,
                user,
                f"approved by {', '.join(a['user'] for a in req.approvals)}" + (f": {reason}" if reason else ""),
            )
        else:
            req.reporter.event("Approval", f"{user} approved ({len(req.approvals)} of {required})")
            yield req.reporter.report(req.status())

    if req.phase == ApprovalPhase.APPROVED and req.spec.action is not None:
        yield req.reporter.report(req.status())
        req.phase = ApprovalPhase.EXECUTING

        def snapshot(attempt: int) -> dict[str, Any]:
            req.action_result = {"succeeded": False, "attempts": attempt, "message": "running"}
            return req.status()

        outcome, attempts = yield from run_action(
            req.reporter, req.spec.action, key_parts=("action",), retry=ACTION_RETRY, timeout=None, snapshot=snapshot
        )
        req.action_result = req.act(outcome, attempts)
        req.phase = ApprovalPhase.COMPLETED if outcome.ok else ApprovalPhase.ACTION_FAILED
        req.reason = f"{req.reason}; action {'succeeded' if outcome.ok else 'failed'}: {outcome.message}"
        req.reporter.event(req.phase.value, f"spec.action: {outcome.message}", warning=not outcome.ok)
    yield req.reporter.report(req.status(), wait=True)
    return {"phase": req.phase.value, "approver": req.approver, "reason": req.reason}
