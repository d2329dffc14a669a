"""Which repair decision fits which resource, as pure functions: admission refuses with these words, and the
workflow applies the same rules to what reaches it (a decision typed where admission did not run, a resend).

Deterministic and free of I/O: workflow code uses it (an import-linter contract keeps kopf and the Kubernetes
client out).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from steadfast.api.repair import RepairAction
from steadfast.api.saga import TaskSagaSpec, output_readers
from steadfast.records import Record

REPAIR_EVENT = "repair"  # the workflow event a decision becomes (steadfast.repair.signal)
SAGA, REQUEST = "TaskSaga", "ApprovalRequest"

# (kind, phase) -> the decisions that fit, in the order they are offered.
FITS: dict[tuple[str, str], tuple[RepairAction, ...]] = {
    (SAGA, "Paused"): (RepairAction.RETRY, RepairAction.SKIP, RepairAction.COMPENSATE),
    (SAGA, "CompensationFailed"): (RepairAction.RETRY, RepairAction.RESOLVE),
    (REQUEST, "ActionFailed"): (RepairAction.RETRY,),
}


class RepairEvent(Record):
    """A decision as the workflow receives it: the decider is the one admission sealed, never a typed name."""

    action: RepairAction
    step: str | None = None
    reason: str | None = None
    user: str | None = None  # None: no seal held (admission did not run); the workflow refuses it
    generation: int = 0


@dataclass(frozen=True)
class Situation:
    """What a decision is judged against: the resource's phase and what failed."""

    kind: str
    name: str  # namespace/name, for messages
    phase: str
    paused_step: str | None = None  # a paused saga's failed step
    failed_compensations: tuple[str, ...] = ()  # a CompensationFailed saga's failed compensations (step names)
    recorded_outputs: frozenset[str] = frozenset()  # outputs the paused step recorded (none, usually)
    creator: str | None = None  # the saga's sealed creator: whom its Kubernetes steps act as


def misfit(
    situation: Situation,
    action: RepairAction,
    step: str | None,
    *,
    user: str | None,
    spec: TaskSagaSpec | None = None,
) -> str | None:
    """Why this decision does not fit (the message kubectl shows), or None when it does."""
    where = f"{situation.kind} {situation.name}"
    allowed = FITS.get((situation.kind, situation.phase))
    if not allowed:
        phases = sorted(p for (k, p) in FITS if k == situation.kind)
        return (
            f"{where} is {situation.phase or 'not started'}: spec.repair is a decision for a {situation.kind} that is "
            f"{' or '.join(phases)}"
        )
    if action not in allowed:
        return f"{where} is {situation.phase}: {action.value} does not apply (possible: {_names(allowed)})"
    if situation.phase == "Paused":
        if step is not None and step != situation.paused_step:
            return f"{where} is paused at step {situation.paused_step}, not {step}"
        if action == RepairAction.SKIP and spec is not None and situation.paused_step is not None:
            return _skip_problem(situation, spec, user)
        return None
    if situation.phase == "CompensationFailed":
        failed = situation.failed_compensations
        if step is not None and step not in failed:
            return f"{where}: the compensation of step {step} has not failed (failed: {', '.join(failed) or 'none'})"
        if action == RepairAction.RESOLVE and step is None:
            return f"{where}: say which compensation was undone by hand (spec.repair.step: one of {', '.join(failed)})"
    return None


def _skip_problem(situation: Situation, spec: TaskSagaSpec, user: str | None) -> str | None:
    """Skipping runs the later steps without the paused one: refused when they need its outputs, or when they act
    on Kubernetes as the creator and someone else decides (a skipped check would lend them the creator's rights)."""
    step = str(situation.paused_step)
    names = [s.name for s in spec.steps]
    later = spec.steps[names.index(step) + 1 :] if step in names else []
    readers = [r for r in output_readers(spec, step) if r.name not in situation.recorded_outputs]
    if readers:
        uses = "; ".join(f"{r.where} reads outputs.{r.name}" for r in readers)
        return f"{situation.kind} {situation.name}: step {step} cannot be skipped, later steps use its outputs ({uses})"
    if user is not None and user != situation.creator and any(s.action.kubernetes is not None for s in later):
        return (
            f"{situation.kind} {situation.name}: only its creator ({situation.creator or 'unknown'}) may skip step "
            f"{step}: later steps act on Kubernetes as the creator, and skipping changes what they act on"
        )
    return None


def _names(actions: Iterable[RepairAction]) -> str:
    return ", ".join(a.value for a in actions)


def saga_situation(name: str, status: Mapping[str, Any], *, creator: str | None) -> Situation:
    """The Situation of a TaskSaga from its status as the API server holds it (admission's view)."""
    pause = status.get("pause") or {}
    paused_step = str(pause["step"]) if pause.get("step") else None
    recorded: set[str] = set()
    for record in status.get("steps") or []:
        if record.get("name") == paused_step:
            recorded.update((record.get("outputs") or {}).keys())
    failed = tuple(
        str(c["step"]) for c in status.get("compensations") or [] if c.get("phase") == "Failed" and c.get("step")
    )
    return Situation(
        kind=SAGA,
        name=name,
        phase=str(status.get("phase") or ""),
        paused_step=paused_step,
        failed_compensations=failed,
        recorded_outputs=frozenset(recorded),
        creator=creator,
    )
