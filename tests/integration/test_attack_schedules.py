"""Attacks through SagaSchedules by a namespace editor: runs act as the schedule's creator, never as the operator; a
forged creator annotation is replaced or ignored; runs stay in the schedule's namespace; a schedule cannot run
more often than the cluster allows (the test operator allows 2 s; production's default is a minute).

dave may create schedules and sagas in his namespace and nothing else; the operator here runs as the cluster
admin, so any run that acted as the operator would succeed where dave's own kubectl would not.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService, eventually
from kubernetes import client, config
from test_attack_identity import stays, uncovered  # noqa: F401  (a fixture)

from steadfast.api.kinds import REQUESTED_BY, SEAL
from steadfast.dev.controlplane import cluster

pytestmark = [pytest.mark.controlplane, pytest.mark.adversarial]


@pytest.fixture
def dave(kube: client.ApiClient, namespace: str, control_plane: cluster.State) -> client.CustomObjectsApi:
    """dave: schedules and sagas in his namespace (read and create), nothing more."""
    rbac = client.RbacAuthorizationV1Api(kube)
    rules = [
        {
            "apiGroups": [GROUP],
            "resources": ["tasksagas", "sagaschedules"],
            "verbs": ["get", "list", "watch", "create", "delete"],
        }
    ]
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "scheduler"}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "dave-schedules"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "scheduler"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dave"}],
        },
    )
    return client.CustomObjectsApi(config.new_client_from_config(config_file=control_plane.kubeconfig, context="dave"))


@pytest.fixture
def elsewhere(kube: client.ApiClient) -> Iterator[str]:
    name = f"v-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def schedule_body(name: str, saga: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SagaSchedule",
        "metadata": {"name": name, **meta},
        "spec": {"schedule": "*/2 * * * * *", "concurrencyPolicy": "Forbid", "sagaTemplate": {"spec": saga}},
    }


def http_saga(svc: TaskService) -> dict[str, Any]:
    return {"steps": [{"name": "touch", "action": {"http": {"method": "DELETE", "url": f"{svc.url}/records/atk"}}}]}


def runs_in(kube: client.ApiClient, namespace: str, schedule: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.CustomObjectsApi(kube).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "tasksagas", label_selector=f"steadfast.dev/schedule={schedule}"
    )["items"]
    return items


def test_a_schedules_run_acts_as_its_creator_not_the_operator(
    operator: Operator, kube: client.ApiClient, namespace: str, dave: client.CustomObjectsApi
) -> None:
    """dave may not write ConfigMaps; a scheduled saga that does is refused for that run, as his kubectl would be."""
    apply = {
        "operation": "apply",
        "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "by-schedule"}, "data": {"a": "b"}},
    }
    saga = {"steps": [{"name": "write", "action": {"kubernetes": apply}}]}
    dave.create_namespaced_custom_object(GROUP, VERSION, namespace, "sagaschedules", schedule_body("cm", saga))
    run = eventually(lambda: runs_in(kube, namespace, "cm"), timeout=20, what="a run")[0]
    assert run["metadata"]["annotations"][REQUESTED_BY] == "dave"
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    done = sagas.wait_phase(run["metadata"]["name"], "Failed", "Succeeded", "Compensated", timeout=60)
    assert done["status"]["phase"] == "Failed", done["status"]
    assert "forbidden" in json.dumps(done["status"]).lower()
    core = client.CoreV1Api(kube)
    assert "by-schedule" not in {c.metadata.name for c in core.list_namespaced_config_map(namespace).items}


def test_a_forged_creator_annotation_is_replaced_by_the_real_creator(
    operator: Operator, kube: client.ApiClient, namespace: str, dave: client.CustomObjectsApi, task_service: TaskService
) -> None:
    forged = schedule_body("forged", http_saga(task_service), annotations={REQUESTED_BY: "admin"})
    stored = dave.create_namespaced_custom_object(GROUP, VERSION, namespace, "sagaschedules", forged)
    assert stored["metadata"]["annotations"][REQUESTED_BY] == "dave"
    run = eventually(lambda: runs_in(kube, namespace, "forged"), timeout=20, what="a run")[0]
    assert run["metadata"]["annotations"][REQUESTED_BY] == "dave"


def test_without_a_sealed_creator_no_run_is_made(
    operator: Operator,
    kube: client.ApiClient,
    namespace: str,
    task_service: TaskService,
    uncovered: Callable[[str], None],  # noqa: F811
) -> None:
    """Where the admission webhooks do not reach, a typed creator and seal are not believed: no run at all."""
    uncovered(namespace)
    forged = schedule_body("unsealed", http_saga(task_service), annotations={REQUESTED_BY: "admin", SEAL: "x.y"})
    stored = client.CustomObjectsApi(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "sagaschedules", forged
    )
    assert stored["metadata"]["annotations"][SEAL] == "x.y", "admission ran: the namespace was not left out"
    schedules = Resources(kube, namespace, "sagaschedules", "SagaSchedule")
    status = schedules.wait_status(
        "unsealed",
        lambda s: any(c["type"] == "Stalled" and c["reason"] == "RunRefused" for c in s.get("conditions", [])),
        "refused",
        timeout=30,
    )
    assert "no creator" in status["lastProblem"]
    stays(lambda: not runs_in(kube, namespace, "unsealed"), 3, "no run without a sealed creator")


def test_runs_stay_in_the_schedules_namespace(
    operator: Operator,
    kube: client.ApiClient,
    namespace: str,
    elsewhere: str,
    dave: client.CustomObjectsApi,
    task_service: TaskService,
) -> None:
    body = schedule_body("home", http_saga(task_service))
    body["spec"]["sagaTemplate"]["metadata"] = {"namespace": elsewhere, "labels": {"a": "b"}}
    try:
        dave.create_namespaced_custom_object(GROUP, VERSION, namespace, "sagaschedules", body)
    except client.exceptions.ApiException as exc:  # refused outright is fine too
        assert exc.status in (400, 422), exc.body
        return
    eventually(lambda: runs_in(kube, namespace, "home"), timeout=20, what="a run at home")
    assert runs_in(kube, elsewhere, "home") == []


def test_a_schedule_more_often_than_the_cluster_allows_is_refused_at_apply(
    operator: Operator, namespace: str, dave: client.CustomObjectsApi, task_service: TaskService
) -> None:
    """Every second, or a list that puts two runs one second apart: a saga a second churned through the operator
    for as long as dave likes. Refused naming spec.schedule, whether created so or changed to it."""
    for name, cron in (("every-second", "* * * * * *"), ("pair", "0,1 */5 * * * *"), ("every", "@every 1s")):
        body = schedule_body(name, http_saga(task_service))
        body["spec"]["schedule"] = cron
        with pytest.raises(client.exceptions.ApiException) as refused:
            dave.create_namespaced_custom_object(GROUP, VERSION, namespace, "sagaschedules", body)
        assert refused.value.status == 422, refused.value.body
        assert "spec.schedule: runs as little as 1s apart" in json.loads(refused.value.body)["message"], cron
    ok = dave.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "sagaschedules", schedule_body("allowed", http_saga(task_service))
    )
    assert ok["spec"]["schedule"] == "*/2 * * * * *"
