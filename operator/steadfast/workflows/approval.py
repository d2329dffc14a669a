"""The ApprovalRequest workflow, and the wiring of a TaskSaga's approval gate.

The workflow opens the request (sends spec.notify), then races each `approval_received` event against
one durable timer of spec.timeout counted from the resource's creation, so an operator restart neither
restarts nor extends the wait. Events carry the user the admission webhook recorded (never a typed
name); the workflow counts distinct approvers to `approvers.required`, and any rejection rejects. On
approval spec.action runs once (its Idempotency-Key makes a redelivered attempt harmless).

The gate: a TaskSaga whose spec.approval applies gets an ApprovalRequest it owns, created by a kopf
handler when the saga is created (its spec is immutable, so this is the same as creating it at the
gate); the saga workflow waits for `approval_decided`, which a kopf handler raises on the saga's
instance when the owned request's status leaves Pending (or when it is deleted undecided).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Generator, Mapping
from datetime import datetime
from typing import Any

import kopf
from dapr.ext.workflow import DaprWorkflowContext, WorkflowStatus, when_any
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.actions import Outcome
from steadfast.api.approval import ApprovalPhase, ApprovalRequestSpec
from steadfast.api.duration import parse_duration
from steadfast.api.kinds import APPROVAL_REQUEST, TASK_SAGA
from steadfast.api.saga import RetryPolicy, SagaPhase, TaskSagaSpec
from steadfast.binding import Binding, Bindings, instance_id
from steadfast.kube import api_client
from steadfast.status import conditions
from steadfast.webhooks import DECIDED_BY, REQUESTED_BY
from steadfast.workflows.common import Reporter, run_action, stamp, utc

log = logging.getLogger(__name__)

NAME = "steadfast.approvalrequest"
DECISION_EVENT = "approval_received"
GATE_EVENT = "approval_decided"
SAGA_LABEL = "steadfast.dev/tasksaga"
# Notifying and acting are worth a few tries; the Idempotency-Key keeps the effect single.
NOTIFY_RETRY = RetryPolicy(max_attempts=3, initial_interval="1s", backoff_coefficient=2, max_interval="5s")
ACTION_RETRY = RetryPolicy(max_attempts=3, initial_interval="1s", backoff_coefficient=2, max_interval="10s")
APPROVED_PHASES = frozenset(
    {ApprovalPhase.APPROVED, ApprovalPhase.EXECUTING, ApprovalPhase.COMPLETED, ApprovalPhase.ACTION_FAILED}
)
_CONDITION_STATE = {
    ApprovalPhase.COMPLETED: "ready",
    ApprovalPhase.REJECTED: "stalled",
    ApprovalPhase.TIMED_OUT: "stalled",
    ApprovalPhase.ACTION_FAILED: "stalled",
}


# ---- pure rules ----------------------------------------------------------------------------------


def screen(decision: Mapping[str, Any], approvals: list[dict[str, Any]], requester: str | None) -> str | None:
    """Why a decision event must not count (None: it counts). A second word from the same user never does."""
    user = decision.get("user")
    if not user:
        return "a decision without an authenticated user was ignored"
    if decision.get("approved") and user == requester:
        return f"{user} requested this and may not approve it"
    if any(a["user"] == user for a in approvals):
        return f"{user} has already decided; only the first decision of each approver counts"
    return None


def tally(approvals: list[dict[str, Any]], required: int) -> ApprovalPhase | None:
    """Rejected on any rejection, Approved once `required` distinct users approved, else still open."""
    if any(not a["approved"] for a in approvals):
        return ApprovalPhase.REJECTED
    if len({a["user"] for a in approvals if a["approved"]}) >= required:
        return ApprovalPhase.APPROVED
    return None


# ---- the workflow --------------------------------------------------------------------------------


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


# ---- what the binding needs from the resource ----------------------------------------------------


def extra_input(body: dict[str, Any]) -> dict[str, Any]:
    """The authenticated requester (stamped at admission) and the creation time the timeout counts from."""
    meta = body.get("metadata") or {}
    return {
        "requestedBy": (meta.get("annotations") or {}).get(REQUESTED_BY),
        "createdAt": meta.get("creationTimestamp"),
    }


def decision_payload(body: dict[str, Any]) -> dict[str, Any] | None:
    """The `approval_received` event for the current spec.decision, with the user admission recorded."""
    meta = body.get("metadata") or {}
    decision = (body.get("spec") or {}).get("decision")
    if not decision:
        return None
    user = (meta.get("annotations") or {}).get(DECIDED_BY)
    if not user:
        log.warning(
            "decision on %s/%s ignored: no %s annotation (are the admission webhooks running?)",
            meta.get("namespace"),
            meta.get("name"),
            DECIDED_BY,
        )
        return None
    return {
        "user": user,
        "approved": bool(decision.get("approved")),
        "reason": decision.get("reason"),
        "generation": int(meta.get("generation") or 1),
    }


# ---- the TaskSaga gate ---------------------------------------------------------------------------


def gate_request_name(saga_name: str) -> str:
    """The name of a saga's ApprovalRequest: deterministic, within the 253-character limit."""
    name = f"{saga_name}-approval"
    if len(name) <= 253:
        return name
    return f"{saga_name[:230]}-{hashlib.sha256(saga_name.encode()).hexdigest()[:8]}-approval"


def gate_request(saga: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ApprovalRequest a saga's gate needs, or None when its spec.approval does not apply."""
    spec = TaskSagaSpec.model_validate(saga.get("spec") or {})
    if spec.approval is None or not spec.needs_approval():
        return None
    meta = saga["metadata"]
    requester = (meta.get("annotations") or {}).get(REQUESTED_BY)
    task = spec.task
    subject: dict[str, Any] = {
        "title": f"Run TaskSaga {meta['name']}: {task.title or task.id}"[:256],
        "description": f"Approve to run the {len(spec.steps)} step(s) of TaskSaga {meta['namespace']}/"
        f"{meta['name']} (task {task.id}, priority {task.priority or 'unset'}).",
    }
    if requester:
        subject["requester"] = requester
    return {
        "apiVersion": APPROVAL_REQUEST.api_version,
        "kind": APPROVAL_REQUEST.kind,
        "metadata": {
            "name": gate_request_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {SAGA_LABEL: meta["name"][:63].rstrip("-.")},
            "annotations": {REQUESTED_BY: requester} if requester else {},
            "ownerReferences": [
                {
                    "apiVersion": TASK_SAGA.api_version,
                    "kind": TASK_SAGA.kind,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {"subject": subject, "approvers": spec.approval.approvers.to_wire(), "timeout": spec.approval.timeout},
    }


def gate_outcome(apr: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `approval_decided` event for a saga once its request left Pending, else None."""
    status = apr.get("status") or {}
    try:
        phase = ApprovalPhase(str(status.get("phase")))
    except ValueError:
        return None
    if phase == ApprovalPhase.PENDING:
        return None
    return {
        "approved": phase in APPROVED_PHASES,
        "phase": phase.value,
        "approver": status.get("approver"),
        "reason": status.get("reason") or phase.value,
    }


def _saga_owner(apr: Mapping[str, Any]) -> dict[str, str] | None:
    meta = apr.get("metadata") or {}
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == TASK_SAGA.kind and owner.get("apiVersion") == TASK_SAGA.api_version:
            return {"namespace": meta["namespace"], "name": owner["name"], "uid": owner["uid"]}
    return None


def register_handlers(
    bindings: Bindings, registry: kopf.OperatorRegistry, binding: Binding, saga_binding: Binding
) -> None:
    """kopf handlers: decisions to the workflow; a gated saga's ApprovalRequest and its outcome to the saga.

    Decisions have their own field handler rather than a generic `Signal`: the first decision changes
    spec.decision from nothing, which the generic one reads as creation. After every start (a resume
    included), a decision whose decider is not yet in status.approvals is sent again (the workflow ignores
    a repeat).
    """

    async def decided(body: kopf.Body, **_: Any) -> None:
        data = decision_payload(dict(body))
        if data is not None:
            await bindings.signal(binding, body, DECISION_EVENT, data)

    async def catch_up(body: kopf.Body, _logger: kopf.Logger) -> None:
        status = body.get("status") or {}
        data = decision_payload(dict(body))
        recorded = {a.get("user") for a in status.get("approvals") or []}
        if data is not None and status.get("phase") == ApprovalPhase.PENDING.value and data["user"] not in recorded:
            await bindings.signal(binding, body, DECISION_EVENT, data)

    objects: list[client.CustomObjectsApi] = []

    def api() -> client.CustomObjectsApi:
        if not objects:
            objects.append(client.CustomObjectsApi(api_client()))
        return objects[0]

    async def tell_saga(owner: dict[str, str], data: dict[str, Any], logger: Any) -> None:
        iid = instance_id(TASK_SAGA, owner["namespace"], owner["name"], owner["uid"])
        state = await asyncio.to_thread(bindings.client.get_workflow_state, iid, fetch_payloads=False)
        if state is None or state.runtime_status != WorkflowStatus.RUNNING:
            return  # the saga has moved on (or is gone): nothing waits for this outcome
        raw: Any = {"metadata": owner}  # only what Bindings.ref reads
        await bindings.signal(saga_binding, kopf.Body(raw), GATE_EVENT, data)
        logger.info("approval outcome %s sent to TaskSaga %s", data.get("phase"), owner["name"])

    async def ensure(body: kopf.Body, logger: kopf.Logger) -> None:
        if (body.get("status") or {}).get("phase") in {p.value for p in SagaPhase if p.terminal}:
            return
        try:
            manifest = gate_request(dict(body))
        except ValueError:
            return  # an invalid spec is the binding's to report
        if manifest is None:
            return
        meta = body["metadata"]
        name = manifest["metadata"]["name"]
        try:
            await asyncio.to_thread(
                api().create_namespaced_custom_object,
                APPROVAL_REQUEST.group,
                APPROVAL_REQUEST.version,
                meta["namespace"],
                APPROVAL_REQUEST.plural,
                manifest,
            )
            logger.info("created ApprovalRequest %s for the approval gate", name)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise kopf.TemporaryError(
                    f"cannot create ApprovalRequest {name}: HTTP {exc.status} {(exc.body or '')[:300]}", delay=2
                ) from exc
        existing = await asyncio.to_thread(
            api().get_namespaced_custom_object,
            APPROVAL_REQUEST.group,
            APPROVAL_REQUEST.version,
            meta["namespace"],
            APPROVAL_REQUEST.plural,
            name,
        )
        owner = _saga_owner(existing)
        if owner is None or owner["uid"] != meta["uid"]:
            owner = {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}
            await tell_saga(
                owner,
                {
                    "approved": False,
                    "phase": "Rejected",
                    "reason": f"an ApprovalRequest named {name} exists and is not this saga's",
                },
                logger,
            )

    async def outcome(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        owner = _saga_owner(body)
        data = gate_outcome(body)
        if owner is not None and data is not None:
            await tell_saga(owner, data, logger)

    async def deleted(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        owner = _saga_owner(body)
        if owner is not None and gate_outcome(body) is None:
            await tell_saga(
                owner,
                {
                    "approved": False,
                    "phase": "Rejected",
                    "reason": f"ApprovalRequest {body['metadata']['name']} was deleted undecided",
                },
                logger,
            )

    aprs = (APPROVAL_REQUEST.group, APPROVAL_REQUEST.version, APPROVAL_REQUEST.plural)
    kopf.on.field(*aprs, field="spec.decision", registry=registry, id="decision")(decided)
    bindings.after_start(binding, catch_up)
    bindings.after_start(saga_binding, ensure)
    kopf.on.event(*aprs, registry=registry, id="gate-outcome", when=lambda body, **_: _saga_owner(body) is not None)(
        outcome
    )
    kopf.on.delete(*aprs, registry=registry, id="gate-deleted", optional=True)(deleted)
