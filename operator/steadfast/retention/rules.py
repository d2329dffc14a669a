"""Which ends of a resource may be removed, under which outcome, and when: pure, so workflows use it too.

Only ends that need nobody are removable. Unfinished resources and the phases that wait for a person (a saga
Paused or CompensationFailed, a request ActionFailed) have no outcome here: nothing ever removes them. An
ApprovalRequest that is Approved with an action to run is not finished yet (Executing comes next).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from steadfast.api.approval import ApprovalPhase
from steadfast.api.duration import parse_duration
from steadfast.api.kinds import APPROVAL_REQUEST, TASK_SAGA
from steadfast.api.retention import Retention
from steadfast.api.saga import SagaPhase


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


SAGA_OUTCOMES: dict[str, Outcome] = {
    SagaPhase.SUCCEEDED: Outcome.SUCCEEDED,
    SagaPhase.COMPENSATED: Outcome.FAILED,
    SagaPhase.FAILED: Outcome.FAILED,
    SagaPhase.REJECTED: Outcome.FAILED,
}
REQUEST_OUTCOMES: dict[str, Outcome] = {
    ApprovalPhase.COMPLETED: Outcome.SUCCEEDED,
    ApprovalPhase.APPROVED: Outcome.SUCCEEDED,  # only without an action (see outcome_of)
    ApprovalPhase.REJECTED: Outcome.FAILED,
    ApprovalPhase.TIMED_OUT: Outcome.FAILED,
}
# The phases the sweeper lists, per kind (a field selector on status.phase each).
REMOVABLE: dict[str, tuple[str, ...]] = {
    TASK_SAGA.kind: tuple(SAGA_OUTCOMES),
    APPROVAL_REQUEST.kind: tuple(REQUEST_OUTCOMES),
}


def outcome_of(kind: str, phase: str | None, *, has_action: bool = False) -> Outcome | None:
    """The outcome whose retention applies to a resource of `kind` in `phase`; None: never removed."""
    if kind == TASK_SAGA.kind:
        return SAGA_OUTCOMES.get(str(phase))
    if kind == APPROVAL_REQUEST.kind:
        if phase == ApprovalPhase.APPROVED and has_action:
            return None  # its action is still to run
        return REQUEST_OUTCOMES.get(str(phase))
    return None


def retained_until(
    retention: Retention | None, outcome: Outcome | None, finished_at: datetime | None
) -> datetime | None:
    """When a resource that ended at `finished_at` with `outcome` is due for removal; None: kept."""
    if retention is None or outcome is None or finished_at is None:
        return None
    keep = retention.succeeded if outcome == Outcome.SUCCEEDED else retention.failed
    return None if keep is None else finished_at + parse_duration(keep)


def due(retained: datetime | None, now: datetime) -> bool:
    """Whether a resource whose status says `retained` is due at `now`."""
    return retained is not None and retained <= now
