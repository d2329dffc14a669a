"""The approval workflow's pure rules and the gate's manifests (no engine, no cluster)."""

from __future__ import annotations

import copy
import time
from typing import Any

from steadfast.api.approval import ApprovalPhase, ApprovalRecord, ApprovalRequestSpec
from steadfast.api.kinds import DECIDED_BY, REQUESTED_BY, SEAL
from steadfast.api.saga import TaskSagaSpec
from steadfast.approval.admission import approval_stamps
from steadfast.approval.policy import effective_gate
from steadfast.approval.rules import (
    DecisionEvent,
    GateOutcome,
    asks_the_gate,
    decision_payload,
    gate_of,
    gate_outcome,
    gate_request,
    gate_request_name,
    screen,
    tally,
    workflow_input,
)
from steadfast.identity import User
from steadfast.records import ObjectRef
from steadfast.webhooks import saga_stamps

DAVE = User("dave", frozenset({"sre"}))


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


def sealed_decision(user: User, approved: bool, reason: str) -> dict[str, Any]:
    old: dict[str, Any] = {
        "kind": "ApprovalRequest",
        "metadata": {"name": "r", "namespace": "ns", "uid": "r-1", "generation": 2, "annotations": {}},
        "spec": {"approvers": {"users": ["alice"]}},
    }
    new = copy.deepcopy(old)
    new["spec"]["decision"] = {"approved": approved, "reason": reason}
    new["metadata"]["annotations"] = approval_stamps("UPDATE", user, old, new, operator="op", namespace="ns")
    new["metadata"]["generation"] = 3
    return new


def test_decision_payload_needs_the_sealed_admission_stamp() -> None:
    body = sealed_decision(User("alice"), True, "ok")
    assert decision_payload(body) == decision(user="alice", approved=True, reason="ok", generation=3)
    typed = copy.deepcopy(body)
    typed["metadata"]["annotations"] = {DECIDED_BY: "alice"}
    assert decision_payload(typed) is None  # typed where admission did not run: never a decision
    flipped = copy.deepcopy(body)
    flipped["spec"]["decision"]["approved"] = False
    assert decision_payload(flipped) is None  # the seal vouches for another verdict
    assert decision_payload({"metadata": {}, "spec": {}}) is None


def now_stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def test_workflow_input_carries_the_sealed_requester_and_creation_time() -> None:
    raw = {"subject": {"title": "t"}, "approvers": {"users": ["alice"]}}
    new: dict[str, Any] = {"kind": "ApprovalRequest", "metadata": {"name": "n", "namespace": "ns"}, "spec": raw}
    stamps = approval_stamps("CREATE", User("bob"), None, new, operator="op", namespace="ns")
    created = now_stamp()
    body = {**new, "metadata": {**new["metadata"], "annotations": stamps, "creationTimestamp": created}}
    spec = ApprovalRequestSpec.model_validate(raw)
    ref = ObjectRef("g", "v1", "ApprovalRequest", "approvalrequests", "ns", "n", "u")
    given = workflow_input(ref, 1, spec, body)
    assert given.requested_by == "bob" and given.wire()["createdAt"] == created
    typed = {**body, "metadata": {**body["metadata"], "annotations": {REQUESTED_BY: "bob"}}}
    assert workflow_input(ref, 1, spec, typed).requested_by is None


def saga(priority: str, requester: User | None = DAVE) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "TaskSaga",
        "metadata": {"name": "s1", "namespace": "ns", "uid": "u-1", "generation": 1, "creationTimestamp": now_stamp()},
        "spec": {
            "task": {"id": "t", "priority": priority},
            "steps": [{"name": "a", "action": {"http": {"url": "http://x.svc/a"}}}],
            "approval": {"priorities": ["high"], "approvers": {"users": ["alice"]}, "timeout": "1h"},
        },
    }
    body["metadata"]["annotations"] = (
        saga_stamps("CREATE", requester, body, namespace="ns") if requester else {REQUESTED_BY: "dave"}
    )
    return body


def test_gate_request_is_sealed_for_its_saga_and_carries_the_sealed_creator() -> None:
    body = saga("high")
    gate = effective_gate(TaskSagaSpec.model_validate(body["spec"]), {}, {}, [])
    assert gate is not None
    manifest = gate_request(body, gate, now=time.time())
    meta = manifest["metadata"]
    assert meta["name"] == "s1-approval" == gate_request_name("s1")
    assert meta["annotations"][REQUESTED_BY] == "dave" and meta["annotations"][SEAL]
    spec = ApprovalRequestSpec.model_validate(manifest["spec"])
    assert spec.subject.requester == "dave" and spec.timeout == "1h" and spec.approvers.users == ["alice"]
    created = {**manifest, "metadata": {**meta, "uid": "r-1", "creationTimestamp": now_stamp()}}
    assert gate_of(created) == {"namespace": "ns", "name": "s1", "uid": "u-1"}
    assert asks_the_gate(manifest["spec"], gate)
    # Re-pointing another request at the saga (an owner reference, a copied seal) does not make it the gate.
    other = copy.deepcopy(created)
    other["metadata"]["name"] = "old-approved-request"
    assert gate_of(other) is None
    squatter = copy.deepcopy(created)
    del squatter["metadata"]["annotations"][SEAL]
    squatter["metadata"]["name"] = "old-approved-request"
    assert gate_of(squatter) is None
    assert not asks_the_gate({**manifest["spec"], "approvers": {"users": ["mallory"]}}, gate)
    assert effective_gate(TaskSagaSpec.model_validate(saga("low")["spec"]), {}, {}, []) is None


def test_a_saga_without_a_sealed_creator_gets_a_gate_request_without_requester() -> None:
    body = saga("high", requester=None)
    gate = effective_gate(TaskSagaSpec.model_validate(body["spec"]), {}, {}, [])
    assert gate is not None
    manifest = gate_request(body, gate, now=time.time())
    assert REQUESTED_BY not in manifest["metadata"]["annotations"]
    assert "requester" not in manifest["spec"]["subject"]


def test_gate_request_name_fits_the_limit() -> None:
    name = gate_request_name("x" * 253)
    assert len(name) <= 253 and name.endswith("-approval") and name != gate_request_name("x" * 252 + "y")


def test_gate_outcome_comes_from_the_workflow_output_once_decided() -> None:
    assert gate_outcome({"phase": "Pending"}) is None
    assert gate_outcome({}) is None
    assert gate_outcome(None) is None
    approved = gate_outcome({"phase": "Approved", "approver": "alice"})
    assert approved is not None and approved.approved is True
    rejected = gate_outcome({"phase": "TimedOut", "reason": "no decision"})
    assert rejected == GateOutcome(approved=False, phase=ApprovalPhase.TIMED_OUT, approver=None, reason="no decision")


def test_gate_request_shows_the_authors_title_with_controls_escaped() -> None:
    """A bidi override in the title cannot make approvers read another text than the author wrote."""
    body = saga("high")
    body["spec"]["task"]["title"] = "Rotate keys \u202eyap.knab\u202c " + "\u200b" * 200
    gate = effective_gate(TaskSagaSpec.model_validate(body["spec"]), {}, {}, [])
    assert gate is not None
    subject = ApprovalRequestSpec.model_validate(gate_request(body, gate, now=time.time())["spec"]).subject
    assert subject.title.startswith("Run TaskSaga s1: Rotate keys \\u202eyap.knab\\u202c \\u200b")
    assert len(subject.title) <= 256 and "\u202e" not in (subject.description or "")
