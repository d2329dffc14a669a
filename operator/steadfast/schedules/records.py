"""What crosses between the schedule's workflow and its activity: one due run, and what became of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from steadfast.api.schedule import ConcurrencyPolicy
from steadfast.records import Actor, ObjectRef, Record

# The activities (steadfast.schedules.activities): make a due run; look at the active runs between two times.
FIRE = "steadfast.schedule.fire"
LOOK = "steadfast.schedule.look"


class FireRequest(Record):
    """Create the run for `scheduled` as `actor`, after the concurrency policy, then trim the history."""

    ref: ObjectRef  # the schedule
    actor: Actor  # its sealed creator: the run is created as them
    scheduled: datetime
    run: str  # the run's name, from the schedule's name and `scheduled`
    policy: ConcurrencyPolicy
    template: dict[str, Any]  # spec.sagaTemplate on the wire
    successful_limit: int
    failed_limit: int


class FireResult(Record):
    """`created`: the run exists (made now, or by an earlier attempt of the same request). `problem`: why not."""

    created: bool = False
    skipped: bool = False  # Forbid, with runs active
    replaced: list[str] = []  # active runs deleted first (Replace)
    deleted: list[str] = []  # finished runs beyond the history limits
    active: list[str] = []  # the schedule's unfinished runs afterwards
    last_successful: datetime | None = None
    problem: str | None = None


class LookRequest(Record):
    """Which schedule's runs to look at (as the operator: a list, nothing changed)."""

    ref: ObjectRef
