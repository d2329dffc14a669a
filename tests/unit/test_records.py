"""The records that cross the engine: their wire shape, and that older instances' inputs still load."""

from __future__ import annotations

from datetime import UTC, datetime

from steadfast.api.monitor import HealthMonitorSpec
from steadfast.api.saga import TaskSagaSpec
from steadfast.records import ActionRequest, EventSpec, ObjectRef, StatusReport, WorkflowInput
from steadfast.workflows.monitor import MonitorInput

REF = ObjectRef("steadfast.dev", "v1alpha1", "HealthMonitor", "healthmonitors", "ns", "m", "uid-1")
MONITOR_SPEC = {"target": {"http": {"url": "http://svc.ns/health"}}}


def test_workflow_input_sends_the_spec_as_the_api_server_holds_it() -> None:
    spec = TaskSagaSpec.model_validate(
        {"task": {"id": "t"}, "steps": [{"name": "a", "action": {"http": {"url": "http://x/a"}}}]}
    )
    wire = WorkflowInput(ref=REF, generation=2, spec=spec).wire()
    assert wire["spec"] == spec.to_wire()  # unset optionals left out, camelCase
    assert wire["ref"]["uid"] == "uid-1" and wire["generation"] == 2
    assert WorkflowInput[TaskSagaSpec].model_validate(wire).spec == spec


def test_a_monitor_started_by_the_first_release_continues() -> None:
    """The first release carried its state as a snake_case dict with string timestamps."""
    carried = {
        "ref": {"group": REF.group, "version": REF.version, "kind": REF.kind, "plural": REF.plural,
                "namespace": "ns", "name": "m", "uid": "uid-1"},
        "generation": 3,
        "spec": MONITOR_SPEC,
        "state": {
            "job_id": "j", "is_healthy": False, "check_count": 7, "consecutive_failures": 2,
            "consecutive_successes": 0, "alerts_sent": 1, "continued_as_new": 6, "last_error": "HTTP 503",
            "last_check_time": "2030-01-01T00:00:00Z", "last_check_at": "2030-01-01T00:00:00.250000+00:00",
            "last_transition_time": "2029-12-31T23:55:00Z", "seq": 12,
            "conditions": [{"type": "Ready", "status": "False", "reason": "Unhealthy", "message": "x",
                            "lastTransitionTime": "2029-12-31T23:55:00Z", "observedGeneration": 3}],
        },
    }  # fmt: skip
    given = MonitorInput.model_validate(carried)
    assert given.state is not None
    assert (given.state.check_count, given.state.is_healthy, given.state.seq) == (7, False, 12)
    assert given.state.last_check_at == datetime(2030, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)
    assert given.state.conditions[0].reason == "Unhealthy"
    again = MonitorInput.model_validate(given.wire())  # what the next run gets
    assert again == given


def test_an_action_request_of_an_older_release_still_runs_its_action() -> None:
    """Older releases put the running snapshot's fields at the top level; they are ignored, the action kept."""
    old = {"ref": MonitorInput(ref=REF, spec=HealthMonitorSpec.model_validate(MONITOR_SPEC)).wire()["ref"],
           "action": {"http": {"url": "http://x/a"}}, "key": "sf-1", "timeout": None, "what": "check/1",
           "category": "check", "status": None, "seq": 4, "events": []}  # fmt: skip
    request = ActionRequest.model_validate(old)
    assert (request.action, request.key, request.category, request.report) == (
        {"http": {"url": "http://x/a"}},
        "sf-1",
        "check",
        None,
    )


def test_status_report_round_trips_events() -> None:
    report = StatusReport(ref=REF, status={"phase": "Healthy"}, seq=3, events=[EventSpec("Healthy", "ok", key="k")])
    back = StatusReport.model_validate(report.wire())
    assert back.events == [EventSpec("Healthy", "ok", "Normal", "k")] and back.status == {"phase": "Healthy"}
