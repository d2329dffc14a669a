"""ApprovalRequest admission as pure functions: who asked, who decided, who may decide, finality."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from steadfast.api.kinds import DECIDED_BY, REQUESTED_BY, REQUESTED_GROUPS, SEAL
from steadfast.approval.admission import approval_stamps, check_approval
from steadfast.identity import User

OPERATOR = "system:serviceaccount:steadfast:operator"
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
ALICE = User("alice", frozenset({"approvers"}))
BOB = User("bob", frozenset({"approvers"}))
DAVE = User("dave", frozenset({"sre"}))
MALLORY = User("mallory")


def apr(
    *,
    requester: str | None = "bob",
    decided_by: str | None = None,
    decision: dict[str, Any] | None = None,
    phase: str | None = "Pending",
    approvals: list[dict[str, Any]] | None = None,
    typed: str | None = None,
    expires: str = "2030-01-01T01:00:00Z",
    owners: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    annotations = {k: v for k, v in ((REQUESTED_BY, requester), (DECIDED_BY, decided_by)) if v is not None}
    spec: dict[str, Any] = {
        "subject": {"title": "t", **({"requester": typed} if typed else {})},
        "approvers": {"users": ["alice", "bob"], "groups": ["sre"], "required": 1},
    }
    if decision is not None:
        spec["decision"] = decision
    status = {"phase": phase, "expiresAt": expires, "approvals": approvals or []} if phase else {}
    return {
        "metadata": {"name": "r", "namespace": "ns", "annotations": annotations, "ownerReferences": owners or []},
        "spec": spec,
        "status": status,
    }


def decide(user: User, old: dict[str, Any], approved: bool = True, reason: str | None = "ok") -> str | None:
    """Run a decision through mutation then validation, as the API server does."""
    new = {
        **old,
        "spec": {**old["spec"], "decision": {"approved": approved, "reason": reason}},
        "metadata": {**old["metadata"], "annotations": dict(old["metadata"]["annotations"])},
    }
    new["metadata"]["annotations"].update(approval_stamps("UPDATE", user, old, new, operator=OPERATOR, namespace="ns"))
    return check_approval("UPDATE", user, old, new, operator=OPERATOR, now=NOW)


def test_create_stamps_the_authenticated_requester() -> None:
    new = apr(requester="alice", phase=None)
    stamps = approval_stamps("CREATE", MALLORY, None, new, operator=OPERATOR, namespace="ns")
    assert (stamps[REQUESTED_BY], stamps[REQUESTED_GROUPS]) == ("mallory", "[]") and stamps[SEAL]
    # Only the operator may name someone else (a saga gate's request, which carries the operator's own seal).
    sealed = {**new, "metadata": {**new["metadata"], "annotations": {**new["metadata"]["annotations"], SEAL: "x"}}}
    assert approval_stamps("CREATE", User(OPERATOR), None, sealed, operator=OPERATOR, namespace="ns") == {}
    assert approval_stamps("CREATE", User(OPERATOR), None, new, operator=OPERATOR, namespace="ns")[SEAL]
    assert check_approval("CREATE", User(OPERATOR), None, new, operator=OPERATOR, now=NOW) is None


@pytest.mark.parametrize(
    ("obj", "user", "expected"),
    [
        (apr(requester="mallory", typed="alice", phase=None), MALLORY, "spec.subject.requester is 'alice'"),
        (apr(requester="alice", phase=None), MALLORY, f"{REQUESTED_BY} must be the authenticated creator 'mallory'"),
        (apr(requester="bob", decided_by="bob", phase=None), BOB, "cannot be set by hand"),
        (apr(requester="bob", decision={"approved": True}, phase=None), BOB, "cannot be set at creation"),
        (
            apr(requester="bob", phase=None, owners=[{"kind": "TaskSaga", "name": "s", "uid": "u"}]),
            BOB,
            "only the Steadfast operator",
        ),
    ],
)
def test_create_refusals(obj: dict[str, Any], user: User, expected: str) -> None:
    assert expected in (check_approval("CREATE", user, None, obj, operator=OPERATOR, now=NOW) or "")


def test_matching_typed_requester_is_fine() -> None:
    assert check_approval("CREATE", BOB, None, apr(typed="bob", phase=None), operator=OPERATOR, now=NOW) is None


def test_nobody_approves_a_request_whose_requester_is_unknown() -> None:
    # A saga created where admission did not run gets a gate request without a requester: self-approval could
    # not be ruled out, so approving is refused; rejecting is not.
    assert "no recorded requester" in (decide(ALICE, apr(requester=None)) or "")
    assert decide(ALICE, apr(requester=None), approved=False, reason="no") is None


def test_listed_user_and_group_member_may_decide() -> None:
    assert decide(ALICE, apr()) is None
    assert decide(DAVE, apr(), approved=False, reason="no") is None


def test_non_approver_is_refused_naming_the_approvers() -> None:
    message = decide(MALLORY, apr())
    assert message is not None and "mallory may not decide" in message and "alice, bob, group sre" in message


def test_requester_may_not_approve_but_may_reject_if_listed() -> None:
    assert "bob requested" in (decide(BOB, apr()) or "")
    assert decide(BOB, apr(), approved=False, reason="withdrawn") is None


@pytest.mark.parametrize(
    ("phase", "words"), [("Approved", "final"), ("TimedOut", "after a timeout"), (None, "not open yet")]
)
def test_decisions_only_while_pending(phase: str | None, words: str) -> None:
    assert words in (decide(ALICE, apr(phase=phase)) or "")


def test_expired_request_refuses_a_decision_even_before_the_status_says_so() -> None:
    assert "expired" in (decide(ALICE, apr(expires="2029-12-31T23:00:00Z")) or "")


def test_each_approver_decides_once_and_in_turn() -> None:
    recorded = [{"user": "alice", "approved": True}]
    assert "already decided" in (
        decide(
            ALICE, apr(decided_by="alice", decision={"approved": True, "reason": "a"}, approvals=recorded), reason="b"
        )
        or ""
    )
    assert (
        decide(
            BOB,
            apr(requester="dave", decided_by="alice", decision={"approved": True, "reason": "a"}, approvals=recorded),
            reason="b",
        )
        is None
    )
    unrecorded = apr(requester="dave", decided_by="alice", decision={"approved": True, "reason": "a"})
    assert "still being recorded" in (decide(BOB, unrecorded, reason="b") or "")


def test_stamps_cannot_be_forged_or_changed() -> None:
    old = apr()
    forged = {**old, "metadata": {**old["metadata"], "annotations": {REQUESTED_BY: "bob", DECIDED_BY: "alice"}}}
    assert approval_stamps("UPDATE", MALLORY, old, forged, operator=OPERATOR, namespace="ns") == {}
    assert "cannot be set, changed or removed" in (
        check_approval("UPDATE", MALLORY, old, forged, operator=OPERATOR, now=NOW) or ""
    )
    moved = {**old, "metadata": {**old["metadata"], "annotations": {REQUESTED_BY: "mallory"}}}
    assert "cannot be set, changed or removed" in (
        check_approval("UPDATE", BOB, old, moved, operator=OPERATOR, now=NOW) or ""
    )
    # An update that touches neither the decision nor the stamps (kopf's own bookkeeping) passes.
    assert check_approval("UPDATE", User(OPERATOR), old, old, operator=OPERATOR, now=NOW) is None
