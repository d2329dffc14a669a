"""Parallel steps end to end (dependsOn): real API server, both engines, the operator as a process, the sample
task service. The order is proven on the wire, from the times the service received each request.

Every step creates a record (POST /records, body id <task>-<step>) and its compensation deletes it; a delay armed
at the service keeps each request in flight long enough for overlaps, and their absence, to be unambiguous.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Operator, Resources, TaskService, eventually
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.dev.controlplane import cluster

pytestmark = pytest.mark.controlplane

STEP_DELAY = 1.0  # seconds each step's request is held at the service
UNDO_DELAY = 1.0  # and each compensation's
SLACK = 0.05  # clock granularity of the receiver's timestamps


def node(svc: TaskService, task: str, name: str, *deps: str, fail: bool = False) -> dict[str, Any]:
    action: dict[str, Any] = {"method": "POST", "url": f"{svc.url}/records", "body": {"id": f"{task}-{name}"}}
    if fail:
        action["headers"] = [{"name": "X-Fail", "value": "always"}]
    return {
        "name": name,
        "action": {"http": action},
        "compensation": {"http": {"method": "DELETE", "url": f"{svc.url}/records/{task}-{name}"}},
        "dependsOn": list(deps),
    }


def received(svc: TaskService, method: str, task: str) -> dict[str, float]:
    """When the service first received each step's request (by step name), for one saga."""
    out: dict[str, float] = {}
    for delivery in svc.stats()["deliveries"]:
        route, path = delivery["route"], delivery["path"]
        if route.startswith(method) and path.startswith("/records") and task in path:
            out.setdefault(path.rsplit(f"{task}-", 1)[-1], delivery["at"])
    return out


def posted(svc: TaskService, task: str) -> dict[str, float]:
    """POSTs carry the id in the body, not the path: read the applied effects (first delivery of each key)."""
    return {a["body"]["id"].removeprefix(f"{task}-"): a["at"] for a in svc.stats()["applied"] if _is(a, task)}


def _is(applied: dict[str, Any], task: str) -> bool:
    body = applied.get("body")
    return applied["route"] == "POST /records" and isinstance(body, dict) and str(body.get("id", "")).startswith(task)


@pytest.fixture
def sagas(kube: client.ApiClient, namespace: str) -> Resources:
    return Resources(kube, namespace, "tasksagas", "TaskSaga")


@pytest.fixture(autouse=True)
def delays(task_service: TaskService) -> None:
    task_service.reset()
    task_service.fault("POST /records", fail=0, delay=STEP_DELAY)
    task_service.fault("DELETE /records/{id}", fail=0, delay=UNDO_DELAY)


def test_independent_steps_overlap_and_a_join_waits_for_all(
    operator: Operator,
    task_service: TaskService,
    sagas: Resources,
    kubectl_path: Path,
    control_plane: cluster.State,
    namespace: str,
) -> None:
    svc = task_service
    plan = [node(svc, "fan", n) for n in ("db", "queue", "bucket")] + [
        node(svc, "fan", "deploy", "db", "queue", "bucket")
    ]
    sagas.create("fan", {"task": {"id": "fan"}, "steps": plan})
    status = sagas.wait_phase("fan", "Succeeded", "Compensated", "Failed", timeout=90)["status"]
    assert status["phase"] == "Succeeded"
    assert status["progress"] == "4/4"
    assert status["steps"][3]["dependsOn"] == ["db", "queue", "bucket"]
    at = posted(svc, "fan")
    roots = [at["db"], at["queue"], at["bucket"]]
    assert max(roots) - min(roots) < STEP_DELAY, f"independent steps did not overlap: {at}"
    assert at["deploy"] >= max(roots) + STEP_DELAY - SLACK, f"the join started before all it waits for: {at}"
    shown = subprocess.run(
        [str(kubectl_path), "--kubeconfig", control_plane.kubeconfig, "get", "tasksagas", "fan", "-n", namespace],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split("\n")
    assert "PROGRESS" in shown[0].split() and "4/4" in shown[1].split(), shown


def test_diamond_and_wide_fan_out_compensate_in_reverse_dependency_order(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    svc = task_service
    diamond = [
        node(svc, "dia", "base"),
        node(svc, "dia", "left", "base"),
        node(svc, "dia", "right", "base"),
        node(svc, "dia", "top", "left", "right", fail=True),
    ]
    leaves = [f"leaf{n}" for n in range(5)]
    wide = [node(svc, "wide", "root"), *(node(svc, "wide", n, "root") for n in leaves)]
    wide.append(node(svc, "wide", "gather", *leaves, fail=True))
    sagas.create("dia", {"task": {"id": "dia"}, "steps": diamond})
    sagas.create("wide", {"task": {"id": "wide"}, "steps": wide})
    for name in ("dia", "wide"):
        assert (
            sagas.wait_phase(name, "Compensated", "CompensationFailed", "Succeeded", timeout=90)["status"]["phase"]
            == "Compensated"
        )

    undone = received(svc, "DELETE", "dia")
    assert set(undone) == {"base", "left", "right"}
    assert abs(undone["left"] - undone["right"]) < UNDO_DELAY, f"independent compensations did not overlap: {undone}"
    assert undone["base"] >= max(undone["left"], undone["right"]) + UNDO_DELAY - SLACK, undone

    undone = received(svc, "DELETE", "wide")
    assert set(undone) == {"root", *leaves}
    spread = [undone[n] for n in leaves]
    assert max(spread) - min(spread) < UNDO_DELAY, f"the leaves were not undone together: {undone}"
    assert undone["root"] >= max(spread) + UNDO_DELAY - SLACK, f"root undone before every leaf: {undone}"
    assert svc.stats()["records"] == {}, "every record made was deleted"


def test_a_failure_lets_siblings_in_flight_finish_and_undoes_their_success(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    svc = task_service
    bad = node(svc, "sib", "bad", fail=True)
    bad["action"]["http"]["url"] = f"{svc.url}/notices"  # no delay there: it fails while slow is in flight
    plan = [node(svc, "sib", "slow"), bad, node(svc, "sib", "after", "slow")]
    sagas.create("sib", {"task": {"id": "sib"}, "steps": plan})
    status = sagas.wait_phase("sib", "Compensated", "CompensationFailed", "Succeeded", timeout=90)["status"]
    assert status["phase"] == "Compensated"
    assert [s["phase"] for s in status["steps"]] == ["Succeeded", "Failed", "Skipped"]
    assert [c["step"] for c in status["compensations"]] == ["slow"]
    assert "after" not in posted(svc, "sib"), "a step started after the failure"
    assert received(svc, "DELETE", "sib").keys() == {"slow"}
    assert svc.stats()["records"] == {}


def test_deleting_a_running_graph_saga_lets_steps_in_flight_finish_then_undoes_them(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    svc = task_service
    svc.fault("POST /records", fail=0, delay=3)  # long enough for the deletion to arrive while a and b run
    plan = [node(svc, "del", "a"), node(svc, "del", "b"), node(svc, "del", "c", "a", "b")]
    sagas.create("del", {"task": {"id": "del"}, "steps": plan})
    eventually(
        lambda: sum(1 for d in svc.stats()["deliveries"] if d["route"] == "POST /records") >= 2,
        what="two steps in flight",
    )
    sagas.delete("del")
    sagas.wait_gone("del", timeout=60)
    assert sorted(posted(svc, "del")) == ["a", "b"], "a step started after the deletion"
    assert set(received(svc, "DELETE", "del")) == {"a", "b"}, "what the steps in flight made was not undone"
    assert svc.stats()["records"] == {}


def test_operator_sigkill_with_steps_in_flight_loses_nothing_and_repeats_nothing(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    svc = task_service
    svc.fault("POST /records", fail=0, delay=2)
    plan = [node(svc, "kill", n) for n in ("a", "b", "c")] + [node(svc, "kill", "join", "a", "b", "c")]
    sagas.create("kill", {"task": {"id": "kill"}, "steps": plan})
    eventually(
        lambda: sum(1 for d in svc.stats()["deliveries"] if d["route"] == "POST /records") >= 3,
        what="three steps in flight",
    )
    operator.kill()
    operator.start()
    status = sagas.wait_phase("kill", "Succeeded", "Compensated", "Failed", timeout=120)["status"]
    assert status["phase"] == "Succeeded"
    ids = [a["body"]["id"] for a in svc.stats()["applied"] if _is(a, "kill")]
    assert sorted(ids) == ["kill-a", "kill-b", "kill-c", "kill-join"], f"an effect lost or repeated: {ids}"


def test_admission_refuses_a_cycle_and_an_unknown_dependency(
    operator: Operator, task_service: TaskService, sagas: Resources
) -> None:
    svc = task_service
    loop = [node(svc, "cyc", "a", "b"), node(svc, "cyc", "b", "a")]
    with pytest.raises(ApiException) as caught:
        sagas.create("cycle", {"task": {"id": "cyc"}, "steps": loop})
    assert caught.value.status == 422
    assert "spec.steps[0].dependsOn[0]: b closes a cycle (a -> b -> a)" in json.loads(caught.value.body)["message"]
    with pytest.raises(ApiException) as caught:
        sagas.create("unknown", {"task": {"id": "unk"}, "steps": [node(svc, "unk", "a", "nobody")]})
    assert "spec.steps[0].dependsOn[0]: no step is named nobody" in json.loads(caught.value.body)["message"]
