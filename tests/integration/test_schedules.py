"""SagaSchedule end to end on the real API server: runs on a 6-field cron every few seconds, their names, labels and
owner, Forbid and Replace, suspend and resume, history limits, and an operator SIGKILLed across scheduled times
(one catch-up run, none twice).

Schedules fire every 2-3 s so that each test takes seconds; STEADFAST_SCHEDULE_SECONDS sets another period.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService, eventually
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.api.kinds import REQUESTED_BY
from steadfast.api.saga import SagaPhase

pytestmark = pytest.mark.controlplane

PERIOD = int(os.environ.get("STEADFAST_SCHEDULE_SECONDS", "2"))
TERMINAL = {p.value for p in SagaPhase if p.terminal}


def saga(svc: TaskService, path: str) -> dict[str, Any]:
    """One step on its own path of the task service, so a test can slow down just its runs."""
    return {"steps": [{"name": "touch", "action": {"http": {"method": "DELETE", "url": f"{svc.url}/records/{path}"}}}]}


def schedule(svc: TaskService, path: str, *, every: int = PERIOD, **extra: Any) -> dict[str, Any]:
    return {
        "schedule": f"*/{every} * * * * *",
        "sagaTemplate": {"metadata": {"labels": {"team": "ops"}}, "spec": saga(svc, path)},
        **extra,
    }


def runs(kube: client.ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = client.CustomObjectsApi(kube).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "tasksagas", label_selector=f"steadfast.dev/schedule={name}"
    )
    items: list[dict[str, Any]] = listed["items"]
    return sorted(items, key=lambda r: r["metadata"]["name"])


def scheduled_time(run: dict[str, Any]) -> int:
    return int(run["metadata"]["labels"]["steadfast.dev/scheduled-time"])


def active(items: list[dict[str, Any]]) -> list[str]:
    return [r["metadata"]["name"] for r in items if (r.get("status") or {}).get("phase") not in TERMINAL]


@pytest.fixture
def schedules(kube: client.ApiClient, namespace: str, task_service: TaskService) -> Resources:
    task_service.clear_faults()
    return Resources(kube, namespace, "sagaschedules", "SagaSchedule")


def test_runs_on_schedule_with_names_labels_owner_and_history(
    operator: Operator, kube: client.ApiClient, namespace: str, task_service: TaskService, schedules: Resources
) -> None:
    created = schedules.create("tick", schedule(task_service, "tick", successfulRunsHistoryLimit=1))
    uid = created["metadata"]["uid"]
    creator = created["metadata"]["annotations"][REQUESTED_BY]
    status = schedules.wait_status("tick", lambda s: s.get("runsCreated", 0) >= 3, "three runs", timeout=40)
    assert status["nextScheduleTime"] > status["lastScheduleTime"]
    items = runs(kube, namespace, "tick")
    for run in items:
        meta = run["metadata"]
        stamp = scheduled_time(run)
        assert meta["name"] == f"tick-{stamp}"
        assert stamp % PERIOD == 0
        assert meta["labels"]["team"] == "ops"
        assert meta["ownerReferences"][0]["uid"] == uid
        assert meta["annotations"][REQUESTED_BY] == creator  # created as the schedule's creator
        assert run["spec"]["task"]["id"] == meta["name"]  # none given: the run's name
    # History: at most 1 succeeded run is kept (trimmed when the next one is due).
    eventually(
        lambda: (
            len([r for r in runs(kube, namespace, "tick") if (r.get("status") or {}).get("phase") == "Succeeded"]) <= 1
            and schedules.status("tick").get("lastSuccessfulTime")
        ),
        timeout=20,
        what="history trimmed to 1",
    )
    schedules.wait_event("tick", "RunCreated")
    ready = {c["type"]: c["status"] for c in schedules.status("tick")["conditions"]}
    assert ready["Ready"] == "True"


def test_forbid_skips_while_a_run_is_active(
    operator: Operator, kube: client.ApiClient, namespace: str, task_service: TaskService, schedules: Resources
) -> None:
    task_service.fault("DELETE /records/slow-forbid", fail=0, delay=PERIOD * 3)
    schedules.create("forbid", schedule(task_service, "slow-forbid", concurrencyPolicy="Forbid"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and schedules.status("forbid").get("skippedRuns", 0) < 1:
        assert len(active(runs(kube, namespace, "forbid"))) <= 1
        time.sleep(0.3)
    status = schedules.wait_status("forbid", lambda s: s.get("skippedRuns", 0) >= 1, "one skipped", timeout=5)
    assert status["activeCount"] <= 1
    schedules.wait_event("forbid", "RunSkipped")


def test_replace_deletes_the_active_run(
    operator: Operator, kube: client.ApiClient, namespace: str, task_service: TaskService, schedules: Resources
) -> None:
    task_service.fault("DELETE /records/slow-replace", fail=0, delay=20)
    replacing = schedule(task_service, "slow-replace", every=3, concurrencyPolicy="Replace")
    replacing["sagaTemplate"]["spec"]["onDelete"] = "Abandon"  # a replaced run goes at once
    schedules.create("replace", replacing)
    first = eventually(lambda: runs(kube, namespace, "replace"), timeout=20, what="a first run")[0]
    name = first["metadata"]["name"]
    eventually(
        lambda: name not in {r["metadata"]["name"] for r in runs(kube, namespace, "replace")},
        timeout=40,
        what=f"{name} replaced",
    )
    status = schedules.wait_status("replace", lambda s: s.get("runsCreated", 0) >= 2, "a second run")
    assert name not in status["active"]
    schedules.wait_event("replace", "RunReplaced")


def test_suspend_and_resume(
    operator: Operator, kube: client.ApiClient, namespace: str, task_service: TaskService, schedules: Resources
) -> None:
    schedules.create("paused", schedule(task_service, "paused", suspend=True))
    schedules.wait_status("paused", lambda s: any(c["reason"] == "Suspended" for c in s.get("conditions", [])), "seen")
    time.sleep(PERIOD + 1.5)
    assert runs(kube, namespace, "paused") == []
    resumed_at = time.time()
    schedules.patch("paused", {"suspend": False})
    first = eventually(lambda: runs(kube, namespace, "paused"), timeout=20, what="a run after resume")[0]
    assert scheduled_time(first) >= int(resumed_at) - 1  # times while suspended are not caught up
    schedules.patch("paused", {"suspend": True})
    schedules.wait_status("paused", lambda s: s.get("observedGeneration") == 3, "suspended again")
    count = len(runs(kube, namespace, "paused"))
    time.sleep(PERIOD + 1.5)
    assert len(runs(kube, namespace, "paused")) == count


def test_operator_killed_across_scheduled_times_catches_up_once(
    operator: Operator, kube: client.ApiClient, namespace: str, task_service: TaskService, schedules: Resources
) -> None:
    schedules.create("catchup", schedule(task_service, "catchup", successfulRunsHistoryLimit=50, startingDeadline="5m"))
    eventually(lambda: runs(kube, namespace, "catchup"), timeout=20, what="a first run")
    operator.kill()
    killed = time.time()
    time.sleep(PERIOD * 2 + 1)  # two scheduled times pass while the operator is down
    restarted = time.time()
    try:
        missed = [t for t in range(int(killed) + 1, int(restarted)) if t % PERIOD == 0]
        assert len(missed) >= 2
    finally:
        operator.start()
    status = schedules.wait_status("catchup", lambda s: s.get("missedRuns", 0) >= 1, "missed times counted")
    after = eventually(
        lambda: sorted(t for r in runs(kube, namespace, "catchup") if (t := scheduled_time(r)) > killed),
        timeout=30,
        what="a run after the restart",
    )
    # One run catches up, for the latest time due when the operator was back; the earlier ones are counted missed.
    assert after[0] >= max(missed), f"caught up {after[0]}, missed {missed}"
    assert not set(missed[:-1]) & set(after), "no run for the earlier missed times"
    assert status["missedRuns"] >= len(missed) - 1
    schedules.wait_event("catchup", "RunMissed")


def test_invalid_saga_spec_is_refused_naming_the_field(
    operator: Operator, task_service: TaskService, schedules: Resources
) -> None:
    bad = schedule(task_service, "bad")
    bad["sagaTemplate"]["spec"]["steps"][0]["action"] = {}
    with pytest.raises(ApiException) as refused:
        schedules.create("bad", bad)
    assert "spec.sagaTemplate.spec.steps[0].action" in str(refused.value.body)
    with pytest.raises(ApiException) as zone:
        schedules.create("bad", {**schedule(task_service, "bad"), "timeZone": "Mars/Olympus"})
    assert "spec.timeZone" in str(zone.value.body)


def test_runs_of_a_template_are_pinned_and_checked_per_run(
    operator: Operator, kube: client.ApiClient, namespace: str, task_service: TaskService, schedules: Resources
) -> None:
    """A schedule of a SagaTemplate run: each run carries the template as it was when that run started, and a
    value the template stops accepting refuses the next runs (the schedule says why) without touching earlier ones."""
    templates = Resources(kube, namespace, "sagatemplates", "SagaTemplate")
    step = {"http": {"method": "DELETE", "url": f"{task_service.url}/records/$(params.path)"}}
    templates.create(
        "touch",
        {"parameters": [{"name": "path", "enum": ["tmpl-a", "tmpl-b"]}], "steps": [{"name": "touch", "action": step}]},
    )
    spec = {"task": {"title": "templated"}, "template": {"name": "touch"}, "parameters": {"path": "tmpl-a"}}
    schedules.create("tmpl", {"schedule": f"*/{PERIOD} * * * * *", "sagaTemplate": {"spec": spec}})
    first = eventually(
        lambda: [r for r in runs(kube, namespace, "tmpl") if (r.get("status") or {}).get("phase") == "Succeeded"],
        timeout=30,
        what="a templated run succeeded",
    )[0]
    assert first["status"]["template"]["name"] == "touch" and first["status"]["template"]["generation"] == 1
    assert "DELETE /records/tmpl-a" in task_service.applied("/records/tmpl-")
    # The template no longer accepts the schedule's value: the following runs are refused, the schedule says why.
    templates.patch("touch", {"parameters": [{"name": "path", "enum": ["tmpl-b"]}]})
    schedules.wait_status(
        "tmpl",
        lambda s: any(c["type"] == "Stalled" and c["status"] == "True" for c in s.get("conditions", [])),
        "runs refused",
        timeout=30,
    )
    schedules.wait_event("tmpl", "RunRefused", containing="spec.parameters.path")
    assert (templates.get("touch") or {})["metadata"]["generation"] == 2
    kept = next(r for r in runs(kube, namespace, "tmpl") if r["metadata"]["name"] == first["metadata"]["name"])
    assert kept["status"]["phase"] == "Succeeded" and kept["status"]["template"]["generation"] == 1
