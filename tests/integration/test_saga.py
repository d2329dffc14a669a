"""TaskSaga end to end: real API server, real local engine, the operator as a process, a real task service."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService, eventually
from kubernetes import client

pytestmark = pytest.mark.controlplane


def steps(svc: TaskService, task: str, *, fail: str | None = None) -> list[dict[str, Any]]:
    def http(method: str, path: str, **extra: Any) -> dict[str, Any]:
        return {"http": {"method": method, "url": f"{svc.url}{path}", **extra}}

    fail_header = {"headers": [{"name": "X-Fail", "value": "always"}]}
    return [
        {
            "name": "create-task-record",
            "action": http("POST", "/records", body={"id": task}),
            "compensation": http("DELETE", f"/records/{task}"),
        },
        {
            "name": "reserve-capacity",
            "action": http("POST", "/capacity/reserve", body={"task": task}),
            "compensation": http("POST", "/capacity/release", body={"task": task}),
        },
        {
            "name": "notify-assignee",
            "action": http(
                "POST", "/notices", body={"task": task}, **(fail_header if fail == "notify-assignee" else {})
            ),
            "compensation": http("DELETE", f"/notices/{task}"),
        },
        {"name": "update-dashboard", "action": http("POST", "/dashboard", body={"task": task})},
    ]


@pytest.fixture
def sagas(kube: client.ApiClient, namespace: str) -> Resources:
    return Resources(kube, namespace, "tasksagas", "TaskSaga")


@pytest.mark.statestores  # also run on daprd with the chart's PostgreSQL and Redis stores
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
    # The operator wrote only status: the finalizer came with admission, and no kopf bookkeeping is left behind.
    meta = obj["metadata"]
    assert meta["finalizers"] == ["steadfast.dev/finalizer"]
    stamps = {k: v for k, v in meta.get("annotations", {}).items() if k.startswith("steadfast.dev/")}
    assert set(stamps) == {"steadfast.dev/requested-by", "steadfast.dev/requested-by-groups", "steadfast.dev/seal"}
    assert "system:authenticated" in json.loads(stamps["steadfast.dev/requested-by-groups"])
    assert [m["operation"] for m in meta["managedFields"] if not m.get("subresource")] == ["Update"]  # the create


@pytest.mark.statestores  # also run on daprd with the chart's PostgreSQL and Redis stores
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
    # Events follow the status write that carries the transition.
    reasons = eventually(
        lambda: (lambda r: r if "Compensated" in r else None)([e["reason"] for e in sagas.events("fails")]),
        what="Compensated event",
    )
    assert "StepFailed" in reasons


@pytest.fixture(autouse=True)
def clean_faults(task_service: TaskService) -> None:
    task_service.reset()


def test_failing_compensation_is_recorded_and_the_rest_still_run(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    task_service.fault("POST /capacity/release", fail=-1)
    plan = steps(task_service, "t-cf", fail="notify-assignee")
    plan[1]["compensation"]["http"]["url"] = f"{task_service.url}/capacity/release"
    sagas.create("comp-fails", {"task": {"id": "t-cf"}, "steps": plan})
    status = sagas.wait_phase("comp-fails", "Compensated", "CompensationFailed", "Succeeded")["status"]
    assert status["phase"] == "CompensationFailed"
    comps = {c["step"]: c for c in status["compensations"]}
    assert [c["step"] for c in status["compensations"]] == ["reserve-capacity", "create-task-record"]
    assert comps["reserve-capacity"]["phase"] == "Failed"
    assert comps["reserve-capacity"]["attempts"] == 3  # the default for compensations without a policy
    assert comps["create-task-record"]["phase"] == "Succeeded"
    assert "DELETE /records/t-cf" in task_service.applied()
    assert "1 compensation(s) failed" in status["result"]["error"]


def test_transient_failure_is_retried_to_success(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    task_service.fault("POST /capacity/reserve", fail=2)
    plan = steps(task_service, "t-r")
    plan[1]["retry"] = {"maxAttempts": 3, "initialInterval": "100ms", "maxInterval": "1s"}
    sagas.create("retried", {"task": {"id": "t-r"}, "steps": plan})
    status = sagas.wait_phase("retried", "Succeeded", "Compensated", "Failed")["status"]
    assert status["phase"] == "Succeeded"
    assert [s["attempts"] for s in status["steps"]] == [1, 3, 1, 1]
    reserve = [d for d in task_service.stats()["deliveries"] if d["route"] == "POST /capacity/reserve"]
    assert len(reserve) == 3
    assert len({d["key"] for d in reserve}) == 1  # the same Idempotency-Key on every attempt
    assert task_service.applied().count("POST /capacity/reserve") == 1


def test_unreachable_url_is_a_step_failure_with_a_message(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    from e2e_support import CLOSED_PORT

    plan = steps(task_service, "t-u")
    plan[1]["action"]["http"]["url"] = f"http://127.0.0.1:{CLOSED_PORT}/nothing-listens"
    sagas.create("unreachable", {"task": {"id": "t-u"}, "steps": plan})
    status = sagas.wait_phase("unreachable", "Compensated", "Failed", "Succeeded")["status"]
    assert status["phase"] == "Compensated"
    assert "refused" in status["steps"][1]["message"].lower()
    assert [c["step"] for c in status["compensations"]] == ["create-task-record"]


def test_metadata_address_is_refused_by_the_egress_policy(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    plan = steps(task_service, "t-m")[:1]
    plan[0]["action"]["http"]["url"] = "http://169.254.169.254/latest/meta-data/"
    sagas.create("metadata", {"task": {"id": "t-m"}, "steps": plan})
    status = sagas.wait_phase("metadata", "Failed", "Compensated", "Succeeded")["status"]
    assert status["phase"] == "Failed"
    assert "metadata" in status["steps"][0]["message"]
    # Nothing reached the task service for this saga (monitors of other tests may still be checking it).
    assert [d for d in task_service.stats()["deliveries"] if not d["path"].startswith("/healthz")] == []


def test_secret_headers_need_an_opt_in_and_never_show(
    operator: Operator, task_service: TaskService, sagas: Resources, kube: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_secret(
        sagas.namespace, {"metadata": {"name": "plain"}, "stringData": {"token": "s3cret-plain"}}
    )
    core.create_namespaced_secret(
        sagas.namespace,
        {
            # Its writer allows the task service's address (the operator connects to 127.0.0.1).
            "metadata": {
                "name": "shared",
                "labels": {"steadfast.dev/referable": "true"},
                "annotations": {"steadfast.dev/send-to": "127.0.0.1"},
            },
            "stringData": {"token": "s3cret-shared"},
        },
    )

    def one_step(secret: str) -> list[dict[str, Any]]:
        plan = steps(task_service, f"t-{secret}")[:1]
        plan[0]["action"]["http"]["headers"] = [
            {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}
        ]
        return plan

    sagas.create("plain", {"task": {"id": "t-plain"}, "steps": one_step("plain")})
    sagas.create("shared", {"task": {"id": "t-shared"}, "steps": one_step("shared")})
    refused = sagas.wait_phase("plain", "Failed", "Succeeded")["status"]
    assert refused["phase"] == "Failed"
    assert "not referable" in refused["steps"][0]["message"]
    allowed = sagas.wait_phase("shared", "Failed", "Succeeded")["status"]
    assert allowed["phase"] == "Succeeded"
    for name in ("plain", "shared"):
        text = str(sagas.get(name)) + str(sagas.events(name))
        assert "s3cret" not in text


def test_deleting_a_running_saga_compensates_first(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    task_service.fault("POST /notices", fail=0, delay=3)
    sagas.create("deleted", {"task": {"id": "t-d"}, "steps": steps(task_service, "t-d")})
    sagas.wait_phase("deleted", "Running")
    eventually(lambda: "POST /capacity/reserve" in task_service.applied(), what="two steps done")
    sagas.delete("deleted")
    sagas.wait_gone("deleted", timeout=60)
    applied = task_service.applied()
    assert "POST /dashboard" not in applied  # no step after the deletion
    undo = [a for a in applied if a in ("DELETE /notices/t-d", "POST /capacity/release", "DELETE /records/t-d")]
    assert undo == ["DELETE /notices/t-d", "POST /capacity/release", "DELETE /records/t-d"]


def test_operator_killed_mid_saga_finishes_the_same_instance_once(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    task_service.fault("POST /notices", fail=0, delay=2)
    sagas.create("killed", {"task": {"id": "t-k"}, "steps": steps(task_service, "t-k")})
    first = sagas.wait_phase("killed", "Running")["status"]["workflowInstanceId"]
    eventually(
        lambda: any(d["route"] == "POST /notices" for d in task_service.stats()["deliveries"]), what="step 3 in flight"
    )
    operator.kill()
    operator.start()
    status = sagas.wait_phase("killed", "Succeeded", "Compensated", "Failed", timeout=90)["status"]
    assert status["phase"] == "Succeeded"
    assert status["workflowInstanceId"] == first
    applied = task_service.applied()
    for effect in ("POST /records", "POST /capacity/reserve", "POST /notices", "POST /dashboard"):
        assert applied.count(effect) == 1, (effect, applied)


def test_a_finished_saga_whose_status_is_lost_does_not_run_again(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    """A restore without status (or an admin wiping it) makes the next event look like a creation.

    daprd starts the ID of a finished instance afresh, so starting blindly would run every step a second time.
    """
    sagas.create("restored", {"task": {"id": "t-r"}, "steps": steps(task_service, "t-r")})
    sagas.wait_phase("restored", "Succeeded")
    sagas.api.patch_namespaced_custom_object_status(
        GROUP, VERSION, sagas.namespace, "tasksagas", "restored", {"status": None}
    )
    sagas.patch_metadata("restored", {"labels": {"touched": "yes"}})  # one more event, also without status
    time.sleep(3)
    applied = task_service.applied()
    for effect in ("POST /records", "POST /capacity/reserve", "POST /notices", "POST /dashboard"):
        assert applied.count(effect) == 1, (effect, applied)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s.update(steps=[]), "spec.steps"),
        (lambda s: s["steps"].append(dict(s["steps"][0])), "spec.steps"),
        (lambda s: s["steps"][0]["action"]["http"].update(url="not a url"), "spec.steps[0].action.http.url"),
        (lambda s: s["steps"][0].update(retry={"maxAttempts": 0}), "spec.steps[0].retry.maxAttempts"),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(
    sagas: Resources, task_service: TaskService, mutate: Any, field: str
) -> None:
    from kubernetes.client.exceptions import ApiException

    spec: dict[str, Any] = {"task": {"id": "bad"}, "steps": steps(task_service, "bad")}
    mutate(spec)
    with pytest.raises(ApiException) as refused:
        sagas.create("bad", spec)
    assert refused.value.status == 422
    assert field in refused.value.body


def test_spec_cannot_change_after_creation(sagas: Resources, task_service: TaskService) -> None:
    from kubernetes.client.exceptions import ApiException

    sagas.create("frozen", {"task": {"id": "frozen"}, "steps": steps(task_service, "frozen")})
    with pytest.raises(ApiException) as refused:
        sagas.api.patch_namespaced_custom_object(
            "steadfast.dev", "v1alpha1", sagas.namespace, "tasksagas", "frozen", {"spec": {"task": {"id": "other"}}}
        )
    assert refused.value.status == 422
    assert "immutable" in refused.value.body
