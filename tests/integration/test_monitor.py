"""HealthMonitor end to end: transitions and alerts, thresholds, suspend, live spec edits, restarts, bounded history."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_support import Operator, Resources, TaskService, eventually
from kubernetes import client

from steadfast.dev.engines import Engine
from steadfast.dev.workflow_api import WorkflowAPI

pytestmark = pytest.mark.controlplane
# Runs of the soak monitor (one check a second): 60 in CI; STEADFAST_MONITOR_SOAK=200 runs it as it used to.
# 60 runs in one history would hold over 300 events, so the bound below still tells a bounded history apart.
SOAK_ITERATIONS = int(os.environ.get("STEADFAST_MONITOR_SOAK", "60"))
ONE_RUN_EVENTS = 24


def spec(svc: TaskService, name: str, **extra: Any) -> dict[str, Any]:
    """Each monitor checks its own path, so faults injected for one do not touch the others."""
    return {
        "target": {"http": {"method": "GET", "url": f"{svc.url}/healthz/{name}", "timeout": "2s"}},
        "healthyInterval": "1s",
        "unhealthyInterval": "1s",
        "alert": {
            "webhook": {"http": {"method": "POST", "url": f"{svc.url}/alerts"}},
            "severity": "critical",
            "sendOnRecovery": True,
        },
        **extra,
    }


def instance_ids(engine: Engine) -> set[str]:
    with WorkflowAPI(engine.address) as api:
        return set(api.instance_ids())


def history_size(engine: Engine, instance: str) -> int:
    """Stored events of the instance's current run, as the engine's history API returns them."""
    with WorkflowAPI(engine.address) as api:
        return len(api.history(instance))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def soak(operator: Operator, task_service: TaskService, kube: client.ApiClient) -> Iterator[dict[str, Any]]:
    """A monitor started before the other tests of this module and checked after them (SOAK_ITERATIONS runs)."""
    namespace = f"soak-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": namespace}})
    monitors = Resources(kube, namespace, "healthmonitors", "HealthMonitor")
    monitors.create("soak", spec(task_service, "soak", alert=None))
    early = monitors.wait_status("soak", lambda s: s.get("checkCount", 0) >= 2, "two checks")
    yield {"monitors": monitors, "instance": early["workflowInstanceId"]}
    core.delete_namespace(namespace)


@pytest.fixture
def monitors(kube: client.ApiClient, namespace: str, task_service: TaskService) -> Resources:
    task_service.clear_faults()
    return Resources(kube, namespace, "healthmonitors", "HealthMonitor")


def alerts_for(svc: TaskService, monitors: Resources, monitor: str) -> list[dict[str, Any]]:
    """The alerts one monitor sent (the task service is shared by both engines' runs)."""
    return [
        a["body"]
        for a in svc.stats()["applied"]
        if a["path"] == "/alerts"
        and (a["body"].get("monitor"), a["body"].get("namespace")) == (monitor, monitors.namespace)
    ]


@pytest.mark.statestores  # also run on daprd with the chart's PostgreSQL and Redis stores
def test_one_alert_per_transition(
    soak: dict[str, Any], operator: Operator, task_service: TaskService, monitors: Resources
) -> None:
    monitors.create("flappy", spec(task_service, "flappy"))
    monitors.wait_status("flappy", lambda s: s.get("phase") == "Healthy" and s["checkCount"] >= 2, "healthy")
    task_service.fault("GET /healthz/flappy", fail=-1)
    down = monitors.wait_status("flappy", lambda s: s.get("phase") == "Unhealthy", "unhealthy")
    assert down["healthy"] is False
    assert "HTTP 500" in down["lastError"]
    # Stay down for a few more checks: still one alert.
    monitors.wait_status("flappy", lambda s: s["consecutiveFailures"] >= 3, "three failures")
    task_service.clear_faults()
    up = monitors.wait_status("flappy", lambda s: s.get("phase") == "Healthy", "recovered")
    assert up["consecutiveFailures"] == 0
    assert up["alertsSent"] == 2
    bodies = alerts_for(task_service, monitors, "flappy")
    assert [b["state"] for b in bodies] == ["unhealthy", "healthy"]
    assert bodies[0]["severity"] == "critical"
    assert bodies[0]["namespace"] == monitors.namespace
    assert "HTTP 500" in bodies[0]["lastError"]
    eventually(lambda: "Recovered" in [e["reason"] for e in monitors.events("flappy")], what="Recovered event")
    reasons = [e["reason"] for e in monitors.events("flappy")]
    assert reasons.count("Unhealthy") == 1
    assert reasons.count("Recovered") == 1
    types = {e["reason"]: e["type"] for e in monitors.events("flappy")}
    assert types["Unhealthy"] == "Warning" and types["Recovered"] == "Normal"


def test_failure_threshold_is_respected(
    soak: dict[str, Any], operator: Operator, task_service: TaskService, monitors: Resources
) -> None:
    monitors.create("patient", spec(task_service, "patient", failureThreshold=3))
    monitors.wait_status("patient", lambda s: s.get("phase") == "Healthy", "healthy")
    task_service.fault("GET /healthz/patient", fail=2)  # two failures, then fine again
    monitors.wait_status("patient", lambda s: s["consecutiveFailures"] == 2, "two failures")
    after = monitors.wait_status(
        "patient", lambda s: s["consecutiveSuccesses"] >= 1 and s["checkCount"] > 3, "success after two failures"
    )
    assert after["phase"] == "Healthy"
    assert after["alertsSent"] == 0
    task_service.fault("GET /healthz/patient", fail=-1)
    down = monitors.wait_status("patient", lambda s: s.get("phase") == "Unhealthy", "unhealthy")
    assert down["consecutiveFailures"] == 3


def test_suspend_and_resume(
    soak: dict[str, Any], operator: Operator, task_service: TaskService, monitors: Resources
) -> None:
    monitors.create("pausable", spec(task_service, "pausable"))
    monitors.wait_status("pausable", lambda s: s.get("checkCount", 0) >= 1, "first check")
    monitors.patch("pausable", {"suspend": True})
    paused = monitors.wait_status("pausable", lambda s: s.get("phase") == "Suspended", "suspended")
    time.sleep(2.5)
    assert monitors.status("pausable")["checkCount"] == paused["checkCount"]
    monitors.patch("pausable", {"suspend": False})
    monitors.wait_status("pausable", lambda s: s["checkCount"] >= paused["checkCount"] + 2, "checking again")


def test_shortened_interval_applies_at_once(
    soak: dict[str, Any], operator: Operator, task_service: TaskService, monitors: Resources
) -> None:
    monitors.create("slow", spec(task_service, "slow", healthyInterval="1h"))
    first = monitors.wait_status(
        "slow", lambda s: s.get("checkCount", 0) == 1 and bool(s.get("nextCheckTime")), "first check"
    )
    monitors.patch("slow", {"healthyInterval": "1s"})
    after = monitors.wait_status("slow", lambda s: s["checkCount"] >= 3, "faster checks", timeout=15)
    assert after["observedGeneration"] == 2
    assert after["nextCheckTime"] < first["nextCheckTime"]


def test_operator_restart_keeps_counters(
    soak: dict[str, Any], operator: Operator, task_service: TaskService, monitors: Resources
) -> None:
    monitors.create("steady", spec(task_service, "steady"))
    task_service.fault("GET /healthz/steady", fail=-1)
    before = monitors.wait_status(
        "steady", lambda s: s.get("phase") == "Unhealthy" and s["checkCount"] >= 3, "unhealthy"
    )
    operator.kill()
    operator.start()
    after = monitors.wait_status(
        "steady", lambda s: s["checkCount"] >= before["checkCount"] + 2, "checks go on", timeout=60
    )
    assert after["consecutiveFailures"] >= before["consecutiveFailures"] + 2
    assert after["alertsSent"] == before["alertsSent"] == 1  # still unhealthy: no second alert
    assert after["continuedAsNew"] > before["continuedAsNew"]
    assert after["workflowInstanceId"] == before["workflowInstanceId"]


def test_delete_ends_and_purges_the_instance(
    soak: dict[str, Any], operator: Operator, engine: Engine, task_service: TaskService, monitors: Resources
) -> None:
    monitors.create("doomed", spec(task_service, "doomed"))
    instance = monitors.wait_status("doomed", lambda s: s.get("checkCount", 0) >= 1, "a check")["workflowInstanceId"]
    assert instance in instance_ids(engine)
    monitors.delete("doomed")
    monitors.wait_gone("doomed")
    eventually(lambda: instance not in instance_ids(engine), what="purged")


def test_history_stays_bounded_over_many_runs(soak: dict[str, Any], operator: Operator, engine: Engine) -> None:
    monitors: Resources = soak["monitors"]
    instance = soak["instance"]
    size_early = history_size(engine, instance)
    if operator.pid is None:
        pytest.fail("operator not running")
    half = monitors.wait_status(
        "soak", lambda s: s["checkCount"] >= SOAK_ITERATIONS // 2, "half-way", timeout=SOAK_ITERATIONS * 2
    )
    rss_half = rss_kib(operator.pid)
    done = monitors.wait_status(
        "soak", lambda s: s["checkCount"] >= SOAK_ITERATIONS, f"{SOAK_ITERATIONS} checks", timeout=SOAK_ITERATIONS * 2
    )
    rss_done = rss_kib(operator.pid)
    size_late = history_size(engine, instance)
    assert done["continuedAsNew"] >= SOAK_ITERATIONS - 1
    # One run holds a sleep, a check, an alert and two reports (under 24 events wherever it is caught);
    # SOAK_ITERATIONS runs in one history would hold five times as many each.
    assert size_early <= ONE_RUN_EVENTS and size_late <= ONE_RUN_EVENTS, (size_early, size_late)
    growth = rss_done - rss_half
    assert growth < 16 * 1024, f"operator RSS grew {growth} KiB from run {half['checkCount']} to {done['checkCount']}"
