"""The approval workflow's pure rules and the gate's manifests (no engine, no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from steadfast.api.approval import ApprovalPhase, ApprovalRecord, ApprovalRequestSpec
from steadfast.api.kinds import DECIDED_BY, REQUESTED_BY
from steadfast.api.saga import TaskSagaSpec
from steadfast.approval.policy import effective_gate
from steadfast.approval.rules import (
    DecisionEvent,
    GateOutcome,
    decision_payload,
    gate_outcome,
    gate_request,
    gate_request_name,
    screen,
    tally,
    workflow_input,
)
from steadfast.records import ObjectRef


def record(user: str, approved: bool = True) -> ApprovalRecord:
    return ApprovalRecord(user=user, approved=approved, reason=None)


def decision(**fields: Any) -> DecisionEvent:
    return DecisionEvent.model_validate(fields)


def test_tally_quorum_and_any_rejection() -> None:
    assert tally([], 1) is None
    assert tally([record("alice")], 2) is None
    assert tally([record("alice"), record("bob")], 2) == ApprovalPhase.APPROVED
    assert tally([record("alice"), record("bob", approved=False)], 1) == ApprovalPhase.REJECTED


def test_screen_ignores_unauthenticated_self_and_repeated_decisions() -> None:
    assert screen(decision(approved=True), [], "bob") is not None
    assert "may not approve" in (screen(decision(user="bob", approved=True), [], "bob") or "")
    assert screen(decision(user="bob", approved=False), [], "bob") is None  # withdrawing is allowed
    assert "already decided" in (screen(decision(user="alice", approved=True), [record("alice")], "bob") or "")
    assert screen(decision(user="alice", approved=True), [], "bob") is None


def test_decision_payload_needs_the_admission_stamp() -> None:
    body: dict[str, Any] = {
        "metadata": {"generation": 3, "annotations": {DECIDED_BY: "alice"}},
        "spec": {"decision": {"approved": True, "reason": "ok"}},
    }
    assert decision_payload(body) == decision(user="alice", approved=True, reason="ok", generation=3)
    body["metadata"]["annotations"] = {}
    assert decision_payload(body) is None  # no authenticated decider: never a decision
    assert decision_payload({"metadata": {}, "spec": {}}) is None


def test_workflow_input_carries_requester_and_creation_time() -> None:
    body = {"metadata": {"annotations": {REQUESTED_BY: "bob"}, "creationTimestamp": "2030-01-01T00:00:00Z"}}
    spec = ApprovalRequestSpec.model_validate({"subject": {"title": "t"}, "approvers": {"users": ["alice"]}})
    ref = ObjectRef("g", "v1", "ApprovalRequest", "approvalrequests", "ns", "n", "u")
    given = workflow_input(ref, 1, spec, body)
    assert (given.requested_by, given.created_at) == ("bob", datetime(2030, 1, 1, tzinfo=UTC))
    assert given.wire()["requestedBy"] == "bob" and given.wire()["createdAt"] == "2030-01-01T00:00:00Z"


def saga(priority: str, requester: str | None = "dave") -> dict[str, Any]:
    return {
        "metadata": {
            "name": "s1",
            "namespace": "ns",
            "uid": "u-1",
            "annotations": {REQUESTED_BY: requester} if requester else {},
        },
        "spec": {
            "task": {"id": "t", "priority": priority},
            "steps": [{"name": "a", "action": {"http": {"url": "http://x.svc/a"}}}],
            "approval": {"priorities": ["high"], "approvers": {"users": ["alice"]}, "timeout": "1h"},
        },
    }


def test_gate_request_is_owned_and_carries_the_saga_creator() -> None:
    body = saga("high")
    gate = effective_gate(TaskSagaSpec.model_validate(body["spec"]), {}, {}, [])
    assert gate is not None
    manifest = gate_request(body, gate)
    meta = manifest["metadata"]
    assert meta["name"] == "s1-approval" == gate_request_name("s1")
    assert meta["annotations"] == {REQUESTED_BY: "dave"}
    assert meta["ownerReferences"][0]["uid"] == "u-1" and meta["ownerReferences"][0]["controller"] is True
    spec = ApprovalRequestSpec.model_validate(manifest["spec"])
    assert spec.subject.requester == "dave" and spec.timeout == "1h" and spec.approvers.users == ["alice"]
    assert effective_gate(TaskSagaSpec.model_validate(saga("low")["spec"]), {}, {}, []) is None


def test_gate_request_name_fits_the_limit() -> None:
    name = gate_request_name("x" * 253)
    assert len(name) <= 253 and name.endswith("-approval") and name != gate_request_name("x" * 252 + "y")


def test_gate_outcome_only_once_decided() -> None:
    assert gate_outcome({"status": {"phase": "Pending"}}) is None
    assert gate_outcome({"status": {}}) is None
    approved = gate_outcome({"status": {"phase": "Approved", "approver": "alice"}})
    assert approved is not None and approved.approved is True
    rejected = gate_outcome({"status": {"phase": "TimedOut", "reason": "no decision"}})
    assert rejected == GateOutcome(approved=False, phase=ApprovalPhase.TIMED_OUT, approver=None, reason="no decision")


def test_gate_request_shows_the_authors_title_with_controls_escaped() -> None:
    """A bidi override in the title cannot make approvers read another text than the author wrote."""
    body = saga("high")
    body["spec"]["task"]["title"] = "Rotate keys \u202eyap.knab\u202c " + "\u200b" * 200
    gate = effective_gate(TaskSagaSpec.model_validate(body["spec"]), {}, {}, [])
    assert gate is not None
    subject = ApprovalRequestSpec.model_validate(gate_request(body, gate)["spec"]).subject
    assert subject.title.startswith("Run TaskSaga s1: Rotate keys \\u202eyap.knab\\u202c \\u200b")
    assert len(subject.title) <= 256 and "\u202e" not in (subject.description or "")
