"""The operator's Prometheus endpoint, scraped while sagas and monitors run."""

from __future__ import annotations

import pytest
from e2e_support import Operator, Resources, TaskService, eventually
from kubernetes import client

pytestmark = pytest.mark.controlplane


def test_metrics_follow_what_happens(operator: Operator, task_service: TaskService, kube: client.ApiClient,
                                     namespace: str) -> None:
    before = operator.metrics()
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    monitors = Resources(kube, namespace, "healthmonitors", "HealthMonitor")
    url = task_service.url
    sagas.create("m-ok", {"task": {"id": "m-ok"}, "steps": [
        {"name": "one", "action": {"http": {"method": "POST", "url": f"{url}/records", "body": {"id": "m-ok"}}}}]})
    sagas.create("m-undo", {"task": {"id": "m-undo"}, "steps": [
        {"name": "one", "action": {"http": {"method": "POST", "url": f"{url}/records", "body": {"id": "m-undo"}}},
         "compensation": {"http": {"method": "DELETE", "url": f"{url}/records/m-undo"}}},
        {"name": "two", "action": {"http": {"method": "POST", "url": f"{url}/notices",
                                            "headers": [{"name": "X-Fail", "value": "always"}]}}}]})
    monitors.create("m-mon", {"target": {"http": {"url": f"{url}/healthz/m-mon"}}, "healthyInterval": "1s"})
    sagas.wait_phase("m-ok", "Succeeded")
    sagas.wait_phase("m-undo", "Compensated")
    monitors.wait_status("m-mon", lambda s: s.get("phase") == "Healthy", "healthy")

    def delta(name: str) -> float:
        return operator.metrics().get(name, 0.0) - before.get(name, 0.0)

    eventually(lambda: delta('steadfast_sagas_total{outcome="succeeded"}') >= 1, what="succeeded counted")
    assert delta('steadfast_sagas_total{outcome="compensated"}') >= 1
    assert delta('steadfast_sagas_total{outcome="started"}') >= 2
    now = operator.metrics()
    assert now.get('steadfast_monitors{phase="Healthy"}', 0) >= 1
    assert delta("steadfast_status_writes_total") >= 4
    counts = {k: v for k, v in now.items() if k.startswith("steadfast_action_duration_seconds_count")}
    compensations = 'steadfast_action_duration_seconds_count{kind="TaskSaga",outcome="ok",what="compensation"}'
    assert delta(compensations) >= 1, counts
    assert delta('steadfast_action_duration_seconds_count{kind="HealthMonitor",outcome="ok",what="check"}') >= 1
    # Coalescing never writes more than what was submitted.
    assert now["steadfast_status_writes_total"] <= now["steadfast_status_snapshots_total"]
