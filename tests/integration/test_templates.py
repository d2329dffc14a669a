"""Saga templates on the real API server: parameters checked at apply, runs pinned to the template as it was when
they started (edits, deletion and an operator SIGKILL change nothing), golden paths, policies on templated sagas.

Users (tests/conftest.py): bob writes sagas and may read the cluster templates; dave (group sre) approves;
mallory may write sagas in the namespace but may not read the cluster templates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService, allow_users, eventually
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from test_approval import decide, refused

from steadfast.dev.controlplane import cluster

pytestmark = pytest.mark.controlplane

USERS = ("alice", "bob", "dave", "mallory")
CLUSTER_PLURAL = "clustersagatemplates"


@pytest.fixture
def as_user(control_plane: cluster.State) -> Callable[[str], client.CustomObjectsApi]:
    def get(user: str) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(
            config.new_client_from_config(config_file=control_plane.kubeconfig, context=user)
        )

    return get


@pytest.fixture
def team(kube: client.ApiClient, namespace: str) -> Iterator[str]:
    """The namespace, labelled for this test's policies; every user may write sagas there, and all but mallory
    may read the cluster's templates (a ClusterRoleBinding, as a platform team grants it)."""
    client.CoreV1Api(kube).patch_namespace(namespace, {"metadata": {"labels": {"steadfast-test-tier": namespace}}})
    allow_users(kube, namespace, USERS)
    rbac = client.RbacAuthorizationV1Api(kube)
    name = f"template-readers-{namespace}"
    rbac.create_cluster_role(
        {
            "metadata": {"name": name},
            "rules": [{"apiGroups": [GROUP], "resources": [CLUSTER_PLURAL], "verbs": ["get", "list", "watch"]}],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u} for u in ("alice", "bob", "dave")
            ],
        }
    )
    try:
        yield namespace
    finally:
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)


def template_spec(svc: TaskService, *, slow: bool = False) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {
            "name": "record",
            "action": {
                "http": {
                    "method": "POST",
                    "url": f"{svc.url}/records",
                    "body": {"id": "$(params.region)-$(task.id)", "seats": "$(params.seats)"},
                }
            },
            "outputs": {"id": "response.body.id"},
        }
    ]
    if slow:
        steps.append({"name": "notify", "action": {"http": {"method": "POST", "url": f"{svc.url}/notices"}}})
    return {
        "description": "Onboard someone",
        "parameters": [
            {"name": "region", "enum": ["eu", "us"], "description": "Where the account lives."},
            {"name": "seats", "type": "integer", "minimum": 1, "maximum": 5, "default": 1},
        ],
        "steps": steps,
    }


class ClusterTemplates:
    def __init__(self, kube: client.ApiClient) -> None:
        self.api = client.CustomObjectsApi(kube)
        self.created: list[str] = []

    def create(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterSagaTemplate", "metadata": {"name": name}}
        created: dict[str, Any] = self.api.create_cluster_custom_object(
            GROUP, VERSION, CLUSTER_PLURAL, {**body, "spec": spec}
        )
        self.created.append(name)
        return created

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.api.patch_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, name, {"spec": spec})

    def delete(self, name: str) -> None:
        try:
            self.api.delete_cluster_custom_object(GROUP, VERSION, CLUSTER_PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def templates(kube: client.ApiClient) -> Iterator[ClusterTemplates]:
    found = ClusterTemplates(kube)
    yield found
    for name in found.created:
        found.delete(name)


def saga_body(name: str, template: str, parameters: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TaskSaga",
        "metadata": {"name": name},
        "spec": {
            "task": {"id": name},
            "template": {"kind": "ClusterSagaTemplate", "name": template},
            "parameters": parameters,
            **spec,
        },
    }


def test_parameters_are_checked_at_apply(
    operator: Operator, task_service: TaskService, team: str, templates: ClusterTemplates, as_user: Any
) -> None:
    name = f"onboard-{team}"
    templates.create(name, template_spec(task_service))
    bob = as_user("bob")

    def create(saga: str, parameters: dict[str, Any]) -> Any:
        return bob.create_namespaced_custom_object(GROUP, VERSION, team, "tasksagas", saga_body(saga, name, parameters))

    assert "spec.parameters.region: must be one of eu, us" in refused(lambda: create("a", {"region": "mars"}))
    assert "spec.parameters.region: required by the template, not given" in refused(lambda: create("b", {}))
    assert "spec.parameters.seats: must be at most 5" in refused(lambda: create("c", {"region": "eu", "seats": 9}))
    assert "spec.parameters.seats: must be an integer, not a string" in refused(
        lambda: create("d", {"region": "eu", "seats": "2"})
    )
    assert "spec.parameters.colour: not a parameter of the template" in refused(
        lambda: create("e", {"region": "eu", "colour": "red"})
    )
    # A template whose steps read a parameter it does not declare is refused when applied.
    wrong = template_spec(task_service)
    wrong["steps"][0]["action"]["http"]["url"] = f"{task_service.url}/$(params.zone)"
    message = refused(lambda: templates.create(f"wrong-{team}", wrong))
    assert "spec.steps[0].action" in message and "params.zone is not a declared parameter" in message
    # Defaults fill in; the values reach the steps.
    create("good", {"region": "us"})
    sagas = Resources(bob.api_client, team, "tasksagas", "TaskSaga")
    status = sagas.wait_phase("good", "Succeeded", "Failed", "Compensated")["status"]
    assert status["phase"] == "Succeeded" and status["steps"][0]["outputs"] == {"id": "us-good"}
    # The values are fixed once created, like the rest of the spec.
    assert "spec.parameters is immutable" in refused(lambda: sagas.patch("good", {"parameters": {"region": "eu"}}))


def test_a_run_keeps_its_template_as_it_started(
    operator: Operator,
    kube: client.ApiClient,
    task_service: TaskService,
    team: str,
    templates: ClusterTemplates,
    as_user: Any,
) -> None:
    name = f"pinned-{team}"
    templates.create(name, template_spec(task_service, slow=True))
    task_service.fault("POST /notices", fail=0, delay=4)
    try:
        bob = as_user("bob")
        bob.create_namespaced_custom_object(
            GROUP, VERSION, team, "tasksagas", saga_body("pinned", name, {"region": "eu"})
        )
        sagas = Resources(kube, team, "tasksagas", "TaskSaga")
        sagas.wait_status("pinned", lambda s: s.get("currentStep") == "notify", "the slow step running")
        # The template changes and goes away while the run is in flight, and the operator is killed meanwhile.
        templates.patch(name, {"steps": [{"name": "other", "action": {"http": {"url": f"{task_service.url}/x"}}}]})
        operator.kill()
        templates.delete(name)
        operator.start()
        status = sagas.wait_phase("pinned", "Succeeded", "Failed", "Compensated", timeout=90)["status"]
    finally:
        task_service.clear_faults()
    assert status["phase"] == "Succeeded"
    assert [s["name"] for s in status["steps"]] == ["record", "notify"]
    assert status["steps"][0]["outputs"] == {"id": "eu-pinned"}
    assert status["template"]["kind"] == "ClusterSagaTemplate" and status["template"]["name"] == name
    assert status["template"]["generation"] == 1
    # Gone, it can start no new run.
    message = refused(
        lambda: bob.create_namespaced_custom_object(
            GROUP, VERSION, team, "tasksagas", saga_body("late", name, {"region": "eu"})
        )
    )
    assert f"spec.template: ClusterSagaTemplate {name} not found" in message


def test_golden_path_and_the_policy_gate_on_a_templated_saga(
    operator: Operator,
    kube: client.ApiClient,
    task_service: TaskService,
    team: str,
    templates: ClusterTemplates,
    as_user: Any,
) -> None:
    name = f"golden-{team}"
    templates.create(name, template_spec(task_service))
    policies = client.CustomObjectsApi(kube)
    policy = f"golden-{team}"
    selector = {"matchLabels": {"steadfast-test-tier": team}}
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SteadfastPolicy",
        "metadata": {"name": policy},
        "spec": {
            "templates": [{"name": "onboarding", "namespaceSelector": selector, "allowed": [{"name": name}]}],
            "approvals": [
                {
                    "name": "high-needs-sre",
                    "match": {"priorities": ["high"], "namespaceSelector": selector},
                    "approvers": {"groups": ["sre"], "required": 1},
                }
            ],
        },
    }
    policies.create_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", body)
    try:
        bob = as_user("bob")
        inline = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskSaga",
            "metadata": {"name": "inline"},
            "spec": {
                "task": {"id": "x"},
                "steps": [{"name": "a", "action": {"http": {"url": f"{task_service.url}/"}}}],
            },
        }
        message = refused(lambda: bob.create_namespaced_custom_object(GROUP, VERSION, team, "tasksagas", inline))
        assert f"SteadfastPolicy {policy} rule onboarding" in message
        assert f"ClusterSagaTemplate {name}" in message and "inline spec.steps are not allowed" in message
        # The allowed template is gated by the policy's approval rule like any saga.
        gated = saga_body("gated", name, {"region": "eu"})
        gated["spec"]["task"]["priority"] = "high"
        bob.create_namespaced_custom_object(GROUP, VERSION, team, "tasksagas", gated)
        sagas = Resources(kube, team, "tasksagas", "TaskSaga")
        status = sagas.wait_phase("gated", "AwaitingApproval", "Succeeded", "Failed")["status"]
        assert status["phase"] == "AwaitingApproval" and status["approvalPolicy"] == f"{policy}/high-needs-sre"
        aprs = Resources(kube, team, "approvalrequests", "ApprovalRequest")
        eventually(lambda: aprs.get("gated-approval"), what="the gate's ApprovalRequest")
        decide(as_user("dave"), team, "gated-approval", True, "ok")
        assert sagas.wait_phase("gated", "Succeeded", "Failed", "Rejected")["status"]["phase"] == "Succeeded"
    finally:
        policies.delete_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", policy)
