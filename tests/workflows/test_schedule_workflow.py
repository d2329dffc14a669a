"""The SagaSchedule workflow on the local engine with a fake run-making activity: one catch-up run for the latest
due time, the rest counted missed; runs follow each other without repeats; the starting deadline; no creator."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from workflow_fakes import Harness, Subject

from steadfast.api.kinds import SAGA_SCHEDULE
from steadfast.api.schedule import SagaScheduleSpec
from steadfast.binding import instance_id
from steadfast.records import Actor
from steadfast.schedules import workflow as schedule
from steadfast.schedules.workflow import ScheduleInput, ScheduleState

pytestmark = pytest.mark.engine

SAGA = {"steps": [{"name": "a", "action": {"http": {"url": "http://svc.test/a"}}}]}


def start(
    harness: Harness,
    subject: Subject,
    spec: dict[str, Any],
    *,
    since: datetime,
    actor: Actor | None,
    look_every: int = schedule.LOOK_EVERY,
) -> None:
    iid = instance_id(SAGA_SCHEDULE, subject.ref.namespace, subject.ref.name, subject.ref.uid)
    given = ScheduleInput(
        ref=subject.ref,
        generation=1,
        spec=SagaScheduleSpec.model_validate({"sagaTemplate": {"spec": SAGA}, **spec}),
        actor=actor,
        state=ScheduleState(since=since),
        look_every=look_every,
    )
    harness.client.schedule_new_workflow(schedule.NAME, input=given.wire(), instance_id=iid)
    harness.started.append(iid)


def fired_times(subject: Subject) -> list[datetime]:
    return [datetime.fromisoformat(f["scheduled"]) for f in subject.fires]


def wait_fires(subject: Subject, count: int, timeout: float = 20) -> list[datetime]:
    deadline = time.monotonic() + timeout
    while len(subject.fires) < count:
        assert time.monotonic() < deadline, f"{len(subject.fires)} of {count} runs requested"
        time.sleep(0.05)
    return fired_times(subject)


def test_one_catch_up_for_the_latest_due_time_then_runs_in_order(harness: Harness) -> None:
    subject = harness.subject(SAGA_SCHEDULE)
    began = datetime.now(UTC)
    start(harness, subject, {"schedule": "*/2 * * * * *"}, since=began - timedelta(seconds=11), actor=Actor(user="a"))
    first = wait_fires(subject, 1)[0]
    assert first <= began + timedelta(seconds=1) and int(first.timestamp()) % 2 == 0
    assert first > began - timedelta(seconds=3)  # the latest due time, not the earliest missed one
    status = subject.log.wait_for(lambda s: s.get("runsCreated") == 1, "the catch-up run")
    assert status["missedRuns"] >= 4 and status["lastScheduleTime"] == first.strftime("%Y-%m-%dT%H:%M:%SZ")
    times = wait_fires(subject, 3)
    assert [int(b.timestamp()) - int(a.timestamp()) for a, b in itertools.pairwise(times[:3])] == [2, 2]
    assert subject.fires[0]["run"] == f"{subject.ref.name}-{int(first.timestamp())}"
    assert subject.fires[0]["actor"]["user"] == "a"
    # A run is requested (a fire) before the report that carries its RunCreated Event: wait for that report.
    subject.log.wait_for(lambda s: s.get("runsCreated", 0) >= 3, "three runs reported")
    assert "RunMissed" in subject.log.reasons() and subject.log.reasons().count("RunCreated") >= 3


def test_past_the_starting_deadline_nothing_is_created(harness: Harness) -> None:
    subject = harness.subject(SAGA_SCHEDULE)
    since = datetime.now(UTC) - timedelta(hours=2)
    start(harness, subject, {"schedule": "@every 1h", "startingDeadline": "1s"}, since=since, actor=Actor(user="a"))
    status = subject.log.wait_for(lambda s: s.get("missedRuns", 0) >= 2, "missed")
    assert "startingDeadline" in status["lastProblem"] and status["runsCreated"] == 0
    assert subject.fires == []


def test_without_a_creator_no_run_is_requested_and_it_says_so_once(harness: Harness) -> None:
    subject = harness.subject(SAGA_SCHEDULE)
    start(harness, subject, {"schedule": "* * * * * *"}, since=datetime.now(UTC), actor=None)
    subject.log.wait_for(lambda s: s.get("missedRuns", 0) == 0 and s.get("lastProblem") is not None, "refused")
    time.sleep(2.5)  # two more due times
    stalled = subject.log.latest()
    assert {c["type"]: c["reason"] for c in stalled["conditions"]}["Stalled"] == "RunRefused"
    assert subject.fires == []
    assert subject.log.reasons().count("RunRefused") == 1


def test_active_runs_are_looked_at_between_scheduled_times(harness: Harness) -> None:
    subject = harness.subject(SAGA_SCHEDULE)
    since = datetime.now(UTC) - timedelta(hours=2)
    start(harness, subject, {"schedule": "@every 1h"}, since=since, actor=Actor(user="a"), look_every=1)
    subject.log.wait_for(lambda s: s.get("activeCount") == 1, "the catch-up run active")
    after = subject.log.wait_for(lambda s: s.get("activeCount") == 0 and s.get("runsCreated") == 1, "it finished")
    assert after["active"] == [] and after["lastSuccessfulTime"] == "2026-01-01T00:00:00Z"
    assert len(subject.fires) == 1
