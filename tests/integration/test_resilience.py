"""Crash safety: SIGKILL the operator and the engine, restart the API server and etcd, and check what must hold.

CI runs this at a small size; `STEADFAST_CHAOS_SAGAS=150 STEADFAST_CHAOS_ROUNDS=6 pytest -m chaos` runs it
bigger by hand. Each test prints what it saw (raw deliveries versus applied effects).
"""

from __future__ import annotations

import collections
import os
import random
import time
from typing import Any

import pytest
from e2e_support import Operator, Resources, TaskService, eventually, peering
from kubernetes import client

from steadfast.dev.controlplane import cluster
from steadfast.dev.engines import Engine
from steadfast.dev.workflow_api import WorkflowAPI

pytestmark = [pytest.mark.controlplane, pytest.mark.chaos]

SAGAS = int(os.environ.get("STEADFAST_CHAOS_SAGAS", "40"))
MONITORS = int(os.environ.get("STEADFAST_CHAOS_MONITORS", "10"))
APPROVALS = int(os.environ.get("STEADFAST_CHAOS_APPROVALS", "10"))
ROUNDS = int(os.environ.get("STEADFAST_CHAOS_ROUNDS", "3"))
FINAL = ("Succeeded", "Compensated", "CompensationFailed", "Failed")


def saga(svc: TaskService, task: str) -> dict[str, Any]:
    def http(method: str, path: str, body: Any = None) -> dict[str, Any]:
        return {"http": {"method": method, "url": f"{svc.url}{path}", **({"body": body} if body else {})}}

    return {
        "task": {"id": task},
        "steps": [
            {
                "name": "record",
                "action": http("POST", "/records", {"id": task}),
                "compensation": http("DELETE", f"/records/{task}"),
            },
            {
                "name": "reserve",
                "action": http("POST", "/capacity/reserve", {"task": task}),
                "compensation": http("POST", "/capacity/release", {"task": task}),
            },
            {"name": "notify", "action": http("POST", "/notices", {"task": task})},
            {"name": "dashboard", "action": http("POST", "/dashboard", {"task": task})},
        ],
    }


def instance_ids(engine: Engine) -> list[str]:
    with WorkflowAPI(engine.address) as api:
        return api.instance_ids()


def final_sagas(sagas: Resources, names: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    def all_final() -> dict[str, dict[str, Any]] | None:
        items = sagas.api.list_namespaced_custom_object("steadfast.dev", "v1alpha1", sagas.namespace, "tasksagas")[
            "items"
        ]
        by_name = {i["metadata"]["name"]: i for i in items}
        done = {n: by_name[n] for n in names if (by_name.get(n, {}).get("status") or {}).get("phase") in FINAL}
        return done if len(done) == len(names) else None

    result: dict[str, dict[str, Any]] = eventually(all_final, timeout=timeout, what="every saga final", interval=0.5)
    return result


def assert_effects_once(svc: TaskService, tasks: list[str]) -> None:
    stats = svc.stats()
    applied = collections.Counter((a["route"], a["key"]) for a in stats["applied"])
    twice = {k: v for k, v in applied.items() if v > 1}
    assert not twice, f"effects applied more than once: {twice}"
    per_task = collections.Counter(a["path"] for a in stats["applied"] if a["route"] == "POST /records")
    assert len(per_task) == 1 or all(v == 1 for v in per_task.values())
    records = [a for a in stats["applied"] if a["route"] == "POST /records"]
    assert len(records) == len(tasks), (len(records), len(tasks))
    print(f"\n[chaos] raw deliveries {len(stats['deliveries'])}, applied effects {len(stats['applied'])}")


@pytest.mark.statestores  # also run on daprd with the chart's PostgreSQL and Redis stores
def test_operator_sigkill_rounds(
    operator: Operator, engine: Engine, task_service: TaskService, kube: client.ApiClient, namespace: str
) -> None:
    task_service.reset()
    for route in ("POST /capacity/reserve", "POST /notices"):
        task_service.fault(route, fail=0, delay=0.3)  # keep sagas in flight while the operator dies
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    monitors = Resources(kube, namespace, "healthmonitors", "HealthMonitor")
    approvals = Resources(kube, namespace, "approvalrequests", "ApprovalRequest")
    names = [f"c{i:03d}" for i in range(SAGAS)]
    for name in names:
        sagas.create(name, saga(task_service, f"{namespace}-{name}"))
    for i in range(MONITORS):
        monitors.create(
            f"m{i:02d}", {"target": {"http": {"url": f"{task_service.url}/healthz/m{i}"}}, "healthyInterval": "1s"}
        )
    for i in range(APPROVALS):
        approvals.create(
            f"a{i:02d}", {"subject": {"title": f"chaos {i}"}, "approvers": {"users": ["alice"]}, "timeout": "4s"}
        )
    rng = random.Random(7)
    for _ in range(ROUNDS):
        time.sleep(rng.uniform(0.3, 2.0))
        operator.kill()
        time.sleep(rng.uniform(0.0, 0.5))
        operator.start()
    done = final_sagas(sagas, names, timeout=60 + SAGAS)
    assert {d["status"]["phase"] for d in done.values()} == {"Succeeded"}
    assert_effects_once(task_service, names)
    # One instance per resource: its deterministic ID, the one its status names.
    uids = {n: d["metadata"]["uid"] for n, d in done.items()}
    listed = instance_ids(engine)
    for name, uid in uids.items():
        mine = [i for i in listed if i.endswith(uid)]
        assert len(mine) == 1, (name, mine)
        assert mine[0] == done[name]["status"]["workflowInstanceId"]
    for i in range(APPROVALS):
        approvals.wait_phase(f"a{i:02d}", "TimedOut", timeout=60)
    for i in range(MONITORS):
        status = monitors.wait_status(f"m{i:02d}", lambda s: s.get("checkCount", 0) >= 3, "checks go on")
        assert status["phase"] == "Healthy"


@pytest.mark.statestores  # also run on daprd with the chart's PostgreSQL and Redis stores
def test_engine_sigkill_mid_run_resumes(
    operator: Operator, engine: Engine, task_service: TaskService, kube: client.ApiClient, namespace: str
) -> None:
    task_service.reset()
    task_service.fault("POST /notices", fail=0, delay=0.3)
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    names = [f"e{i:03d}" for i in range(max(10, SAGAS // 2))]
    for name in names:
        sagas.create(name, saga(task_service, f"{namespace}-{name}"))
    eventually(lambda: len(task_service.stats()["applied"]) >= len(names), what="sagas under way")
    engine.kill()
    time.sleep(0.5)
    engine.start()
    done = final_sagas(sagas, names, timeout=90 + SAGAS)
    assert {d["status"]["phase"] for d in done.values()} == {"Succeeded"}
    assert_effects_once(task_service, names)


def test_api_server_and_etcd_restart(
    operator: Operator, plane: cluster.ControlPlane, task_service: TaskService, kube: client.ApiClient, namespace: str
) -> None:
    task_service.reset()
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    monitors = Resources(kube, namespace, "healthmonitors", "HealthMonitor")
    monitors.create(
        "during", {"target": {"http": {"url": f"{task_service.url}/healthz/during"}}, "healthyInterval": "1s"}
    )
    monitors.wait_status("during", lambda s: s.get("checkCount", 0) >= 1, "first check")
    took = plane.restart("etcd", "kube-apiserver")
    print(f"\n[chaos] etcd + kube-apiserver back after {took:.1f}s")
    back = time.monotonic()

    def create_after_restart() -> bool:
        try:
            sagas.create("after", saga(task_service, f"{namespace}-after"))
            return True
        except Exception:
            return False

    eventually(create_after_restart, what="API server accepts writes")
    monitors.patch("during", {"healthyInterval": "2s"})
    sagas.wait_phase("after", "Succeeded", timeout=30)
    recovered = time.monotonic() - back
    monitors.wait_status("during", lambda s: s.get("observedGeneration") == 2, "spec change seen", timeout=30)
    assert recovered <= 10, f"operator took {recovered:.1f}s to finish a saga after the API server came back"


def test_standby_replica_takes_over(
    operator: Operator,
    engine: Engine,
    control_plane: cluster.State,
    task_service: TaskService,
    kube: client.ApiClient,
    namespace: str,
    kubectl_path: Any,
    tmp_path: Any,
) -> None:
    """Two peered replicas: one active, one paused; SIGKILL the active one and the other carries on."""
    operator.stop()
    peering(kube, kubectl_path, control_plane.kubeconfig, "chaos-peers")
    common = ["--peering", "chaos-peers", "--peering-lifetime", "3", "--no-webhooks"]
    active = Operator(control_plane, engine, tmp_path / "active.log", extra_args=[*common, "--priority", "100"])
    standby = Operator(control_plane, engine, tmp_path / "standby.log", extra_args=[*common, "--priority", "50"])
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    try:
        active.start()
        standby.start()
        # kopf starts paused and resumes once peering says it is the highest live replica.
        eventually(lambda: "Resuming operations" in active.log.read_text(), timeout=30, what="active resumed")
        time.sleep(2)
        assert "Resuming operations" not in standby.log.read_text(), "the standby runs too"
        sagas.create("before", saga(task_service, f"{namespace}-before"))
        sagas.wait_phase("before", "Succeeded", timeout=30)
        active.kill()
        killed = time.monotonic()
        sagas.create("after", saga(task_service, f"{namespace}-after"))
        sagas.wait_phase("after", "Succeeded", timeout=60)
        print(f"\n[chaos] standby took over and finished a saga {time.monotonic() - killed:.1f}s after the kill")
        assert "Resuming operations" in standby.log.read_text()
    finally:
        active.stop()
        standby.stop()
        operator.start()
