"""Kubernetes-native steps end to end: objects applied, patched, waited for and undone, as the saga's creator.

The control plane runs kube-controller-manager, so a Deployment scaled to zero becomes Available by itself;
Gizmos (a CRD of this module's own, apart from test_controlplane's Widgets) get their status from the test,
which is what a wait waits for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, allow_users, eventually, free_crd
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from steadfast.dev.controlplane import cluster

pytestmark = pytest.mark.controlplane

AVAILABLE = 'object.status.?conditions.orValue([]).exists(c, c.type == "Available" && c.status == "True")'


@pytest.fixture(scope="module")
def gizmos(kube: client.ApiClient) -> str:
    """A namespaced CRD with a status subresource: only the test writes its status."""
    return free_crd(kube, "steps.steadfast.test", "Gizmo", "gizmos")


def kube_step(name: str, obj: dict[str, Any], **extra: Any) -> dict[str, Any]:
    operation = extra.pop("operation", "apply")
    action: dict[str, Any] = {"operation": operation, "object": obj}
    for key in ("successWhen", "failureWhen", "timeout"):
        if key in extra:
            action[key] = extra.pop(key)
    return {"name": name, "action": {"kubernetes": action}, **extra}


def saga(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"task": {"id": "T-17", "title": "kubernetes steps"}, "steps": list(steps)}


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def gizmo(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "steps.steadfast.test/v1", "kind": "Gizmo", "metadata": {"name": name}, "spec": spec}


def set_gizmo_status(kube: client.ApiClient, namespace: str, name: str, status: dict[str, Any]) -> None:
    client.CustomObjectsApi(kube).patch_namespaced_custom_object_status(
        "steps.steadfast.test", "v1", namespace, "gizmos", name, {"status": status}
    )


def gizmo_exists(kube: client.ApiClient, namespace: str, name: str) -> bool:
    try:
        client.CustomObjectsApi(kube).get_namespaced_custom_object(
            "steps.steadfast.test", "v1", namespace, "gizmos", name
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def configmap_data(kube: client.ApiClient, namespace: str, name: str) -> dict[str, str] | None:
    try:
        return client.CoreV1Api(kube).read_namespaced_config_map(name, namespace).data or {}
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def create_saga_as(state: cluster.State, user: str, namespace: str, name: str, spec: dict[str, Any]) -> None:
    """Create a TaskSaga with `user`'s own token: admission records them as the creator the steps act as."""
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=state.kubeconfig, context=user))
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskSaga", "metadata": {"name": name}, "spec": spec}
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "tasksagas", body)


@pytest.fixture
def sagas(kube: client.ApiClient, namespace: str, operator: Operator) -> Resources:
    return Resources(kube, namespace, "tasksagas", "TaskSaga")


def test_apply_outputs_and_a_deployment_scaled_to_zero(
    kube: client.ApiClient, namespace: str, sagas: Resources
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web-$(saga.name)"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
            },
        },
    }
    sagas.create(
        "deploy",
        saga(
            kube_step(
                "config",
                configmap("settings-$(saga.name)", task="$(task.id)", title="$(task.title)"),
                outputs={"configUid": "object.metadata.uid", "configName": "object.metadata.name"},
            ),
            kube_step(
                "scale",
                deployment,
                successWhen=AVAILABLE,
                timeout="60s",
                outputs={"generation": "object.metadata.generation"},
            ),
        ),
    )
    done = sagas.wait_phase("deploy", "Succeeded", "Failed", "Compensated", timeout=90)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    data = configmap_data(kube, namespace, "settings-deploy")
    assert data == {"task": "T-17", "title": "kubernetes steps"}
    live = client.CoreV1Api(kube).read_namespaced_config_map("settings-deploy", namespace)
    steps = {s["name"]: s for s in done["status"]["steps"]}
    assert steps["config"]["outputs"] == {"configUid": live.metadata.uid, "configName": "settings-deploy"}
    assert steps["scale"]["outputs"] == {"generation": 1}
    # Applied with Steadfast's field manager, by the creator (admin here): server-side apply records both.
    managers = {m.manager for m in live.metadata.managed_fields or []}
    assert "steadfast" in managers
    assert client.AppsV1Api(kube).read_namespaced_deployment("web-deploy", namespace).status.replicas in (None, 0)


def test_wait_times_out_and_everything_applied_is_undone(
    kube: client.ApiClient, namespace: str, sagas: Resources, gizmos: str
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "shared"}, "data": {"owner": "team-a"}})
    sagas.create(
        "slow",
        saga(
            kube_step("mine", configmap("mine", state="new")),
            kube_step("borrow", configmap("shared", owner="saga"), operation="patch"),
            kube_step("gizmo", gizmo("w1", size=3), successWhen="object.status.ready == true", timeout="4s"),
        ),
    )
    done = sagas.wait_phase("slow", "Succeeded", "Compensated", "CompensationFailed", "Failed", timeout=60)
    status = done["status"]
    assert status["phase"] == "Compensated", status
    gizmo_step = next(s for s in status["steps"] if s["name"] == "gizmo")
    assert "object.status.ready == true did not hold within 4s" in gizmo_step["message"]
    # The gizmo the failed step created, the ConfigMap the first step created: deleted. The patched one: restored.
    assert [c["step"] for c in status["compensations"]] == ["gizmo", "borrow", "mine"]
    assert all(c["phase"] == "Succeeded" for c in status["compensations"]), status["compensations"]
    assert not gizmo_exists(kube, namespace, "w1")
    assert configmap_data(kube, namespace, "mine") is None
    assert configmap_data(kube, namespace, "shared") == {"owner": "team-a"}
    restored = core.read_namespaced_config_map("shared", namespace).metadata.annotations or {}
    assert not [k for k in restored if k.startswith("steadfast.dev/")], restored  # the undo removed its mark


def test_wait_ends_when_the_watched_status_changes(
    kube: client.ApiClient, namespace: str, sagas: Resources, gizmos: str, operator: Operator
) -> None:
    sagas.create(
        "watch",
        saga(
            kube_step(
                "gizmo",
                gizmo("w2", size=1),
                successWhen="object.status.ready == true",
                failureWhen='object.status.?phase.orValue("") == "Broken"',
                timeout="2m",
                outputs={"endpoint": "object.status.endpoint"},
            )
        ),
    )
    shown = sagas.wait_status(
        "watch", lambda s: "waiting for" in (s.get("steps") or [{}])[0].get("message", ""), "waiting shown"
    )
    assert shown["steps"][0]["message"].endswith(f"apply Gizmo {namespace}/w2: waiting for object.status.ready == true")
    assert shown["steps"][0]["phase"] == "Running"
    set_gizmo_status(kube, namespace, "w2", {"ready": True, "endpoint": "10.0.0.7:80"})
    done = sagas.wait_phase("watch", "Succeeded", "Failed", "Compensated", timeout=30)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    assert done["status"]["steps"][0]["outputs"] == {"endpoint": "10.0.0.7:80"}
    sample = operator.metrics()
    assert sample.get('steadfast_object_requests_total{verb="watch"}', 0) >= 1


def test_failure_condition_fails_the_wait_at_once(
    kube: client.ApiClient, namespace: str, sagas: Resources, gizmos: str
) -> None:
    sagas.create(
        "broken",
        saga(
            kube_step(
                "gizmo",
                gizmo("w3"),
                successWhen="object.status.ready == true",
                failureWhen='object.status.?phase.orValue("") == "Broken"',
                timeout="5m",
            )
        ),
    )
    eventually(lambda: gizmo_exists(kube, namespace, "w3"), what="gizmo applied")
    time.sleep(1)
    set_gizmo_status(kube, namespace, "w3", {"phase": "Broken"})
    done = sagas.wait_phase("broken", "Compensated", "Failed", "Succeeded", timeout=30)
    assert done["status"]["phase"] == "Compensated", done["status"]
    assert "failureWhen holds" in done["status"]["steps"][0]["message"]
    assert not gizmo_exists(kube, namespace, "w3")


def test_a_namespace_is_created_and_removed_again(kube: client.ApiClient, namespace: str, sagas: Resources) -> None:
    extra = f"{namespace}-extra"
    sagas.create(
        "ns",
        saga(
            kube_step(
                "namespace",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": extra, "labels": {"team": "a"}}},
                successWhen='object.status.phase == "Active"',
                # An explicit compensation replaces the automatic undo.
                compensation={
                    "kubernetes": {
                        "operation": "delete",
                        "object": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": extra}},
                    }
                },
            ),
            kube_step("boom", configmap("x"), operation="patch"),  # no such ConfigMap: the step fails
        ),
    )
    done = sagas.wait_phase("ns", "Compensated", "Failed", "Succeeded", timeout=60)
    assert done["status"]["phase"] == "Compensated", done["status"]
    assert "does not exist" in done["status"]["steps"][1]["message"]
    assert done["status"]["compensations"][0]["message"].startswith(f"delete Namespace {extra}")

    def gone_or_terminating() -> bool:
        try:
            found = client.CoreV1Api(kube).read_namespace(extra)
        except ApiException as exc:
            return bool(exc.status == 404)
        return bool(found.status.phase == "Terminating")

    eventually(gone_or_terminating, timeout=30, what="created namespace deleted by the compensation")


def test_a_user_without_rights_is_refused_by_impersonation(
    kube: client.ApiClient, namespace: str, control_plane: cluster.State, operator: Operator
) -> None:
    allow_users(kube, namespace, ("mallory",))  # may create sagas, nothing else
    create_saga_as(
        control_plane, "mallory", namespace, "sneaky", saga(kube_step("config", configmap("planted", evil="yes")))
    )
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    done = sagas.wait_phase("sneaky", "Failed", "Succeeded", "Compensated", timeout=60)
    message = done["status"]["steps"][0]["message"]
    assert done["status"]["phase"] == "Failed", done["status"]
    assert 'User "mallory" cannot get resource "configmaps"' in message, message
    assert configmap_data(kube, namespace, "planted") is None


@pytest.mark.chaos
def test_operator_killed_mid_wait(
    kube: client.ApiClient, namespace: str, sagas: Resources, gizmos: str, operator: Operator
) -> None:
    sagas.create(
        "survivor",
        saga(kube_step("gizmo", gizmo("w4"), successWhen="object.status.ready == true", timeout="3m")),
    )
    # Its wait times out after the restart: the undo recorded before the kill deletes what it created.
    sagas.create(
        "undone",
        saga(kube_step("gizmo", gizmo("w5"), successWhen="object.status.ready == true", timeout="20s")),
    )
    eventually(lambda: gizmo_exists(kube, namespace, "w4") and gizmo_exists(kube, namespace, "w5"), what="applied")
    time.sleep(2)  # the activities have registered the waits and returned
    operator.kill()
    set_gizmo_status(kube, namespace, "w4", {"ready": True})  # while nobody watches
    operator.start()
    done = sagas.wait_phase("survivor", "Succeeded", "Failed", "Compensated", timeout=60)
    assert done["status"]["phase"] == "Succeeded", json.dumps(done["status"], indent=1)
    undone = sagas.wait_phase("undone", "Compensated", "Succeeded", "Failed", timeout=60)
    assert undone["status"]["phase"] == "Compensated", json.dumps(undone["status"], indent=1)
    assert not gizmo_exists(kube, namespace, "w5")


@pytest.fixture
def monitors(kube: client.ApiClient, namespace: str, operator: Operator) -> Iterator[Resources]:
    yield Resources(kube, namespace, "healthmonitors", "HealthMonitor")


def test_monitor_target_is_healthy_while_the_condition_holds(
    kube: client.ApiClient, namespace: str, monitors: Resources
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "health"}, "data": {"state": "ok"}})
    monitors.create(
        "cm",
        {
            "target": {
                "kubernetes": {
                    "operation": "wait",
                    "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "health"}},
                    "successWhen": 'object.data.state == "ok"',
                }
            },
            "healthyInterval": "1s",
            "unhealthyInterval": "1s",
        },
    )
    monitors.wait_phase("cm", "Healthy", timeout=30)
    core.patch_namespaced_config_map("health", namespace, {"data": {"state": "degraded"}})
    found = monitors.wait_phase("cm", "Unhealthy", timeout=30)
    assert found["status"]["failedCondition"] == 'object.data.state == "ok" (was "degraded")'


def test_an_approved_request_applies_an_object_as_its_creator(
    kube: client.ApiClient, namespace: str, control_plane: cluster.State, operator: Operator
) -> None:
    approvals = Resources(kube, namespace, "approvalrequests", "ApprovalRequest")
    allow_users(kube, namespace, ("alice",))
    approvals.create(
        "open-gate",
        {
            "subject": {"title": "open the gate"},
            "approvers": {"users": ["alice"]},
            "timeout": "5m",
            "action": {
                "kubernetes": {"object": configmap("gate-$(request.name)", approvedBy="$(request.approvedBy[0])")}
            },
        },
    )
    approvals.wait_phase("open-gate", "Pending", timeout=30)
    as_alice = client.CustomObjectsApi(
        config.new_client_from_config(config_file=control_plane.kubeconfig, context="alice")
    )
    as_alice.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "approvalrequests", "open-gate", {"spec": {"decision": {"approved": True}}}
    )
    done = approvals.wait_status("open-gate", lambda s: bool(s.get("actionResult", {}).get("finishedAt")), "action ran")
    assert done["actionResult"]["succeeded"] is True, done
    # Applied as the request's creator (admin here), not as alice, who may not write ConfigMaps.
    assert configmap_data(kube, namespace, "gate-open-gate") == {"approvedBy": "alice"}


def test_objects_go_to_the_sagas_namespace_unless_the_creator_may_write_elsewhere(
    kube: client.ApiClient, namespace: str, control_plane: cluster.State, operator: Operator
) -> None:
    """dave may write ConfigMaps in this namespace only: his saga's object lands here, another namespace refuses."""
    allow_users(kube, namespace, ("dave",))
    rbac = client.RbacAuthorizationV1Api(kube)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "configmaps"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "verbs": ["get", "list", "watch", "patch", "create", "delete"],
                }
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "dave-configmaps"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmaps"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dave"}],
        },
    )
    elsewhere = f"{namespace}-other"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": elsewhere}})
    try:
        for name, target in (("here", None), ("there", elsewhere)):
            obj = configmap(f"by-dave-{name}", who="dave")
            if target:
                obj["metadata"]["namespace"] = target
            create_saga_as(control_plane, "dave", namespace, name, saga(kube_step("cm", obj)))
        sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
        assert sagas.wait_phase("here", "Succeeded", "Failed", timeout=60)["status"]["phase"] == "Succeeded"
        assert configmap_data(kube, namespace, "by-dave-here") == {"who": "dave"}
        there = sagas.wait_phase("there", "Succeeded", "Failed", timeout=60)["status"]
        assert there["phase"] == "Failed"
        assert (
            f'User "dave" cannot get resource "configmaps" in API group "" in the namespace "{elsewhere}"'
            in (there["steps"][0]["message"])
        )
        assert configmap_data(kube, elsewhere, "by-dave-there") is None
    finally:
        core.delete_namespace(elsewhere)
