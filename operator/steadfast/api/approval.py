"""ApprovalRequest: a person decides (with `kubectl patch` on spec.decision) or the timeout rejects.

Who may decide, self-approval and the authenticated approver are the admission webhook's job; the
schema makes what CEL can see hold even without it: only `spec.decision` may change after
creation, a decision cannot be withdrawn, and once the status leaves Pending the decision is final.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from steadfast.api.action import Action, ActionResult, refuse_expressions
from steadfast.api.common import ApiModel, StatusBase, Timestamp
from steadfast.api.duration import DurationCheck
from steadfast.api.repair import MAX_DECISIONS, DecisionRecord, Repair
from steadfast.api.retention import Retention
from steadfast.api.schema import LIST_SET, Cel, rules, unchanged
from steadfast.expressions.language import REQUEST

Name = Annotated[str, Field(min_length=1, max_length=253)]


class Approvers(ApiModel):
    """Who may decide, and how many distinct approvals are needed (any rejection rejects)."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            Cel(
                "(has(self.users) && size(self.users) > 0) || (has(self.groups) && size(self.groups) > 0)",
                "approvers must list at least one user or group",
            ),
            Cel(
                "(has(self.groups) && size(self.groups) > 0) || !has(self.users) || self.required <= size(self.users)",
                "approvers.required cannot exceed the number of listed users when no groups are listed",
                field_path=".required",
            ),
        )
    )

    users: Annotated[list[Name], LIST_SET] = Field(
        default_factory=list, max_length=64, description="User names allowed to decide."
    )
    groups: Annotated[list[Name], LIST_SET] = Field(
        default_factory=list, max_length=64, description="Groups whose members may decide."
    )
    required: int = Field(1, ge=1, le=64, description="Distinct approvals needed to approve.")

    @model_validator(mode="after")
    def _consistent(self) -> Approvers:
        for label, names in (("users", self.users), ("groups", self.groups)):
            if len(set(names)) != len(names):
                raise PydanticCustomError("duplicate", "approvers.{label} lists a name twice", {"label": label})
        if not self.users and not self.groups:
            raise PydanticCustomError("approvers", "approvers must list at least one user or group")
        if not self.groups and self.required > len(self.users):
            raise PydanticCustomError(
                "approvers",
                "approvers.required cannot exceed the number of listed users when no groups are listed",
            )
        return self


class Subject(ApiModel):
    """What is being approved."""

    title: str = Field(min_length=1, max_length=256, description="One line shown to approvers.")
    description: str | None = Field(None, max_length=4096, description="Details for approvers.")
    requester: str | None = Field(
        None,
        max_length=253,
        description="Who asks; if set it must match the authenticated creator (checked at admission).",
    )


class Decision(ApiModel):
    """An approver's decision, set with `kubectl patch`; the approver is recorded from authentication."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            Cel(
                "self.approved || (has(self.reason) && size(self.reason) > 0)",
                "decision.reason is required when rejecting",
                field_path=".reason",
            )
        )
    )

    approved: bool = Field(description="true approves, false rejects.")
    reason: str | None = Field(None, max_length=1024, description="Why; required when rejecting.")

    @model_validator(mode="after")
    def _reason(self) -> Decision:
        if not self.approved and not self.reason:
            raise PydanticCustomError("decision", "decision.reason is required when rejecting")
        return self


_FIXED_FIELDS = [
    ("subject", False),
    ("approvers", False),
    ("timeout", True),
    ("notify", True),
    ("action", True),
    ("retention", True),
]


class ApprovalRequestSpec(ApiModel):
    """A request for a decision. Everything except `decision` (and `repair`) is fixed at creation."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            Cel(
                " && ".join(unchanged(name, optional=opt) for name, opt in _FIXED_FIELDS),
                "only spec.decision may change after an ApprovalRequest is created",
                reason="FieldValueForbidden",
            ),
            Cel(
                "!has(oldSelf.decision) || has(self.decision)",
                "spec.decision cannot be removed once set",
                reason="FieldValueForbidden",
            ),
        )
    )

    subject: Subject = Field(description="What is being approved.")
    approvers: Approvers = Field(description="Who may decide.")
    timeout: Annotated[str, DurationCheck("timeout", minimum="1s", exclusive=False)] = Field(
        "72h", description="Undecided this long, the request is TimedOut (a rejection)."
    )
    notify: Action | None = Field(
        None,
        description=(
            "Sent when the request opens (e.g. a chat webhook); placeholders see request.name, "
            "request.namespace, request.subject, request.requestedBy."
        ),
    )
    action: Action | None = Field(
        None, description="Run once on approval; placeholders see what notify sees and request.approvedBy."
    )
    retention: Retention | None = Field(
        None,
        description="How long the finished request is kept before the operator deletes it, by outcome; unset "
        "outcomes take the namespace's SteadfastPolicy default, then the operator's. A saga's own gate request "
        "has none: it goes with its saga.",
    )
    decision: Decision | None = Field(None, description="Set by an approver with kubectl patch.")
    repair: Repair | None = Field(
        None, description="A person's decision once the approved action failed (ActionFailed): Retry it."
    )

    @model_validator(mode="after")
    def _expressions(self) -> ApprovalRequestSpec:
        problems = []
        for name, action in (("notify", self.notify), ("action", self.action)):
            if action is not None:
                problems += action.expression_problems(REQUEST, f"spec.{name}")
        refuse_expressions(problems)
        return self


class ApprovalPhase(StrEnum):
    PENDING = "Pending"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    TIMED_OUT = "TimedOut"
    EXECUTING = "Executing"
    COMPLETED = "Completed"
    ACTION_FAILED = "ActionFailed"

    @property
    def terminal(self) -> bool:
        """No further change will happen (Approved is not terminal while an action is to run)."""
        return self in (
            ApprovalPhase.REJECTED,
            ApprovalPhase.TIMED_OUT,
            ApprovalPhase.COMPLETED,
            ApprovalPhase.ACTION_FAILED,
        )


class ApprovalRecord(ApiModel):
    """One recorded decision, with the authenticated user who made it."""

    user: str = Field(description="Authenticated user name.")
    approved: bool = Field(description="Whether this user approved.")
    reason: str | None = Field(None, description="The reason given.")
    at: Timestamp | None = Field(None, description="When it was recorded.")


class ApprovalRequestStatus(StatusBase):
    """Progress of an ApprovalRequest."""

    phase: ApprovalPhase | None = Field(None, description="Where the request is.")
    approvals: list[ApprovalRecord] = Field(default_factory=list, description="Decisions recorded so far, in order.")
    approver: str | None = Field(None, description="Who made the deciding decision (authenticated).")
    decided_at: Timestamp | None = Field(None, description="When the request was decided or timed out.")
    expires_at: Timestamp | None = Field(None, description="When an undecided request times out.")
    reason: str | None = Field(None, description="Why it ended as it did.")
    retained_until: Timestamp | None = Field(
        None, description="When the operator deletes this finished request (its end + its retention for the outcome)."
    )
    notify_result: ActionResult | None = Field(None, description="Outcome of spec.notify.")
    action_result: ActionResult | None = Field(None, description="Outcome of spec.action.")
    decisions: list[DecisionRecord] = Field(
        default_factory=list,
        max_length=MAX_DECISIONS,
        description="Repair decisions (spec.repair: Retry of a failed action) as taken or refused, newest last.",
    )


# A root-level rule: it sees the old status, which spec-level rules cannot.
DECISION_FINAL = Cel(
    "!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase == 'Pending' || ("
    + unchanged("spec.decision", optional=True)
    + ")",
    "spec.decision is final: the request is no longer Pending (decided, timed out or executed)",
    reason="FieldValueForbidden",
    field_path=".spec.decision",
)
