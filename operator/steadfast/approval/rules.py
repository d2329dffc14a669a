"""The approval rules and the TaskSaga gate, as pure functions of resources (no engine, no cluster).

Decisions arrive as `approval_received` events carrying the user the admission webhook recorded (never a
typed name): `screen` says whether one counts, `tally` what the count decides. A TaskSaga whose
spec.approval applies gets an ApprovalRequest it owns (`gate_request`); once that request leaves Pending,
`gate_outcome` is the `approval_decided` event the saga workflow waits for.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from steadfast.api.approval import ApprovalPhase, ApprovalRecord, ApprovalRequestSpec
from steadfast.api.kinds import APPROVAL_REQUEST, DECIDED_BY, REQUESTED_BY, REQUESTED_GROUPS, TASK_SAGA
from steadfast.api.saga import TaskSagaSpec
from steadfast.approval.policy import EffectiveGate
from steadfast.records import ObjectRef, Record, WorkflowInput
from steadfast.text import shown

log = logging.getLogger(__name__)

DECISION_EVENT = "approval_received"
GATE_EVENT = "approval_decided"
SAGA_LABEL = "steadfast.dev/tasksaga"
APPROVED_PHASES = frozenset(
    {ApprovalPhase.APPROVED, ApprovalPhase.EXECUTING, ApprovalPhase.COMPLETED, ApprovalPhase.ACTION_FAILED}
)


class ApprovalInput(WorkflowInput[ApprovalRequestSpec]):
    """The ApprovalRequest workflow's input: the authenticated requester, and when the timeout started."""

    requested_by: str | None = None
    created_at: datetime | None = None


class DecisionEvent(Record):
    """The `approval_received` event: a decision with the user admission recorded (never a typed name)."""

    user: str | None = None
    approved: bool = False
    reason: str | None = None
    generation: int = 0


class GateOutcome(Record):
    """The `approval_decided` event a gated saga waits for."""

    approved: bool = False
    phase: ApprovalPhase = ApprovalPhase.REJECTED
    approver: str | None = None
    reason: str = ""


def screen(decision: DecisionEvent, approvals: Sequence[ApprovalRecord], requester: str | None) -> str | None:
    """Why a decision event must not count (None: it counts). A second word from the same user never does."""
    user = decision.user
    if not user:
        return "a decision without an authenticated user was ignored"
    if decision.approved and user == requester:
        return f"{user} requested this and may not approve it"
    if any(a.user == user for a in approvals):
        return f"{user} has already decided; only the first decision of each approver counts"
    return None


def tally(approvals: Sequence[ApprovalRecord], required: int) -> ApprovalPhase | None:
    """Rejected on any rejection, Approved once `required` distinct users approved, else still open."""
    if any(not a.approved for a in approvals):
        return ApprovalPhase.REJECTED
    if len({a.user for a in approvals if a.approved}) >= required:
        return ApprovalPhase.APPROVED
    return None


# ---- what the binding needs from the resource ----------------------------------------------------


def workflow_input(ref: ObjectRef, generation: int, spec: Any, body: Mapping[str, Any]) -> ApprovalInput:
    """The authenticated requester (stamped at admission) and the creation time the timeout counts from."""
    meta = body.get("metadata") or {}
    return ApprovalInput(
        ref=ref,
        generation=generation,
        spec=spec,
        requested_by=(meta.get("annotations") or {}).get(REQUESTED_BY),
        created_at=meta.get("creationTimestamp"),
    )


def decision_payload(body: Mapping[str, Any]) -> DecisionEvent | None:
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
    return DecisionEvent(
        user=user,
        approved=bool(decision.get("approved")),
        reason=decision.get("reason"),
        generation=int(meta.get("generation") or 1),
    )


# ---- the TaskSaga gate ---------------------------------------------------------------------------


def gate_request_name(saga_name: str) -> str:
    """The name of a saga's ApprovalRequest: deterministic, within the 253-character limit."""
    name = f"{saga_name}-approval"
    if len(name) <= 253:
        return name
    return f"{saga_name[:230]}-{hashlib.sha256(saga_name.encode()).hexdigest()[:8]}-approval"


def gate_request(saga: Mapping[str, Any], gate: EffectiveGate) -> dict[str, Any]:
    """The ApprovalRequest of a saga's gate (resolved when the saga started: its spec's and the policies')."""
    spec = TaskSagaSpec.model_validate(saga.get("spec") or {})
    meta = saga["metadata"]
    annotations = meta.get("annotations") or {}
    requester = annotations.get(REQUESTED_BY)
    task = spec.task
    subject: dict[str, Any] = {
        "title": f"Run TaskSaga {meta['name']}: {task.title or task.id}"[:256],
        "description": f"Approve to run the {len(spec.steps)} step(s) of TaskSaga {meta['namespace']}/"
        f"{meta['name']} (task {task.id}, priority {task.priority or 'unset'})"
        + (f"; required by SteadfastPolicy {', '.join(gate.rules)}." if gate.rules else "."),
    }
    subject = {key: shown(value)[: 256 if key == "title" else 4096] for key, value in subject.items()}
    if requester:
        subject["requester"] = requester
    return {
        "apiVersion": APPROVAL_REQUEST.api_version,
        "kind": APPROVAL_REQUEST.kind,
        "metadata": {
            "name": gate_request_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {SAGA_LABEL: meta["name"][:63].rstrip("-.")},
            "annotations": {
                key: value
                for key, value in ((REQUESTED_BY, requester), (REQUESTED_GROUPS, annotations.get(REQUESTED_GROUPS)))
                if value is not None
            },
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
        "spec": {"subject": subject, "approvers": gate.approvers.to_wire(), "timeout": gate.timeout},
    }


def gate_outcome(apr: Mapping[str, Any]) -> GateOutcome | None:
    """The `approval_decided` event for a saga once its request left Pending, else None."""
    status = apr.get("status") or {}
    try:
        phase = ApprovalPhase(str(status.get("phase")))
    except ValueError:
        return None
    if phase == ApprovalPhase.PENDING:
        return None
    return GateOutcome(
        approved=phase in APPROVED_PHASES,
        phase=phase,
        approver=status.get("approver"),
        reason=status.get("reason") or phase.value,
    )


def saga_owner(apr: Mapping[str, Any]) -> dict[str, str] | None:
    meta = apr.get("metadata") or {}
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == TASK_SAGA.kind and owner.get("apiVersion") == TASK_SAGA.api_version:
            return {"namespace": meta["namespace"], "name": owner["name"], "uid": owner["uid"]}
    return None
