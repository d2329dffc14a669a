"""Waiting for repair decisions inside a workflow: deterministic (workflow code), no I/O.

One waiter per run at a time: the SDK hands an event to the oldest waiter of its name, so a fresh waiter per
wait would leave later decisions with an abandoned one. Decisions are numbered by the generation their patch
produced; one already handled (a resend on resume, an event buffered before the workflow waited) is dropped.
"""

from __future__ import annotations

from typing import Any

from dapr.ext.workflow import DaprWorkflowContext

from steadfast.api.repair import MAX_DECISIONS, DecisionRecord
from steadfast.repair.rules import REPAIR_EVENT, RepairEvent

# Workflow versioning: instances of an earlier release that already passed this point replay as they ran (they
# ended at CompensationFailed / ActionFailed instead of waiting for a repair decision).
REPAIRS = "steadfast.repairs"


class Decisions:
    """The run's waiter for `repair` events and the last generation it handled."""

    def __init__(self, ctx: DaprWorkflowContext, handled: int) -> None:
        self.ctx = ctx
        self.handled = handled
        self._waiter: Any = None

    def waiter(self) -> Any:
        if self._waiter is None or self._waiter.is_complete:
            self._waiter = self.ctx.wait_for_external_event(REPAIR_EVENT)
        return self._waiter

    def take(self) -> RepairEvent | None:
        """The decision the waiter received, or None if it was handled before."""
        event = RepairEvent.model_validate(self._waiter.get_result() or {})
        self._waiter = None
        if event.generation <= self.handled:
            return None
        self.handled = event.generation
        return event


def record(decisions: list[DecisionRecord], event: RepairEvent, at: Any, result: str) -> None:
    """Append what became of a decision to status.decisions, keeping the newest MAX_DECISIONS."""
    decisions.append(
        DecisionRecord(
            action=event.action,
            step=event.step,
            reason=event.reason,
            user=event.user,
            at=at,
            generation=event.generation,
            result=result,
        )
    )
    del decisions[:-MAX_DECISIONS]


UNSEALED = "no decider recorded: the decision was made where Steadfast's admission webhook did not run"
