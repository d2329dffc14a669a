"""Adversarial suite: repair decisions (#25), by namespace viewers and editors with the chart's roles.

A repair decision moves a saga that acts as its creator, so it is an authority like an approval: a viewer must not
make one, an editor must not use one to lend themselves the creator's rights (skipping a failed check before steps
that act on Kubernetes as the creator), and a decision typed where admission does not run must not count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from test_attack_identity import as_user, chart_roles, stays, team, uncovered

from steadfast.dev.controlplane import cluster

pytestmark = [pytest.mark.controlplane, pytest.mark.adversarial]
__all__ = ["chart_roles", "team", "uncovered"]  # fixtures this module uses


def guarded_saga(svc: TaskService, namespace: str, task: str) -> dict[str, Any]:
    """A failing check (it pauses), then a step only a cluster admin could take: a ConfigMap in kube-system."""
    target = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"pwned-{namespace}", "namespace": "kube-system"},
    }
    return {
        "task": {"id": task},
        "steps": [
            {"name": "check", "action": {"http": {"method": "DELETE", "url": f"{svc.url}/notices/{task}"}}},
            {"name": "escalate", "action": {"kubernetes": {"operation": "apply", "object": target}}},
        ],
        "onFailure": {"action": "Pause"},
    }


def decide(api: client.ApiClient, namespace: str, name: str, repair: dict[str, Any], **meta: Any) -> None:
    body: dict[str, Any] = {"spec": {"repair": repair}}
    if meta:
        body["metadata"] = meta
    client.CustomObjectsApi(api).patch_namespaced_custom_object(GROUP, VERSION, namespace, "tasksagas", name, body)


def test_an_editor_may_not_skip_an_admins_check_to_run_its_kubernetes_steps(
    operator: Operator, kube: client.ApiClient, control_plane: cluster.State, team: str, task_service: TaskService
) -> None:
    """The admin's saga stops at its failed check; an editor (who holds `repair` through `edit`) skips it so the
    next step would write kube-system as the admin: refused. A retry (the admin's own step again) is allowed."""
    task = f"{team}-guard"
    task_service.fault(f"DELETE /notices/{task}", fail=-1, status=503)
    try:
        sagas = Resources(kube, team, "tasksagas", "TaskSaga")
        sagas.create("guarded", guarded_saga(task_service, team, task))  # created by the admin
        sagas.wait_phase("guarded", "Paused")
        with pytest.raises(ApiException) as refused:
            decide(as_user(control_plane, "mallory"), team, "guarded", {"action": "Skip", "reason": "trust me"})
        assert refused.value.status == 403
        assert "only its creator (admin) may skip step check" in str(refused.value.body)
        stays(lambda: sagas.status("guarded").get("phase") == "Paused", 2, "the saga moved on")
        with pytest.raises(ApiException) as gone:
            client.CoreV1Api(kube).read_namespaced_config_map(f"pwned-{team}", "kube-system")
        assert gone.value.status == 404
    finally:
        task_service.fault(f"DELETE /notices/{task}", fail=0)


def test_a_viewer_may_not_repair(
    operator: Operator, kube: client.ApiClient, control_plane: cluster.State, team: str, task_service: TaskService
) -> None:
    """The built-in `view` role (with the chart's aggregated read rules) gives no way to decide."""
    rbac = client.RbacAuthorizationV1Api(kube)
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}
    subject = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "viewer-vic"}
    rbac.create_namespaced_role_binding(team, {"metadata": {"name": "viewers"}, "roleRef": ref, "subjects": [subject]})
    review = client.AuthorizationV1Api(kube).create_subject_access_review(
        {
            "spec": {
                "user": "viewer-vic",
                "resourceAttributes": {"group": GROUP, "resource": "tasksagas", "verb": "repair", "namespace": team},
            }
        }
    )
    assert review.status.allowed is False
    editor = client.AuthorizationV1Api(kube).create_subject_access_review(
        {
            "spec": {
                "user": "mallory",
                "resourceAttributes": {"group": GROUP, "resource": "tasksagas", "verb": "repair", "namespace": team},
            }
        }
    )
    assert editor.status.allowed is True  # the chart aggregates repair into edit (rbac.repairAggregateTo)


def test_a_decision_typed_where_admission_does_not_run_is_refused_by_the_saga(
    operator: Operator,
    kube: client.ApiClient,
    control_plane: cluster.State,
    team: str,
    task_service: TaskService,
    uncovered: Callable[[str], None],
) -> None:
    uncovered(team)
    task = f"{team}-typed"
    task_service.fault(f"DELETE /notices/{task}", fail=-1, status=503)
    try:
        sagas = Resources(kube, team, "tasksagas", "TaskSaga")
        spec = guarded_saga(task_service, team, task)
        spec["steps"] = spec["steps"][:1]
        sagas.create("typed", spec)
        sagas.wait_phase("typed", "Paused")
        forged = {"annotations": {"steadfast.dev/repaired-by": "admin", "steadfast.dev/repair-seal": "eyJ9.AAAA"}}
        decide(as_user(control_plane, "mallory"), team, "typed", {"action": "Compensate"}, **forged)
        status = sagas.wait_status("typed", lambda s: bool(s.get("decisions")), "the decision judged")
        assert status["phase"] == "Paused"
        assert "admission webhook did not run" in status["decisions"][0]["result"]
    finally:
        task_service.fault(f"DELETE /notices/{task}", fail=0)
