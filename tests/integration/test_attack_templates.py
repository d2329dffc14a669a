"""Attacks through saga templates by a namespace editor (dave): a template is a definition others wrote, so
naming one must never lend him what its author may do or see.

- naming another namespace's SagaTemplate: a reference has no namespace (an extra field is dropped), so it can
  only mean a template of his own namespace;
- naming a ClusterSagaTemplate he may not read: refused (nobody runs a definition they may not read);
- a template's Kubernetes step: it acts as the saga's creator (dave), never as the template's author;
- forging status.template: the operator never reads it, and the workflow writes back the pinned record.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService
from kubernetes import client, config
from test_approval import refused

from steadfast.dev.controlplane import cluster

pytestmark = [pytest.mark.controlplane, pytest.mark.adversarial]


@pytest.fixture
def dave(kube: client.ApiClient, namespace: str, control_plane: cluster.State) -> client.CustomObjectsApi:
    """dave edits sagas and SagaTemplates of his namespace (as the chart's edit role allows); no ConfigMaps."""
    rbac = client.RbacAuthorizationV1Api(kube)
    rules = [
        {"apiGroups": [GROUP], "resources": ["tasksagas", "sagatemplates"], "verbs": ["get", "list", "create"]},
    ]
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "editor"}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "dave-edits"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "editor"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dave"}],
        },
    )
    return client.CustomObjectsApi(config.new_client_from_config(config_file=control_plane.kubeconfig, context="dave"))


@pytest.fixture
def cluster_template(kube: client.ApiClient, namespace: str) -> Iterator[Any]:
    """Makes ClusterSagaTemplates as the platform team (admin) and removes them after the test."""
    api = client.CustomObjectsApi(kube)
    made: list[str] = []

    def make(spec: dict[str, Any]) -> str:
        name = f"attack-{uuid.uuid4().hex[:8]}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterSagaTemplate", "metadata": {"name": name}}
        api.create_cluster_custom_object(GROUP, VERSION, "clustersagatemplates", {**body, "spec": spec})
        made.append(name)
        return name

    yield make
    for name in made:
        api.delete_cluster_custom_object(GROUP, VERSION, "clustersagatemplates", name)


def _grant_cluster_templates(kube: client.ApiClient, namespace: str, user: str) -> None:
    rbac = client.RbacAuthorizationV1Api(kube)
    name = f"templates-{namespace}"
    rbac.create_cluster_role(
        {
            "metadata": {"name": name},
            "rules": [{"apiGroups": [GROUP], "resources": ["clustersagatemplates"], "verbs": ["get"]}],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
    )


def _revoke_cluster_templates(kube: client.ApiClient, namespace: str) -> None:
    rbac = client.RbacAuthorizationV1Api(kube)
    rbac.delete_cluster_role_binding(f"templates-{namespace}")
    rbac.delete_cluster_role(f"templates-{namespace}")


def _saga(name: str, template: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TaskSaga",
        "metadata": {"name": name},
        "spec": {"task": {"id": name}, "template": template, **spec},
    }


def test_another_namespaces_template_cannot_be_named(
    operator: Operator, kube: client.ApiClient, namespace: str, dave: client.CustomObjectsApi, task_service: TaskService
) -> None:
    victim = f"v-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": victim}})
    try:
        Resources(kube, victim, "sagatemplates", "SagaTemplate").create(
            "payroll",
            {"steps": [{"name": "pay", "action": {"http": {"method": "POST", "url": f"{task_service.url}/records"}}}]},
        )
        forged = _saga("heist", {"kind": "SagaTemplate", "name": "payroll", "namespace": victim})
        message = refused(lambda: dave.create_namespaced_custom_object(GROUP, VERSION, namespace, "tasksagas", forged))
        assert f"spec.template: SagaTemplate payroll not found in namespace {namespace}" in message
    finally:
        core.delete_namespace(victim)


def test_a_cluster_template_one_may_not_read_is_refused(
    operator: Operator, namespace: str, dave: client.CustomObjectsApi, cluster_template: Any, task_service: TaskService
) -> None:
    name = cluster_template(
        {"steps": [{"name": "a", "action": {"http": {"method": "POST", "url": f"{task_service.url}/records"}}}]}
    )
    saga = _saga("peek", {"kind": "ClusterSagaTemplate", "name": name})
    message = refused(lambda: dave.create_namespaced_custom_object(GROUP, VERSION, namespace, "tasksagas", saga))
    assert f"spec.template: dave may not get ClusterSagaTemplate {name}, so may not run it" in message
    # A missing one is refused in the same words: a refusal tells nothing of what exists.
    absent = _saga("absent", {"kind": "ClusterSagaTemplate", "name": "no-such-template"})
    message = refused(lambda: dave.create_namespaced_custom_object(GROUP, VERSION, namespace, "tasksagas", absent))
    assert "dave may not get ClusterSagaTemplate no-such-template" in message


def test_a_templates_kubernetes_step_acts_as_the_sagas_creator(
    operator: Operator, kube: client.ApiClient, namespace: str, dave: client.CustomObjectsApi, cluster_template: Any
) -> None:
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "planted"}, "data": {"a": "b"}}
    name = cluster_template({"steps": [{"name": "plant", "action": {"kubernetes": {"object": configmap}}}]})
    _grant_cluster_templates(kube, namespace, "dave")
    try:
        dave.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "tasksagas", _saga("plant", {"kind": "ClusterSagaTemplate", "name": name})
        )
        sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
        status = sagas.wait_phase("plant", "Failed", "Compensated", "Succeeded", timeout=60)["status"]
    finally:
        _revoke_cluster_templates(kube, namespace)
    assert status["phase"] in ("Failed", "Compensated"), status
    assert 'User "dave" cannot' in status["steps"][0]["message"], status["steps"][0]
    assert (
        not client.CoreV1Api(kube).list_namespaced_config_map(namespace, field_selector="metadata.name=planted").items
    )


def test_a_forged_status_template_changes_nothing(
    operator: Operator,
    kube: client.ApiClient,
    namespace: str,
    dave: client.CustomObjectsApi,
    task_service: TaskService,
) -> None:
    post = {"method": "POST", "url": f"{task_service.url}/notices"}
    Resources(kube, namespace, "sagatemplates", "SagaTemplate").create(
        "real", {"steps": [{"name": "slow", "action": {"http": post}}]}
    )
    task_service.fault("POST /notices", fail=0, delay=3)
    try:
        dave.create_namespaced_custom_object(GROUP, VERSION, namespace, "tasksagas", _saga("forged", {"name": "real"}))
        sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
        sagas.wait_status("forged", lambda s: s.get("currentStep") == "slow", "the slow step running")
        # Whoever may write tasksagas/status (the admin client stands in for them) claims another template.
        client.CustomObjectsApi(kube).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "tasksagas",
            "forged",
            {"status": {"template": {"name": "evil", "generation": 9}}},
        )
        status = sagas.wait_phase("forged", "Succeeded", "Failed", "Compensated")["status"]
    finally:
        task_service.clear_faults()
    assert status["phase"] == "Succeeded" and [s["name"] for s in status["steps"]] == ["slow"]
    assert status["template"]["name"] == "real" and status["template"]["generation"] == 1
