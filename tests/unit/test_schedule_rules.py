"""SagaSchedule's spec checks, run names, and the run-making activity against a fake API server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from steadfast.api.errors import invalid_spec
from steadfast.api.schedule import ConcurrencyPolicy, SagaScheduleSpec, run_name, run_saga_spec
from steadfast.objects import Answer
from steadfast.records import Actor, ObjectRef
from steadfast.schedules.activities import ScheduleActivities, TransientError
from steadfast.schedules.records import FireRequest, LookRequest

REF = ObjectRef("steadfast.dev", "v1alpha1", "SagaSchedule", "sagaschedules", "team", "nightly", "uid-s")
SAGA = {"steps": [{"name": "a", "action": {"http": {"url": "http://svc/a"}}}]}
WHEN = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


def spec(**extra: Any) -> dict[str, Any]:
    return {"schedule": "0 3 * * *", "sagaTemplate": {"spec": SAGA}, **extra}


def refusal(raw: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as exc:
        SagaScheduleSpec.model_validate(raw)
    return invalid_spec(exc.value)


def test_defaults_follow_cronjob() -> None:
    parsed = SagaScheduleSpec.model_validate(spec())
    assert parsed.concurrency_policy.value == "Allow"
    assert (parsed.successful_runs_history_limit, parsed.failed_runs_history_limit) == (3, 1)
    assert parsed.suspend is False and parsed.starting_deadline is None


def test_refusals_name_the_field() -> None:
    assert "spec.schedule: minute: 61 is outside 0-59" in refusal(spec(schedule="61 * * * *"))
    assert "spec.timeZone: unknown time zone 'Nowhere/City'" in refusal(spec(timeZone="Nowhere/City"))
    bad = {"steps": [{"name": "a", "action": {}}]}
    assert "spec.sagaTemplate.spec.steps[0].action" in refusal(spec(sagaTemplate={"spec": bad}))
    assert "spec.sagaTemplate.spec: a TaskSaga sets exactly one of spec.steps and spec.template" in refusal(
        spec(sagaTemplate={"spec": {}})
    )
    stamped = {"spec": SAGA, "metadata": {"annotations": {"steadfast.dev/requested-by": "alice"}}}
    assert "spec.sagaTemplate.metadata.annotations.steadfast.dev/requested-by" in refusal(spec(sagaTemplate=stamped))
    assert "startingDeadline" in refusal(spec(startingDeadline="soon"))


def test_run_names_and_task_ids() -> None:
    assert run_name("nightly", WHEN) == f"nightly-{int(WHEN.timestamp())}"
    assert run_saga_spec(SAGA, "nightly-1")["task"] == {"id": "nightly-1"}
    given = run_saga_spec({**SAGA, "task": {"id": "T-1", "title": "x"}}, "nightly-1")
    assert given["task"] == {"id": "T-1", "title": "x"}


class FakeApi:
    """TaskSagas in one namespace; records who did what."""

    def __init__(self, *runs: dict[str, Any]) -> None:
        self.runs = {r["metadata"]["name"]: r for r in runs}
        self.calls: list[tuple[str, str, str | None]] = []
        self.create_status = 201

    def call(self, method: str, path: str, *, actor: Actor | None, body: Any = None, **_: Any) -> Answer:
        self.calls.append((method, path.rsplit("/", 1)[-1], actor.user if actor else None))
        name = path.rsplit("/", 1)[-1]
        if method == "GET" and name == "tasksagas":
            return Answer(200, {"items": list(self.runs.values())})
        if method == "GET":
            return Answer(200, self.runs[name]) if name in self.runs else Answer(404, {})
        if method == "POST":
            if self.create_status != 201:
                return Answer(self.create_status, {"message": "forbidden: no"})
            if body["metadata"]["name"] in self.runs:
                return Answer(409, {})
            self.runs[body["metadata"]["name"]] = body
            return Answer(201, body)
        if method == "DELETE":
            self.runs.pop(name, None)
            return Answer(200, {})
        raise AssertionError(method)


def run(stamp: int, phase: str | None, *, owner: str = "uid-s", finished: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if finished:
        status["finishedAt"] = finished
    return {
        "metadata": {
            "name": f"nightly-{stamp}",
            "uid": f"u{stamp}",
            "ownerReferences": [{"kind": "SagaSchedule", "uid": owner}],
        },
        "status": status,
    }


def request(policy: str = "Allow", **extra: int) -> FireRequest:
    return FireRequest(
        ref=REF,
        actor=Actor(user="alice", groups=["devs"]),
        scheduled=WHEN,
        run=run_name("nightly", WHEN),
        policy=ConcurrencyPolicy(policy),
        template={"metadata": {"labels": {"team": "ops"}}, "spec": SAGA},
        successful_limit=extra.get("successful", 3),
        failed_limit=extra.get("failed", 1),
    )


def test_creates_the_run_as_the_creator_with_labels_and_owner() -> None:
    api = FakeApi()
    result = ScheduleActivities(api).make_run(request())  # type: ignore[arg-type]
    made = api.runs[request().run]
    assert result.created and result.active == [request().run]
    assert ("POST", "tasksagas", "alice") in api.calls
    assert made["metadata"]["namespace"] == "team"
    assert made["metadata"]["labels"] == {
        "team": "ops",
        "steadfast.dev/schedule": "nightly",
        "steadfast.dev/scheduled-time": str(int(WHEN.timestamp())),
    }
    assert made["metadata"]["ownerReferences"][0]["uid"] == "uid-s"
    assert made["spec"]["task"]["id"] == request().run


def test_a_second_attempt_finds_its_run() -> None:
    api = FakeApi()
    activities = ScheduleActivities(api)  # type: ignore[arg-type]
    activities.make_run(request())
    again = activities.make_run(request("Forbid"))  # its own run is active: still "created", not skipped
    assert again.created and not again.skipped
    assert [c for c in api.calls if c[0] == "POST"] == [("POST", "tasksagas", "alice")]


def test_forbid_skips_and_replace_deletes_active_runs() -> None:
    api = FakeApi(run(100, "Running"))
    skipped = ScheduleActivities(api).make_run(request("Forbid"))  # type: ignore[arg-type]
    assert skipped.skipped and not skipped.created and skipped.active == ["nightly-100"]
    replaced = ScheduleActivities(api).make_run(request("Replace"))  # type: ignore[arg-type]
    assert replaced.replaced == ["nightly-100"] and replaced.created
    assert ("DELETE", "nightly-100", "alice") in api.calls
    assert replaced.active == [request().run]


def test_runs_it_does_not_own_are_never_touched() -> None:
    api = FakeApi(run(100, "Running", owner="someone-else"), run(50, "Succeeded", owner="someone-else"))
    result = ScheduleActivities(api).make_run(request("Replace", successful=0))  # type: ignore[arg-type]
    assert result.created and result.replaced == [] and result.deleted == []
    assert "nightly-100" in api.runs and "nightly-50" in api.runs


def test_history_keeps_the_newest_within_limits() -> None:
    api = FakeApi(
        run(10, "Succeeded", finished="2026-12-01T00:00:00Z"),
        run(20, "Succeeded", finished="2026-12-02T00:00:00Z"),
        run(30, "Succeeded", finished="2026-12-03T00:00:00Z"),
        run(15, "Failed"),
        run(25, "Compensated"),
    )
    result = ScheduleActivities(api).make_run(request(successful=2, failed=1))  # type: ignore[arg-type]
    assert sorted(result.deleted) == ["nightly-10", "nightly-15"]
    assert result.last_successful == datetime(2026, 12, 3, tzinfo=UTC)


def test_refused_create_is_a_problem_and_server_errors_are_retried() -> None:
    api = FakeApi()
    api.create_status = 403
    result = ScheduleActivities(api).make_run(request())  # type: ignore[arg-type]
    assert not result.created and result.problem and "alice cannot create run" in result.problem
    api.create_status = 503
    with pytest.raises(TransientError):
        ScheduleActivities(api).make_run(request())  # type: ignore[arg-type]


def test_look_reports_active_runs_and_the_last_success_without_changing_anything() -> None:
    api = FakeApi(
        run(10, "Succeeded", finished="2026-12-01T00:00:00Z"),
        run(20, "Running"),
        run(30, None),  # no status yet: active
        run(40, "Running", owner="someone-else"),
    )
    found = ScheduleActivities(api).look(None, LookRequest(ref=REF).wire())  # type: ignore[arg-type]
    assert found["active"] == ["nightly-20", "nightly-30"]
    assert found["lastSuccessful"] == "2026-12-01T00:00:00Z"
    assert {c[0] for c in api.calls} == {"GET"}
