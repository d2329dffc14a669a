"""TaskSaga end to end: real API server, real local engine, the operator as a process, a real task service."""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import Operator, Resources, TaskService
from kubernetes import client

pytestmark = pytest.mark.controlplane


def steps(svc: TaskService, task: str, *, fail: str | None = None) -> list[dict[str, Any]]:
    def http(method: str, path: str, **extra: Any) -> dict[str, Any]:
        return {"http": {"method": method, "url": f"{svc.url}{path}", **extra}}

    fail_header = {"headers": [{"name": "X-Fail", "value": "always"}]}
    return [
        {"name": "create-task-record", "action": http("POST", "/records", body={"id": task}),
         "compensation": http("DELETE", f"/records/{task}")},
        {"name": "reserve-capacity", "action": http("POST", "/capacity/reserve", body={"task": task}),
         "compensation": http("POST", "/capacity/release", body={"task": task})},
        {"name": "notify-assignee",
         "action": http("POST", "/notices", body={"task": task}, **(fail_header if fail == "notify-assignee" else {})),
         "compensation": http("DELETE", f"/notices/{task}")},
        {"name": "update-dashboard", "action": http("POST", "/dashboard", body={"task": task})},
    ]


@pytest.fixture
def sagas(kube: client.ApiClient, namespace: str) -> Resources:
    return Resources(kube, namespace, "tasksagas", "TaskSaga")


def test_happy_path(operator: Operator, task_service: TaskService, sagas: Resources) -> None:
    sagas.create("ok", {"task": {"id": "t-ok", "title": "Onboard Ada"}, "steps": steps(task_service, "t-ok")})
    obj = sagas.wait_phase("ok", "Succeeded", "Compensated", "Failed", "CompensationFailed")
    status = obj["status"]
    assert status["phase"] == "Succeeded"
    assert [s["phase"] for s in status["steps"]] == ["Succeeded"] * 4
    assert all(s["attempts"] == 1 for s in status["steps"])
    assert status["compensations"] == []
    assert status["result"] == {"status": "Succeeded", "taskId": "t-ok"}
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert status["workflowInstanceId"].startswith("tasksaga-")
    assert task_service.applied("/records/t-ok") == [] and "POST /records" in task_service.applied("/records")


def test_failure_compensates_in_reverse(operator: Operator, task_service: TaskService, sagas: Resources) -> None:
    sagas.create("fails", {"task": {"id": "t-f"}, "steps": steps(task_service, "t-f", fail="notify-assignee")})
    status = sagas.wait_phase("fails", "Compensated", "CompensationFailed", "Succeeded")["status"]
    assert status["phase"] == "Compensated"
    assert [s["phase"] for s in status["steps"]] == ["Succeeded", "Succeeded", "Failed", "Skipped"]
    assert "HTTP 500" in status["steps"][2]["message"]
    assert [c["step"] for c in status["compensations"]] == ["reserve-capacity", "create-task-record"]
    assert all(c["phase"] == "Succeeded" for c in status["compensations"])
    assert status["result"]["error"].startswith("step notify-assignee failed")
    applied = task_service.applied()
    undo = [a for a in applied if a in ("POST /capacity/release", "DELETE /records/t-f")]
    assert undo == ["POST /capacity/release", "DELETE /records/t-f"]
    reasons = [e["reason"] for e in sagas.events("fails")]
    assert "StepFailed" in reasons and "Compensated" in reasons
