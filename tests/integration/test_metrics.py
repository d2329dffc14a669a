"""The operator's Prometheus endpoint, scraped while sagas, monitors and approvals run."""

from __future__ import annotations

import time

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService, eventually
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from steadfast.dev.controlplane import cluster

pytestmark = pytest.mark.controlplane


def test_metrics_follow_what_happens(
    operator: Operator, task_service: TaskService, kube: client.ApiClient, namespace: str
) -> None:
    before = operator.metrics()
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    monitors = Resources(kube, namespace, "healthmonitors", "HealthMonitor")
    url = task_service.url
    sagas.create(
        "m-ok",
        {
            "task": {"id": "m-ok"},
            "steps": [
                {"name": "one", "action": {"http": {"method": "POST", "url": f"{url}/records", "body": {"id": "m-ok"}}}}
            ],
        },
    )
    sagas.create(
        "m-undo",
        {
            "task": {"id": "m-undo"},
            "steps": [
                {
                    "name": "one",
                    "action": {"http": {"method": "POST", "url": f"{url}/records", "body": {"id": "m-undo"}}},
                    "compensation": {"http": {"method": "DELETE", "url": f"{url}/records/m-undo"}},
                },
                {
                    "name": "two",
                    "action": {
                        "http": {
                            "method": "POST",
                            "url": f"{url}/notices",
                            "headers": [{"name": "X-Fail", "value": "always"}],
                        }
                    },
                },
            ],
        },
    )
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


def test_approval_decision_latency(
    operator: Operator, task_service: TaskService, kube: client.ApiClient, control_plane: cluster.State, namespace: str
) -> None:
    """steadfast_approval_decision_seconds: one observation per decided request, by outcome, opening to decision."""
    rbac = client.RbacAuthorizationV1Api(kube)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "approver"},
            "rules": [{"apiGroups": [GROUP], "resources": ["approvalrequests"], "verbs": ["get", "patch"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "alice-approves"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "approver"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
        },
    )
    approvals = Resources(kube, namespace, "approvalrequests", "ApprovalRequest")
    probe = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ApprovalRequest",
        "metadata": {"name": "probe"},
        "spec": {"subject": {"title": "probe"}, "approvers": {"users": ["alice"]}},
    }

    def webhooks_served() -> bool:  # the decider is recorded only by the admission webhooks
        try:
            obj = approvals.api.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "approvalrequests", probe, dry_run="All"
            )
        except ApiException:
            return False
        return "steadfast.dev/requested-by" in (obj["metadata"].get("annotations") or {})

    eventually(webhooks_served, what="admission webhooks served", interval=0.25)
    count = 'steadfast_approval_decision_seconds_count{outcome="%s"}'
    total = 'steadfast_approval_decision_seconds_sum{outcome="%s"}'
    before = operator.metrics()

    def delta(name: str) -> float:
        return operator.metrics().get(name, 0.0) - before.get(name, 0.0)

    # Approved by alice, then its action runs: the Executing and Completed snapshots carry the same decision.
    approvals.create(
        "m-approve",
        {
            "subject": {"title": "deploy"},
            "approvers": {"users": ["alice"]},
            "timeout": "1h",
            "action": {"http": {"method": "POST", "url": f"{task_service.url}/deploy"}},
        },
    )
    approvals.create(
        "m-expire", {"subject": {"title": "nobody answers"}, "approvers": {"users": ["alice"]}, "timeout": "3s"}
    )
    approvals.wait_status("m-approve", lambda s: s.get("phase") == "Pending" and bool(s.get("expiresAt")), "open")
    time.sleep(1.5)  # so the latency is at least a second (both ends are stamped to the second)
    as_alice = client.CustomObjectsApi(
        config.new_client_from_config(config_file=control_plane.kubeconfig, context="alice")
    )
    as_alice.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "approvalrequests",
        "m-approve",
        {"spec": {"decision": {"approved": True, "reason": "metrics"}}},
    )
    assert approvals.wait_phase("m-approve", "Completed", "ActionFailed")["status"]["phase"] == "Completed"
    assert approvals.wait_phase("m-expire", "TimedOut", timeout=30)["status"]["phase"] == "TimedOut"

    eventually(lambda: delta(count % "approved") >= 1 and delta(count % "timed_out") >= 1, what="decisions observed")
    assert delta(count % "approved") == 1, "the Executing/Completed snapshots must not count the decision again"
    assert delta(total % "approved") >= 1
    assert delta(total % "timed_out") >= 1  # opened to expired: about the 3s timeout
    assert delta('steadfast_approval_decision_seconds_bucket{le="+Inf",outcome="approved"}') == 1
    assert operator.metrics().get('steadfast_approvals{phase="Completed"}', 0) >= 1
