"""Class 5 of the security promise: Kubernetes actions never reach Secrets, nor more than one namespace.

The attacker, dave, is an editor of his namespace: he may read its Secrets with kubectl, but people who
may only view his sagas may not, so nothing of a Secret may land in a saga's status. He spells the Secret
in ways a literal check misses (a placeholder kind, `..` in apiVersion), and aims a wait at `..` as its
namespace or name, which would turn the operator's shared watch into a cluster-wide one and let his wait
judge (and output) another namespace's object. Each is refused with a message naming the field; no
Secret value reaches status; the operator lists no collection for these waits.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from steadfast.dev.controlplane import cluster

pytestmark = [pytest.mark.controlplane, pytest.mark.adversarial]

PASSWORD = "hunter2-" + uuid.uuid4().hex[:8]
VICTIM_DATA = "victim-" + uuid.uuid4().hex[:8]


@pytest.fixture
def dave(kube: client.ApiClient, namespace: str, control_plane: cluster.State) -> client.CustomObjectsApi:
    """dave edits his namespace: sagas, ConfigMaps and Secrets (as the chart's edit role allows)."""
    rbac = client.RbacAuthorizationV1Api(kube)
    rules = [
        {"apiGroups": [GROUP], "resources": ["tasksagas"], "verbs": ["get", "list", "watch", "create"]},
        {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["*"]},
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
    client.CoreV1Api(kube).create_namespaced_secret(
        namespace, {"metadata": {"name": "db"}, "stringData": {"password": PASSWORD}}
    )
    return client.CustomObjectsApi(config.new_client_from_config(config_file=control_plane.kubeconfig, context="dave"))


@pytest.fixture
def victim(kube: client.ApiClient) -> Iterator[str]:
    """Another team's namespace with a ConfigMap named as dave's wait will name it."""
    name = f"v-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "payroll"}, "data": {"v": VICTIM_DATA}})
    yield name
    core.delete_namespace(name)


def saga(title: str, action: dict[str, Any], outputs: dict[str, str] | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {"name": "reach", "action": {"kubernetes": action}}
    if outputs:
        step["outputs"] = outputs
    return {"task": {"id": "T-5", "title": title}, "steps": [step]}


def create(api: client.CustomObjectsApi, namespace: str, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskSaga", "metadata": {"name": name}, "spec": spec}
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "tasksagas", body)


def refused_at_creation(api: client.CustomObjectsApi, namespace: str, spec: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as caught:
        create(api, namespace, f"s-{uuid.uuid4().hex[:6]}", spec)
    assert caught.value.status == 422, caught.value.body
    return str(json.loads(caught.value.body)["message"])


def failed_step(sagas: Resources, name: str) -> tuple[str, dict[str, Any]]:
    done = sagas.wait_phase(name, "Failed", "Succeeded", "Compensated", timeout=60)
    status = done["status"]
    assert status["phase"] == "Failed", status
    return str(status["steps"][0]["message"]), status


def no_secret_in(status: dict[str, Any]) -> None:
    text = json.dumps(status)
    assert PASSWORD not in text and base64.b64encode(PASSWORD.encode()).decode() not in text, text


def object_lists(operator: Operator) -> float:
    return operator.metrics().get('steadfast_object_requests_total{verb="list"}', 0.0)


def test_a_placeholder_kind_does_not_reach_secrets(
    kube: client.ApiClient, namespace: str, operator: Operator, dave: client.CustomObjectsApi
) -> None:
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    read: dict[str, Any] = {
        "operation": "wait",
        "object": {"apiVersion": "v1", "kind": "$(task.title)", "metadata": {"name": "db"}},
        "successWhen": "true",
    }
    create(dave, namespace, "by-kind", saga("Secret", read, {"pw": "object.data.password"}))
    message, status = failed_step(sagas, "by-kind")
    assert "Secret in v1 is Secrets: kubernetes actions do not touch Secrets" in message, message
    no_secret_in(status)
    # written literally, it is refused when the saga is created, as the model would refuse it
    literal = {**read, "object": {**read["object"], "kind": "Secret"}}
    assert "do not touch Secrets" in refused_at_creation(dave, namespace, saga("x", literal))


def test_an_api_version_with_dot_dot_segments_is_refused(
    kube: client.ApiClient, namespace: str, operator: Operator, dave: client.CustomObjectsApi
) -> None:
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    action: dict[str, Any] = {
        "operation": "patch",
        "object": {"apiVersion": "$(task.title)", "kind": "Secret", "metadata": {"name": "db"}},
    }
    create(dave, namespace, "by-version", saga("v1/../..", action, {"pw": "object.data.password"}))
    message, status = failed_step(sagas, "by-version")
    assert "the rendered kubernetes.object.apiVersion 'v1/../..' has more than one '/'" in message, message
    no_secret_in(status)
    for spelled in ("v1/../..", "apps/../v1", "../v1"):
        literal = {**action, "object": {**action["object"], "apiVersion": spelled}}
        problem = refused_at_creation(dave, namespace, saga("x", literal))
        assert f"kubernetes.object.apiVersion {spelled!r}" in problem, problem


@pytest.mark.parametrize("field", ["namespace", "name"])
def test_a_dot_dot_namespace_or_name_never_widens_the_watch(
    kube: client.ApiClient,
    namespace: str,
    operator: Operator,
    dave: client.CustomObjectsApi,
    victim: str,
    field: str,
) -> None:
    """`..` as namespace made the shared watch list every namespace's ConfigMaps, and dave's wait judged (and
    output) the victim's `payroll`; as a name it makes the object path the collection's."""
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    meta = {"name": "payroll", "namespace": "$(task.title)"} if field == "namespace" else {"name": "$(task.title)"}
    wait: dict[str, Any] = {
        "operation": "wait",
        "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta},
        "successWhen": "true",
        "timeout": "20s",
    }
    lists = object_lists(operator)
    create(dave, namespace, f"by-{field}", saga("..", wait, {"v": "object.data.v"}))
    message, status = failed_step(sagas, f"by-{field}")
    assert f"the rendered kubernetes.object.metadata.{field} '..'" in message, message
    assert VICTIM_DATA not in json.dumps(status)
    assert object_lists(operator) == lists  # no collection was listed (a watch starts with a list)
    literal = {**wait, "object": {**wait["object"], "metadata": {**meta, field: ".."}}}
    problem = refused_at_creation(dave, namespace, saga("x", literal))
    assert f"kubernetes.object.metadata.{field} '..'" in problem, problem
