"""The ApprovalRequest workflow's rules, on the local engine with fake activities (no API server).

Decisions arrive as the events the operator raises after admission recorded the decider; the tests raise
them directly, so quorum, self-approval, rejection, timeout and the action are checked in milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from workflow_fakes import SERVICE, Harness, Subject

from steadfast.api.approval import ApprovalRequestSpec
from steadfast.api.kinds import APPROVAL_REQUEST
from steadfast.api.repair import RepairAction
from steadfast.approval.rules import DECISION_EVENT, DecisionEvent
from steadfast.repair.rules import REPAIR_EVENT, RepairEvent

pytestmark = pytest.mark.engine


def request_spec(*, required: int = 1, timeout: str = "1h", action: bool = True) -> ApprovalRequestSpec:
    return ApprovalRequestSpec.model_validate(
        {
            "subject": {"title": "Deploy v2"},
            "approvers": {"users": ["alice", "bob", "carol"], "required": required},
            "timeout": timeout,
            "notify": {"http": {"method": "POST", "url": f"{SERVICE}/notify"}},
            **({"action": {"http": {"method": "POST", "url": f"{SERVICE}/deploy"}}} if action else {}),
        }
    )


def open_request(harness: Harness, spec: ApprovalRequestSpec, **kw: Any) -> tuple[Subject, str]:
    subject = harness.subject(APPROVAL_REQUEST)
    created = kw.pop("created_at", datetime.now(UTC))
    iid = harness.start_approval(subject, spec, requested_by=kw.pop("requested_by", "dave"), created_at=created)
    subject.log.wait_for(lambda s: s["phase"] == "Pending" and s.get("notifyResult") is not None, "notified")
    return subject, iid


def decide(harness: Harness, iid: str, user: str, approved: bool = True, reason: str | None = None) -> None:
    event = DecisionEvent(user=user, approved=approved, reason=reason, generation=2)
    harness.client.raise_workflow_event(iid, DECISION_EVENT, data=event.wire())


def test_quorum_of_distinct_approvers_then_the_action_runs_once(harness: Harness) -> None:
    subject, iid = open_request(harness, request_spec(required=2))
    decide(harness, iid, "alice", reason="fine")
    one = subject.log.wait_for(lambda s: len(s["approvals"]) == 1, "first approval")
    assert one["phase"] == "Pending" and one["approvals"][0]["user"] == "alice"
    decide(harness, iid, "alice", reason="again")  # a second word from the same approver never counts
    decide(harness, iid, "bob")
    out = harness.finish(iid)
    status = subject.log.latest()

    assert out["phase"] == "Completed" and status["phase"] == "Completed"
    assert [a["user"] for a in status["approvals"]] == ["alice", "bob"]
    assert status["approver"] == "bob" and status["actionResult"]["succeeded"] is True
    assert status["notifyResult"]["succeeded"] is True
    assert [c.what for c in subject.service.calls] == ["notify", "action"]
    assert "DecisionIgnored" in subject.log.reasons()
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"


def test_the_requester_may_not_approve_and_any_rejection_rejects(harness: Harness) -> None:
    subject, iid = open_request(harness, request_spec(), requested_by="alice")
    decide(harness, iid, "alice")  # self-approval: ignored
    decide(harness, iid, "bob", approved=False, reason="not now")
    out = harness.finish(iid)
    status = subject.log.latest()

    assert out == {"phase": "Rejected", "approver": "bob", "reason": "rejected by bob: not now"}
    assert status["approvals"] == [
        {"user": "bob", "approved": False, "reason": "not now", "at": status["approvals"][0]["at"]}
    ]
    assert [c.what for c in subject.service.calls] == ["notify"]  # the action never ran
    assert {c["type"]: c["status"] for c in status["conditions"]}["Stalled"] == "True"


def test_undecided_request_times_out_counted_from_creation(harness: Harness) -> None:
    # Created 59 minutes ago with a 1h timeout: an operator restart neither restarts nor extends the wait.
    created = datetime.now(UTC) - timedelta(minutes=59, seconds=58)
    subject, iid = open_request(harness, request_spec(timeout="1h"), created_at=created)
    out = harness.finish(iid)
    status = subject.log.latest()

    assert out["phase"] == "TimedOut" and status["phase"] == "TimedOut"
    assert status["expiresAt"] == (created + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "no decision within 1h" in status["reason"]
    assert [c.what for c in subject.service.calls] == ["notify"]


def test_a_failing_action_ends_action_failed_after_its_retries(harness: Harness) -> None:
    subject, iid = open_request(harness, request_spec())
    subject.service.fail("/deploy")
    decide(harness, iid, "carol")
    status = subject.log.wait_for(lambda s: s["phase"] == "ActionFailed", "ActionFailed")

    assert status["actionResult"]["succeeded"] is False and status["actionResult"]["attempts"] == 3
    assert status["actionResult"]["statusCode"] == 503
    assert len(subject.service.calls_to("/deploy")) == 3
    # It waits for a person: a Retry, once the target is back, runs the action again with the same key.
    subject.service.script("/deploy", then=True)
    event = RepairEvent(action=RepairAction.RETRY, user="erin", generation=3)
    harness.client.raise_workflow_event(iid, REPAIR_EVENT, data=event.wire())
    out = harness.finish(iid)
    status = subject.log.latest()
    assert out["phase"] == "Completed" and status["actionResult"]["attempts"] == 4
    assert len({c.key for c in subject.service.calls_to("/deploy")}) == 1
    assert status["decisions"][0]["user"] == "erin" and "RepairRetry" in subject.log.reasons()
