"""Admission of ApprovalRequests: who asked, who decided, who may decide, and that a decision is final.

Pure functions of (operation, user, old, new), tested without a cluster; `steadfast.webhooks` serves them.
A decision counts only if the validating webhook allowed it, so the workflow trusts the recorded decider.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

from steadfast import identity, seals
from steadfast.api.kinds import DECIDED_BY, DECISION_SEAL, REQUESTED_BY, REQUESTED_GROUPS, SEAL, TASK_SAGA
from steadfast.identity import User


def approval_stamps(
    operation: str,
    user: User,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    *,
    operator: str,
    namespace: str,
) -> dict[str, str]:
    """The annotations the mutating webhook sets: the creator on CREATE, the decider when a decision changes,
    each with its seal.

    Only the operator itself may name another requester: a saga gate's request is on the saga creator's behalf,
    and carries the operator's own gate seal (steadfast.approval.rules.gate_request).
    """
    if operation == "CREATE":
        if user.name == operator and identity.annotations_of(new).get(SEAL):
            return {}
        return identity.creator_stamps(user, new, namespace=namespace)
    if operation == "UPDATE" and identity.spec_of(new).get("decision") != identity.spec_of(old).get("decision"):
        return {
            DECIDED_BY: user.name,
            DECISION_SEAL: seals.decision_seal(old or {}, new or {}, user=user.name, now=time.time()),
        }
    return {}


def may_decide(user: User, approvers: Mapping[str, Any]) -> bool:
    """Listed by name, or a member of a listed group."""
    return user.name in (approvers.get("users") or []) or bool(user.groups & set(approvers.get("groups") or []))


def _parse_time(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def check_approval(
    operation: str,
    user: User,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    *,
    operator: str,
    now: dt.datetime,
) -> str | None:
    """Why this ApprovalRequest change must be refused (the message kubectl shows), or None to allow it."""
    name = identity.name_of(new or old)
    if operation == "CREATE":
        return _check_create(user, new, operator=operator, name=name)
    if operation != "UPDATE":
        return None
    for key in (REQUESTED_BY, REQUESTED_GROUPS, SEAL):
        if problem := identity.stamp_unchanged(key, old, new):
            return problem
    old_decision, new_decision = identity.spec_of(old).get("decision"), identity.spec_of(new).get("decision")
    if old_decision == new_decision:
        return identity.stamp_unchanged(DECIDED_BY, old, new) or identity.stamp_unchanged(DECISION_SEAL, old, new)
    return _check_decision(user, old, new, name=name, now=now)


def _check_create(user: User, new: Mapping[str, Any] | None, *, operator: str, name: str) -> str | None:
    annotations = identity.annotations_of(new)
    for key in (DECIDED_BY, DECISION_SEAL):
        if key in annotations:
            return f"annotation {key} is recorded by Steadfast when an approver decides; it cannot be set by hand"
    if identity.spec_of(new).get("decision") is not None:
        return (
            f"ApprovalRequest {name}: spec.decision cannot be set at creation; approvers decide with "
            "kubectl patch (or steadfast approve/reject) once the request is Pending"
        )
    requester = annotations.get(REQUESTED_BY)
    if user.name != operator:
        if requester != user.name:
            return f"annotation {REQUESTED_BY} must be the authenticated creator {user.name!r}, not {requester!r}"
        owners = [o for o in identity.meta_of(new).get("ownerReferences") or [] if o.get("kind") == TASK_SAGA.kind]
        if owners:
            return (
                f"ApprovalRequest {name}: only the Steadfast operator creates ApprovalRequests owned by a "
                "TaskSaga (they are its approval gate)"
            )
    typed = (identity.spec_of(new).get("subject") or {}).get("requester")
    if typed and typed != requester:
        return (
            f"ApprovalRequest {name}: spec.subject.requester is {typed!r} but the request is made by "
            f"{requester!r} (the authenticated creator); leave it out or make it match"
        )
    return None


def _check_decision(
    user: User, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, *, name: str, now: dt.datetime
) -> str | None:
    status = identity.status_of(old)
    phase = status.get("phase")
    if not phase:
        return f"ApprovalRequest {name} is not open yet (no status): wait until it is Pending, then decide"
    if phase != "Pending":
        after = "after a timeout" if phase == "TimedOut" else "once it is decided"
        return f"ApprovalRequest {name} is {phase}: a decision is final and none is accepted {after}"
    expires = _parse_time(status.get("expiresAt"))
    if expires is not None and now >= expires:
        return f"ApprovalRequest {name} expired at {status['expiresAt']}: no decision is accepted after the timeout"
    if identity.annotations_of(new).get(DECIDED_BY) != user.name:
        return f"annotation {DECIDED_BY} must be the authenticated decider {user.name!r}; it cannot be set by hand"
    approvers = identity.spec_of(old).get("approvers") or {}
    if not may_decide(user, approvers):
        listed = ", ".join([*(approvers.get("users") or []), *(f"group {g}" for g in approvers.get("groups") or [])])
        return (
            f"{user.name} may not decide ApprovalRequest {name}: only the approvers listed in spec.approvers "
            f"may ({listed})"
        )
    approved = bool((identity.spec_of(new).get("decision") or {}).get("approved"))
    requester = identity.annotations_of(old).get(REQUESTED_BY)
    if approved and user.name == requester:
        return f"{user.name} requested ApprovalRequest {name} and may not approve it; another approver must"
    if approved and not requester:
        # A gate of a saga created where admission did not run: whoever asked is unknown, so self-approval
        # could not be ruled out. Rejecting stays possible.
        return (
            f"ApprovalRequest {name} has no recorded requester (its TaskSaga was created without Steadfast's "
            "admission webhook), so nobody may approve it; it can be rejected or left to time out"
        )
    recorded = {a.get("user") for a in status.get("approvals") or []}
    if user.name in recorded:
        return f"{user.name} has already decided ApprovalRequest {name}; each approver decides once"
    previous = identity.annotations_of(old).get(DECIDED_BY)
    if previous and previous not in recorded:
        return f"the decision of {previous} on ApprovalRequest {name} is still being recorded; retry in a few seconds"
    return None
