"""The API models: samples validate and round-trip, invalid specs are refused naming the field."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from steadfast.api import (
    API_VERSION,
    APPROVAL_REQUEST,
    HEALTH_MONITOR,
    KINDS,
    TASK_SAGA,
    ApprovalPhase,
    ApprovalRequestSpec,
    ApprovalRequestStatus,
    HealthMonitorSpec,
    HealthMonitorStatus,
    HttpAction,
    MonitorPhase,
    SagaPhase,
    StepStatus,
    TaskSagaSpec,
    TaskSagaStatus,
    describe,
    format_duration,
    kind_named,
    parse_duration,
)
from steadfast.api.kinds import SCHEDULE_KINDS, TEMPLATES, Kind

SAMPLES = Path(__file__).resolve().parents[2] / "config" / "samples"

SAGA: dict[str, Any] = {
    "task": {"id": "42", "title": "Onboard Ada", "assignee": "ada", "priority": "high"},
    "steps": [
        {
            "name": "create-task-record",
            "action": {"http": {"method": "POST", "url": "http://tasks.team-a.svc/records", "body": {"id": "42"}}},
            "compensation": {"http": {"method": "DELETE", "url": "http://tasks.team-a.svc/records/42"}},
            "retry": {"maxAttempts": 3, "initialInterval": "1s", "backoffCoefficient": 2, "maxInterval": "30s"},
            "timeout": "10s",
        },
        {
            "name": "notify-assignee",
            "action": {
                "http": {
                    "method": "POST",
                    "url": "http://notify.team-a.svc/send",
                    "headers": [
                        {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "notify", "key": "token"}}}
                    ],
                }
            },
        },
    ],
    "onDelete": "Compensate",
}


def _errors(model: type[BaseModel], raw: Any) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(raw)
    return "\n".join(describe(info.value))


def _saga(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SAGA)
    spec.update(changes)
    return spec


def _contains(outer: Any, inner: Any) -> bool:
    """Every key and value of `inner` is in `outer` (defaults may add more)."""
    if isinstance(inner, dict):
        return isinstance(outer, dict) and all(k in outer and _contains(outer[k], v) for k, v in inner.items())
    if isinstance(inner, list):
        return isinstance(outer, list) and len(outer) == len(inner) and all(map(_contains, outer, inner))
    return bool(outer == inner)


# -- durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5h", timedelta(minutes=90)),
        ("250us", timedelta(microseconds=250)),
        ("2h45m30.5s", timedelta(hours=2, minutes=45, seconds=30.5)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "-1s", "1d", "1 h", "h", "1.s", "1h 30m", "10µs", "PT5M"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["30s", "5m", "1h", "1h30m", "500ms", "1h0m0.25s", "250us", "0s"])
def test_format_duration_round_trips(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


# -- samples and round trips ----------------------------------------------------------------------


def _kind_of(name: str) -> Kind:
    """The kind of a sample, schedules and templates included (kind_named knows the fleet's kinds only)."""
    return next(k for k in (*KINDS, *SCHEDULE_KINDS, *TEMPLATES) if k.kind == name)


def _sample_docs() -> list[dict[str, Any]]:
    docs = [d for p in sorted(SAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    assert docs, f"no samples under {SAMPLES}"
    return docs


def test_samples_cover_every_kind_and_validate() -> None:
    docs = _sample_docs()
    assert {d["kind"] for d in docs} == {k.kind for k in (*KINDS, *SCHEDULE_KINDS, *TEMPLATES)}
    for doc in docs:
        kind = _kind_of(doc["kind"])
        assert doc["apiVersion"] == API_VERSION
        spec = kind.parse_spec(doc["spec"])
        assert _contains(spec.to_wire(), doc["spec"]), doc["metadata"]["name"]


def test_saga_samples_succeed_and_compensate() -> None:
    sagas = {d["metadata"]["name"]: d for d in _sample_docs() if d["kind"] == "TaskSaga"}
    assert len(sagas) >= 2
    for doc in sagas.values():
        spec = TaskSagaSpec.model_validate(doc["spec"])
        if spec.template is not None:  # its steps are the template's sample's
            continue
        http = [s.action.http for s in spec.steps if s.action.kubernetes is None]
        assert all(h and h.url.startswith("http://127.0.0.1:8089/") for h in http), doc["metadata"]["name"]


@pytest.mark.parametrize("model", [TaskSagaSpec, HealthMonitorSpec, ApprovalRequestSpec])
def test_round_trip_is_stable(model: type[TaskSagaSpec | HealthMonitorSpec | ApprovalRequestSpec]) -> None:
    raw = next(d["spec"] for d in _sample_docs() if _kind_of(d["kind"]).spec_model is model)
    first = model.model_validate(raw)
    wire = first.to_wire()
    again = model.model_validate(wire)
    assert again == first
    assert again.to_wire() == wire


def test_issue_shape_round_trips_and_keeps_field_names() -> None:
    spec = TaskSagaSpec.model_validate(SAGA)
    wire = spec.to_wire()
    assert _contains(wire, SAGA)
    header = spec.steps[1].action.http.headers[0]  # type: ignore[union-attr]
    assert header.value_from is not None and header.value_from.secret_key_ref.key == "token"
    assert spec.steps[0].retry is not None and spec.steps[0].retry.max_attempts == 3
    assert spec.steps[1].retry is None  # absent retry means one attempt
    assert wire["steps"][0]["action"]["http"]["body"] == {"id": "42"}


def test_accepts_what_the_api_server_returns() -> None:
    """Defaults filled in, whole numbers for floats, RFC 3339 timestamps, conditions."""
    stored = _saga()
    stored["steps"][0]["action"]["http"].update(timeout="10s", expectedStatus=[200, 201])
    stored["steps"][0]["retry"]["backoffCoefficient"] = 2
    TaskSagaSpec.model_validate(stored)
    status = TaskSagaStatus.model_validate(
        {
            "phase": "Compensated",
            "observedGeneration": 1,
            "workflowInstanceId": "tasksaga-team-a-onboard-42-1234",
            "currentStep": "create-task-record",
            "steps": [
                {
                    "name": "create-task-record",
                    "phase": "Succeeded",
                    "attempts": 1,
                    "startedAt": "2026-01-02T03:04:05Z",
                    "finishedAt": "2026-01-02T03:04:05.123456Z",
                },
                {"name": "notify-assignee", "phase": "Failed", "attempts": 3, "message": "HTTP 503"},
            ],
            "compensations": [{"step": "create-task-record", "phase": "Succeeded", "attempts": 1}],
            "result": {"status": "Compensated", "taskId": "42", "error": "notify-assignee: HTTP 503"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "Compensated",
                    "message": "step notify-assignee failed",
                    "lastTransitionTime": "2026-01-02T03:04:06Z",
                    "observedGeneration": 1,
                }
            ],
        }
    )
    assert status.phase is SagaPhase.COMPENSATED and status.phase.terminal
    assert status.condition("Ready") is not None and status.condition("Stalled") is None
    wire = status.to_wire()
    assert wire["steps"][0]["startedAt"] == "2026-01-02T03:04:05Z"
    assert TaskSagaStatus.model_validate(wire) == status


def test_empty_statuses_parse() -> None:
    for kind in (*KINDS, *SCHEDULE_KINDS):
        status = kind.parse_status(None)
        assert status.conditions == [] and status.observed_generation is None


def test_monitor_defaults_and_status() -> None:
    spec = HealthMonitorSpec.model_validate({"target": {"http": {"url": "http://payments.svc/healthz"}}})
    assert (spec.healthy_interval, spec.unhealthy_interval) == ("60m", "5m")
    assert (spec.failure_threshold, spec.success_threshold, spec.suspend) == (1, 1, False)
    assert spec.target.http is not None and spec.target.http.method == "GET" and spec.target.http.timeout == "10s"
    status = HealthMonitorStatus.model_validate(
        {"healthy": False, "phase": "Unhealthy", "checkCount": 7, "consecutiveFailures": 2, "continuedAsNew": 6}
    )
    assert status.phase is MonitorPhase.UNHEALTHY and status.alerts_sent == 0


def test_approval_defaults_and_status() -> None:
    spec = ApprovalRequestSpec.model_validate(
        {"subject": {"title": "Deploy"}, "approvers": {"users": ["alice"]}, "decision": {"approved": True}}
    )
    assert spec.timeout == "72h" and spec.approvers.required == 1
    status = ApprovalRequestStatus.model_validate(
        {
            "phase": "Completed",
            "approvals": [{"user": "alice", "approved": True, "reason": "ok", "at": "2026-01-01T00:00:00Z"}],
            "approver": "alice",
            "actionResult": {"succeeded": True, "statusCode": 200},
        }
    )
    assert status.phase is ApprovalPhase.COMPLETED and status.phase.terminal
    assert not ApprovalPhase.APPROVED.terminal


def test_saga_approval_gate() -> None:
    gate = {"priorities": ["high", "critical"], "approvers": {"groups": ["sre"]}}
    assert TaskSagaSpec.model_validate(_saga(approval=gate)).needs_approval()
    low = _saga(approval=gate, task={"id": "1", "priority": "low"})
    assert not TaskSagaSpec.model_validate(low).needs_approval()
    always = _saga(approval={"required": True, "approvers": {"users": ["alice"]}}, task={"id": "1"})
    spec = TaskSagaSpec.model_validate(always)
    assert spec.needs_approval() and spec.approval is not None and spec.approval.timeout == "72h"
    assert not TaskSagaSpec.model_validate(_saga()).needs_approval()


def test_http_expected_status() -> None:
    default = HttpAction.model_validate({"url": "https://x.example/a"})
    assert default.accepts(200) and default.accepts(299) and not default.accepts(300) and not default.accepts(404)
    explicit = HttpAction.model_validate({"url": "https://x.example/a", "expectedStatus": [404]})
    assert explicit.accepts(404) and not explicit.accepts(200)


def test_body_keeps_any_json_including_nulls() -> None:
    for body in [{"a": None, "b": [1, "x", None]}, [1, 2], "text", 3, True]:
        action = HttpAction.model_validate({"url": "http://h/", "body": body})
        assert action.to_wire()["body"] == body


def test_kind_registry() -> None:
    assert [k.kind for k in KINDS] == ["TaskSaga", "HealthMonitor", "ApprovalRequest"]
    assert kind_named("saga") is TASK_SAGA and kind_named("hmon") is HEALTH_MONITOR
    assert kind_named("ApprovalRequest") is APPROVAL_REQUEST and kind_named("approvalrequests") is APPROVAL_REQUEST
    assert TASK_SAGA.crd_name == "tasksagas.steadfast.dev" and TASK_SAGA.api_version == "steadfast.dev/v1alpha1"
    assert all(k.categories == ("steadfast",) and k.namespaced for k in KINDS)
    with pytest.raises(KeyError, match="no Steadfast kind"):
        kind_named("Pod")


# -- refusals -------------------------------------------------------------------------------------


def _step(**changes: Any) -> dict[str, Any]:
    step: dict[str, Any] = copy.deepcopy(SAGA["steps"][0])
    step.update(changes)
    return step


def _http(**changes: Any) -> dict[str, Any]:
    return {"http": {"method": "POST", "url": "http://tasks.svc/x", **changes}}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (_saga(steps=[]), "spec: a TaskSaga sets exactly one of spec.steps and spec.template"),
        (
            _saga(steps=[_step(), _step()]),
            "spec.steps: step names in spec.steps must be unique; repeated: create-task-record",
        ),
        (
            {k: v for k, v in SAGA.items() if k != "steps"},
            "spec: a TaskSaga sets exactly one of spec.steps and spec.template",
        ),
        (
            _saga(steps=[_step(action=_http(url="ftp://tasks.svc/x"))]),
            "spec.steps[0].action.http.url: http.url must be",
        ),
        (_saga(steps=[_step(action=_http(url="http:///no-host"))]), "spec.steps[0].action.http.url: http.url must be"),
        (_saga(steps=[_step(action=_http(url="tasks.svc/x"))]), "spec.steps[0].action.http.url: http.url must be"),
        (_saga(steps=[_step(action=_http(url="http://a b/"))]), "spec.steps[0].action.http.url: http.url must be"),
        (
            _saga(steps=[_step(retry={"maxAttempts": 0})]),
            "spec.steps[0].retry.maxAttempts: Input should be greater than or equal to 1",
        ),
        (_saga(steps=[_step(timeout="10 minutes")]), "spec.steps[0].timeout: step timeout must be a duration"),
        (_saga(steps=[_step(timeout="0s")]), "spec.steps[0].timeout: step timeout must be a duration longer than 0s"),
        (
            _saga(steps=[_step(retry={"initialInterval": "1m", "maxInterval": "10s"})]),
            "spec.steps[0].retry: retry.maxInterval must not be shorter than retry.initialInterval",
        ),
        (_saga(steps=[_step(action={})]), "spec.steps[0].action: an action sets exactly one of: http"),
        (
            _saga(steps=[_step(action=_http(headers=[{"name": "A"}]))]),
            "spec.steps[0].action.http.headers[0]: header 'A' must set exactly one of value or valueFrom",
        ),
        (_saga(steps=[_step(name="Not_A_Label")]), "spec.steps[0].name: String should match pattern"),
        (_saga(steps=[_step(action=_http(method="FETCH"))]), "spec.steps[0].action.http.method: Input should be"),
        (
            _saga(steps=[_step(action=_http(expectedStatus=[99]))]),
            "spec.steps[0].action.http.expectedStatus[0]: Input should be greater than or equal to 100",
        ),
        (_saga(onDelete="Orphan"), "spec.onDelete: Input should be 'Compensate' or 'Abandon'"),
        (_saga(surprise=1), "spec.surprise: Extra inputs are not permitted"),
        (
            _saga(approval={"approvers": {"users": ["a"]}}),
            "spec.approval: approval needs required: true or a list of priorities",
        ),
        (
            _saga(approval={"required": True, "approvers": {}}),
            "spec.approval.approvers: approvers must list at least one user or group",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_saga_refusals_name_the_field(spec: dict[str, Any], expected: str) -> None:
    assert expected in _errors(TaskSagaSpec, spec)


MONITOR: dict[str, Any] = {"target": {"http": {"url": "http://payments.svc/healthz"}}}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"healthyInterval": "500ms"}, "spec.healthyInterval: healthyInterval must be a duration at least 1s"),
        ({"unhealthyInterval": "0.5s"}, "spec.unhealthyInterval: unhealthyInterval must be a duration at least 1s"),
        ({"unhealthyInterval": "5 minutes"}, "spec.unhealthyInterval: unhealthyInterval must be a duration"),
        (
            {"healthyInterval": "9000h"},
            "spec.healthyInterval: healthyInterval must be a duration at least 1s and at most 8760h",
        ),
        ({"failureThreshold": 0}, "spec.failureThreshold: Input should be greater than or equal to 1"),
        ({"successThreshold": 0}, "spec.successThreshold: Input should be greater than or equal to 1"),
        ({"target": {"http": {"url": "http://x/", "timeout": "2h"}}}, "spec.target.http.timeout: http.timeout must be"),
        ({"alert": {"severity": "loud"}}, "spec.alert.severity: Input should be"),
    ],
)
def test_monitor_refusals_name_the_field(changes: dict[str, Any], expected: str) -> None:
    assert expected in _errors(HealthMonitorSpec, {**MONITOR, **changes})


def test_monitor_accepts_one_second() -> None:
    HealthMonitorSpec.model_validate({**MONITOR, "healthyInterval": "1s", "unhealthyInterval": "1s"})


APPROVAL: dict[str, Any] = {"subject": {"title": "Deploy"}, "approvers": {"users": ["alice", "bob"], "required": 2}}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"approvers": {"users": ["alice"], "required": 2}}, "spec.approvers: approvers.required cannot exceed"),
        ({"approvers": {}}, "spec.approvers: approvers must list at least one user or group"),
        ({"approvers": {"users": ["alice", "alice"]}}, "spec.approvers: approvers.users lists a name twice"),
        ({"approvers": {"groups": ["sre"], "required": 0}}, "spec.approvers.required: Input should be greater"),
        ({"decision": {"approved": False}}, "spec.decision: decision.reason is required when rejecting"),
        ({"timeout": "0s"}, "spec.timeout: timeout must be a duration at least 1s"),
        ({"subject": {"title": ""}}, "spec.subject.title: String should have at least 1 character"),
        ({"action": {"http": {"url": "javascript:alert(1)"}}}, "spec.action.http.url: http.url must be"),
    ],
)
def test_approval_refusals_name_the_field(changes: dict[str, Any], expected: str) -> None:
    assert expected in _errors(ApprovalRequestSpec, {**APPROVAL, **changes})


def test_groups_allow_any_quorum() -> None:
    ApprovalRequestSpec.model_validate({**APPROVAL, "approvers": {"groups": ["sre"], "required": 3}})


def test_timestamps_need_a_zone() -> None:
    """A naive timestamp would serialise without a zone, which the API server's date-time format refuses."""
    assert "startedAt: Input should have timezone info" in _errors(
        StepStatus, {"name": "a", "phase": "Running", "startedAt": datetime(2026, 1, 1, 0, 0)}
    ).replace("spec.", "")
    ok = StepStatus.model_validate({"name": "a", "phase": "Running", "startedAt": datetime(2026, 1, 1, tzinfo=UTC)})
    assert ok.to_wire()["startedAt"] == "2026-01-01T00:00:00Z"
