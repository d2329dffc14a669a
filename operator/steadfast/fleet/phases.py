"""Which phases each kind has, and which of them wait for a person (issue #25's "needs a person")."""

from __future__ import annotations

from steadfast.api.approval import ApprovalPhase
from steadfast.api.kinds import APPROVAL_REQUEST, HEALTH_MONITOR, KINDS, TASK_SAGA, Kind
from steadfast.api.monitor import MonitorPhase
from steadfast.api.saga import SagaPhase

# A saga stopped at a failed step whose spec.onFailure.action is Pause, until a person repairs it (or it times out).
PAUSED = SagaPhase.PAUSED.value

PHASES: dict[Kind, frozenset[str]] = {
    TASK_SAGA: frozenset(p.value for p in SagaPhase),
    APPROVAL_REQUEST: frozenset(p.value for p in ApprovalPhase),
    HEALTH_MONITOR: frozenset(p.value for p in MonitorPhase),
}

# What only a person can move on: a decision, a repair, or a look at a failing dependency.
NEEDS_PERSON: dict[Kind, frozenset[str]] = {
    APPROVAL_REQUEST: frozenset({ApprovalPhase.PENDING.value}),
    TASK_SAGA: frozenset({PAUSED, SagaPhase.COMPENSATION_FAILED.value, SagaPhase.AWAITING_APPROVAL.value}),
    HEALTH_MONITOR: frozenset({MonitorPhase.UNHEALTHY.value}),
}

# What a given user may act on: requests naming them among spec.approvers.users, and sagas awaiting a repair.
WAITING_FOR_USER: dict[Kind, frozenset[str]] = {
    APPROVAL_REQUEST: frozenset({ApprovalPhase.PENDING.value}),
    TASK_SAGA: frozenset({PAUSED, SagaPhase.COMPENSATION_FAILED.value}),
    HEALTH_MONITOR: frozenset(),
}

# Phases whose fleet record needs the whole object (approvers, the failed step's message, failed compensations,
# the approvals so far): the table reads them as objects, every other phase from the printer columns alone.
DETAILED: dict[Kind, frozenset[str]] = {
    APPROVAL_REQUEST: NEEDS_PERSON[APPROVAL_REQUEST] | {ApprovalPhase.ACTION_FAILED.value},
    TASK_SAGA: NEEDS_PERSON[TASK_SAGA],
    HEALTH_MONITOR: NEEDS_PERSON[HEALTH_MONITOR],
}

assert set(PHASES) == set(NEEDS_PERSON) == set(WAITING_FOR_USER) == set(DETAILED) == set(KINDS)
