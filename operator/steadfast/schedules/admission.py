"""Admission's part of schedules that needs the operator's settings: how often a schedule may run.

A schedule every second is a namespace editor's way to make the operator create, run and delete a saga a
second for as long as they like; ResourceQuota bounds how many exist at once, not how fast they churn. So the
cluster's admin sets the shortest interval between two runs (`--min-schedule-interval`, chart value
`operator.minScheduleInterval`, one minute by default, CronJob's granularity) and admission refuses a schedule
that runs more often, naming spec.schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from steadfast.schedules.cron import CronError, parse


def _spelled(gap: timedelta) -> str:
    seconds = int(gap.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def interval_problem(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, minimum: timedelta | None
) -> str | None:
    """Why the new schedule runs too often, or None. Checked when the schedule or its time zone is set or
    changed (a schedule admitted under a larger minimum keeps working); malformed ones are the model's to refuse."""
    if minimum is None or minimum <= timedelta(seconds=1) or not new:
        return None
    spec = new.get("spec") or {}
    before = (old or {}).get("spec") or {}
    if old and (spec.get("schedule"), spec.get("timeZone")) == (before.get("schedule"), before.get("timeZone")):
        return None
    try:
        gap = parse(str(spec.get("schedule") or ""), spec.get("timeZone")).shortest_gap()
    except CronError:
        return None
    if gap >= minimum:
        return None
    return (
        f"spec.schedule: runs as little as {_spelled(gap)} apart; this cluster allows schedules at least "
        f"{_spelled(minimum)} apart (the operator's --min-schedule-interval)"
    )
