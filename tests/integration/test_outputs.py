"""Step outputs, placeholders and conditions end to end: real API server, both engines, the sample task service.

The seed's saga is declared as users would: each step keeps the IDs its service answered, later steps send
them, and each compensation undoes exactly what its step made, also when the operator died in between.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import Operator, Resources, TaskService, eventually
from kubernetes import client
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.controlplane


def seed_saga(svc: TaskService, task: str, *, fail_dashboard: bool = False) -> dict[str, Any]:
    def http(method: str, path: str, **extra: Any) -> dict[str, Any]:
        return {"http": {"method": method, "url": f"{svc.url}{path}", **extra}}

    fail = {"headers": [{"name": "X-Fail", "value": "always"}]} if fail_dashboard else {}
    return {
        "task": {"id": task, "title": "Onboard Ada", "assignee": "ada"},
        "steps": [
            {
                "name": "create-task-record",
                "action": http("POST", "/records", body={"title": "$(task.title)", "for": "$(task.id)"}),
                "outputs": {"recordId": "response.body.id"},
                "compensation": http("DELETE", "/records/$(outputs.recordId)"),
            },
            {
                "name": "reserve-capacity",
                "action": http(
                    "POST",
                    "/capacity/reserve",
                    body={"assignee": "$(task.assignee)", "record": "$(outputs.recordId)"},
                    successWhen="response.status == 200 && has(response.body.reservationId)",
                ),
                "outputs": {"reservationId": "response.body.reservationId"},
                "compensation": http("POST", "/capacity/release", body={"reservationId": "$(outputs.reservationId)"}),
            },
            {
                "name": "notify-assignee",
                "action": http("POST", "/notices", body={"text": "task $(task.id) is yours, $(task.assignee)"}),
                "outputs": {"noticeId": "response.body.noticeId"},
                "compensation": http("DELETE", "/notices/$(outputs.noticeId)"),
            },
            {
                "name": "update-dashboard",
                "action": http(
                    "POST",
                    "/dashboard",
                    body={"record": "$(outputs.recordId)", "reservation": "$(outputs.reservationId)"},
                    **fail,
                ),
            },
        ],
    }


@pytest.fixture
def sagas(kube: client.ApiClient, namespace: str) -> Resources:
    return Resources(kube, namespace, "tasksagas", "TaskSaga")


@pytest.fixture
def monitors(kube: client.ApiClient, namespace: str, task_service: TaskService) -> Resources:
    task_service.clear_faults()
    return Resources(kube, namespace, "healthmonitors", "HealthMonitor")


def applied_bodies(svc: TaskService, route: str) -> list[dict[str, Any]]:
    """JSON object bodies applied on `route` (other tests share the service and may send none)."""
    return [a["body"] for a in svc.stats()["applied"] if a["route"] == route and isinstance(a["body"], dict)]


def outputs_of(status: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for step in status["steps"]:
        merged.update(step.get("outputs") or {})
    return merged


def test_outputs_flow_into_later_steps_and_show_in_status(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    sagas.create("seed-ok", seed_saga(task_service, "t-out-ok"))
    status = sagas.wait_phase("seed-ok", "Succeeded", "Compensated", "Failed", "CompensationFailed")["status"]
    assert status["phase"] == "Succeeded", status
    record = status["steps"][0]["outputs"]["recordId"]
    reservation = status["steps"][1]["outputs"]["reservationId"]
    assert record.startswith("rec-") and reservation.startswith("res-")
    assert status["steps"][2]["outputs"]["noticeId"].startswith("ntc-")
    assert "outputs" not in status["steps"][3]  # the dashboard step declares none
    created = next(b for b in applied_bodies(task_service, "POST /records") if b.get("for") == "t-out-ok")
    assert created == {"title": "Onboard Ada", "for": "t-out-ok"}
    assert {"record": record, "reservation": reservation} in applied_bodies(task_service, "POST /dashboard")
    assert {"text": "task t-out-ok is yours, ada"} in applied_bodies(task_service, "POST /notices")


def test_compensations_undo_exactly_what_their_steps_made(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    sagas.create("seed-undo", seed_saga(task_service, "t-out-undo", fail_dashboard=True))
    status = sagas.wait_phase("seed-undo", "Compensated", "CompensationFailed", "Succeeded", "Failed")["status"]
    assert status["phase"] == "Compensated", status
    made = outputs_of(status)
    assert [c["step"] for c in status["compensations"]] == ["notify-assignee", "reserve-capacity", "create-task-record"]
    applied = task_service.applied()
    assert f"DELETE /notices/{made['noticeId']}" in applied
    assert f"DELETE /records/{made['recordId']}" in applied
    assert {"reservationId": made["reservationId"]} in applied_bodies(task_service, "POST /capacity/release")
    live = task_service.stats()
    assert made["recordId"] not in live["records"]
    assert made["reservationId"] not in live["reservations"]
    assert made["noticeId"] not in live["notices"]


def test_a_compensation_after_an_operator_kill_sends_what_its_step_produced(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    task_service.fault("POST /dashboard", fail=-1, status=503, delay=2)
    sagas.create("seed-kill", seed_saga(task_service, "t-out-kill"))
    eventually(
        lambda: any(d["route"] == "POST /dashboard" for d in task_service.stats()["deliveries"]),
        what="the last step in flight",
    )
    operator.kill()
    operator.start()
    status = sagas.wait_phase("seed-kill", "Compensated", "CompensationFailed", "Succeeded", timeout=90)["status"]
    task_service.clear_faults()
    assert status["phase"] == "Compensated", status
    made = outputs_of(status)
    applied = task_service.applied()
    assert applied.count(f"DELETE /notices/{made['noticeId']}") == 1
    assert applied.count(f"DELETE /records/{made['recordId']}") == 1
    assert applied_bodies(task_service, "POST /capacity/release").count({"reservationId": made["reservationId"]}) == 1
    assert "HTTP 503" in status["steps"][3]["message"]


def test_admission_refuses_expressions_that_do_not_compile(
    operator: Operator, task_service: TaskService, sagas: Resources, monitors: Resources
) -> None:
    spec = seed_saga(task_service, "t-bad")
    spec["steps"][2]["compensation"]["http"]["url"] = f"{task_service.url}/notices/$(outputs.noticeID)"
    with pytest.raises(ApiException) as caught:
        sagas.create("bad-ref", spec)
    assert caught.value.status == 422
    assert "spec.steps[2].compensation: outputs.noticeID is not this or an earlier step's output" in str(
        caught.value.body
    )
    spec = seed_saga(task_service, "t-bad")
    spec["steps"][0]["outputs"] = {"recordId": "response.body.id +"}
    with pytest.raises(ApiException) as caught:
        sagas.create("bad-syntax", spec)
    assert "spec.steps[0].outputs.recordId: 1:19: Syntax error" in str(caught.value.body)
    assert sagas.get("bad-ref") is None and sagas.get("bad-syntax") is None
    with pytest.raises(ApiException) as caught:
        monitors.create(
            "bad-condition",
            {"target": {"http": {"url": f"{task_service.url}/healthz"}}, "conditions": ["response.bdy.status == 1"]},
        )
    assert caught.value.status == 422
    assert "spec.conditions[0]: 1:10: response has no field 'bdy'" in str(caught.value.body)


def test_monitor_conditions_report_what_failed_and_the_value_seen(
    operator: Operator, task_service: TaskService, monitors: Resources
) -> None:
    monitors.create(
        "deep",
        {
            "target": {"http": {"url": f"{task_service.url}/healthz/deep-$(monitor.namespace)"}},
            "conditions": ["response.status == 200", 'response.body.status == "UP"', "response.durationMs < 5000"],
            "healthyInterval": "1s",
            "unhealthyInterval": "1s",
        },
    )
    monitors.wait_status("deep", lambda s: s.get("phase") == "Healthy", "healthy")
    secret_word = "internal-build-7f3a"
    task_service.fault(
        f"GET /healthz/deep-{monitors.namespace}", status=200, body={"status": "DEGRADED", "build": secret_word}
    )
    down = monitors.wait_status("deep", lambda s: s.get("phase") == "Unhealthy", "unhealthy")
    assert down["failedCondition"] == 'response.body.status == "UP" (was "DEGRADED")'
    assert secret_word not in str(down)  # only the condition's value, never the body
    task_service.clear_faults()
    up = monitors.wait_status("deep", lambda s: s.get("phase") == "Healthy", "recovered")
    assert "failedCondition" not in up


def test_response_bodies_stay_out_of_messages(operator: Operator, task_service: TaskService, sagas: Resources) -> None:
    """Declaring the status another service answers with must not turn the operator into a reader of it."""
    task_service.fault("POST /deploy", status=500, body={"token": "their-private-answer"})
    spec = {
        "task": {"id": "t-peek"},
        "steps": [
            {
                "name": "peek",
                "action": {"http": {"method": "POST", "url": f"{task_service.url}/deploy", "expectedStatus": [418]}},
            }
        ],
    }
    sagas.create("peek", spec)
    status = sagas.wait_phase("peek", "Failed", "Succeeded", "Compensated")["status"]
    task_service.clear_faults()
    assert "HTTP 500 Internal Server Error" in status["steps"][0]["message"]
    assert "their-private-answer" not in str(status)


def test_alert_webhook_body_is_rendered_from_the_monitor(
    operator: Operator, task_service: TaskService, monitors: Resources
) -> None:
    monitors.create(
        "templated-alert",
        {
            "target": {"http": {"url": f"{task_service.url}/healthz/ta-$(monitor.namespace)"}},
            "healthyInterval": "1s",
            "unhealthyInterval": "1s",
            "alert": {
                "severity": "critical",
                "webhook": {
                    "http": {
                        "method": "POST",
                        "url": f"{task_service.url}/alerts",
                        "body": {
                            "text": "$(monitor.name) is $(alert.state) ($(alert.severity))",
                            "checks": "$(monitor.checkCount)",
                            "ns": "$(monitor.namespace)",
                        },
                    }
                },
            },
        },
    )
    monitors.wait_status("templated-alert", lambda s: s.get("phase") == "Healthy", "healthy")
    task_service.fault(f"GET /healthz/ta-{monitors.namespace}")
    down = monitors.wait_status("templated-alert", lambda s: s.get("alertsSent", 0) >= 1, "alert sent")
    task_service.clear_faults()
    bodies = [b for b in applied_bodies(task_service, "POST /alerts") if b.get("ns") == monitors.namespace]
    assert bodies[0]["text"] == "templated-alert is unhealthy (critical)"
    assert isinstance(bodies[0]["checks"], int) and 1 <= bodies[0]["checks"] <= down["checkCount"]
