"""The approval rules and the TaskSaga gate, as pure functions of resources (no engine, no cluster).

Decisions arrive as `approval_received` events carrying the user the admission webhook recorded (never a
typed name): `screen` says whether one counts, `tally` what the count decides. A TaskSaga whose
spec.approval applies gets an ApprovalRequest it owns (`gate_request`); once that request leaves Pending,
`gate_outcome` is the `approval_decided` event the saga workflow waits for.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from steadfast import seals
from steadfast.api.approval import ApprovalPhase, ApprovalRecord, ApprovalRequestSpec
from steadfast.api.kinds import APPROVAL_REQUEST, DECISION_SEAL, REQUESTED_BY, REQUESTED_GROUPS, SEAL, TASK_SAGA
from steadfast.api.retention import Retention
from steadfast.api.saga import TaskSagaSpec
from steadfast.approval.policy import EffectiveGate
from steadfast.records import Actor, ObjectRef, Record, WorkflowInput
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
    # Resolved at start (its spec's, the policies', the operator's; steadfast.retention.policy); None: kept.
    retention: Retention | None = None


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
    """The requester admission sealed (None when no seal holds) and the creation time the timeout counts from."""
    meta = body.get("metadata") or {}
    actor = Actor.of(body)
    return ApprovalInput(
        ref=ref,
        generation=generation,
        spec=spec,
        requested_by=actor.user if actor else None,
        created_at=meta.get("creationTimestamp"),
    )


def decision_payload(body: Mapping[str, Any]) -> DecisionEvent | None:
    """The `approval_received` event for the current spec.decision, with the decider admission sealed.

    A decision whose seal does not hold (typed by hand where admission did not run, or copied) is ignored.
    """
    meta = body.get("metadata") or {}
    decision = (body.get("spec") or {}).get("decision")
    if not decision:
        return None
    annotations = meta.get("annotations") or {}
    try:
        sealed = seals.verify_decision(body, annotations.get(DECISION_SEAL))
    except seals.SealError as exc:
        log.warning(
            "decision on %s/%s ignored: %s (are the admission webhooks running for this namespace?)",
            meta.get("namespace"),
            meta.get("name"),
            exc,
        )
        return None
    return DecisionEvent(
        user=sealed.user,
        approved=bool(sealed.approved),
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


def gate_request(saga: Mapping[str, Any], gate: EffectiveGate, *, now: float) -> dict[str, Any]:
    """The ApprovalRequest of a saga's gate (resolved when the saga started: its spec's and the policies').

    It carries the operator's gate seal: the saga's UID, the sealed creator as requester, and a digest of this
    spec (approvers, timeout), so the operator later recognises its own request and nothing else.
    """
    spec = TaskSagaSpec.model_validate(saga.get("spec") or {})
    meta = saga["metadata"]
    actor = Actor.of(saga)
    requester = actor.user if actor else None
    task = spec.task
    steps = (
        f"{spec.template.kind.value} {spec.template.name} as"
        if spec.template is not None
        else f"the {len(spec.steps)} step(s) of"
    )
    subject: dict[str, Any] = {
        "title": f"Run TaskSaga {meta['name']}: {task.title or task.id}"[:256],
        "description": f"Approve to run {steps} TaskSaga {meta['namespace']}/"
        f"{meta['name']} (task {task.id}, priority {task.priority or 'unset'})"
        + (f"; required by SteadfastPolicy {', '.join(gate.rules)}." if gate.rules else "."),
    }
    subject = {key: shown(value)[: 256 if key == "title" else 4096] for key, value in subject.items()}
    if requester:
        subject["requester"] = requester
    manifest: dict[str, Any] = {
        "apiVersion": APPROVAL_REQUEST.api_version,
        "kind": APPROVAL_REQUEST.kind,
        "metadata": {
            "name": gate_request_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {SAGA_LABEL: meta["name"][:63].rstrip("-.")},
            "annotations": {},
            "ownerReferences": [  # for garbage collection only: never read to decide anything
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
    annotations = manifest["metadata"]["annotations"]
    if actor is not None:
        annotations[REQUESTED_BY] = actor.user
        annotations[REQUESTED_GROUPS] = json.dumps(sorted(actor.groups), separators=(",", ":"), ensure_ascii=False)
    annotations[SEAL] = seals.creator_seal(
        APPROVAL_REQUEST.kind,
        manifest,
        namespace=meta["namespace"],
        user=requester or "",
        groups=actor.groups if actor else [],
        now=now,
        role="gate",
        gate_of=meta["uid"],
    )
    return manifest


def gate_outcome(result: Mapping[str, Any] | None) -> GateOutcome | None:
    """The `approval_decided` event from the gate request's finished workflow (its output), else None.

    Never from the request's status, which whoever may write `approvalrequests/status` could set.
    """
    try:
        phase = ApprovalPhase(str((result or {}).get("phase")))
    except ValueError:
        return None
    if phase == ApprovalPhase.PENDING:
        return None
    return GateOutcome(
        approved=phase in APPROVED_PHASES,
        phase=phase,
        approver=(result or {}).get("approver"),
        reason=(result or {}).get("reason") or phase.value,
    )


def asks_the_gate(spec: Mapping[str, Any], gate: EffectiveGate) -> bool:
    """Whether a request's spec asks exactly the gate's approvers within its timeout (nothing of an author's)."""
    try:
        given = ApprovalRequestSpec.model_validate(dict(spec))
    except ValueError:
        return False
    return given.approvers == gate.approvers and given.timeout == gate.timeout


def gate_of(apr: Mapping[str, Any]) -> dict[str, str] | None:
    """The saga whose gate `apr` is, if the operator's gate seal on it holds; owner references never count.

    A seal binds the saga's UID, the request's namespace and name and its spec: moving it onto another request,
    or changing the approvers, breaks it.
    """
    meta = apr.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    owners = [o for o in meta.get("ownerReferences") or [] if o.get("kind") == TASK_SAGA.kind]
    if SEAL not in annotations:
        # Made by a release before seals: only the request named after its owner, which admission let nobody
        # but the operator create owned by a saga; its approvers are checked against the saga's recorded gate.
        for owner in owners:
            if gate_request_name(str(owner.get("name"))) == meta.get("name"):
                return {"namespace": str(meta.get("namespace") or ""), "name": owner["name"], "uid": owner["uid"]}
        return None
    try:
        sealed = seals.verify_creator(apr, annotations.get(SEAL))
    except seals.SealError:
        return None
    if sealed.role != "gate" or not sealed.gate_of:
        return None
    name = str((meta.get("labels") or {}).get(SAGA_LABEL) or "")
    for owner in owners:  # the saga's name, for messages; the UID is the seal's
        if owner.get("uid") == sealed.gate_of:
            name = str(owner.get("name") or name)
    return {"namespace": str(meta.get("namespace") or ""), "name": name, "uid": sealed.gate_of}
