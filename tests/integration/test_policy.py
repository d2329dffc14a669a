"""SteadfastPolicy end to end with several identities: a saga's author cannot skip or weaken the admins' gate.

Users (tests/conftest.py): alice and bob in group approvers, dave in sre, mallory in none. bob writes sagas;
the admins' policy wants one approval from group sre for high-priority sagas in namespaces they label.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService, allow_users, eventually
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from test_approval import decide, refused

from steadfast.dev.controlplane import cluster

pytestmark = pytest.mark.controlplane

USERS = ("alice", "bob", "dave", "mallory")


@pytest.fixture
def as_user(control_plane: cluster.State) -> Callable[[str], client.CustomObjectsApi]:
    def get(user: str) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(
            config.new_client_from_config(config_file=control_plane.kubeconfig, context=user)
        )

    return get


@pytest.fixture
def team(kube: client.ApiClient, namespace: str) -> str:
    """The namespace, labelled as the policy selects it, where every test user may create sagas and requests."""
    client.CoreV1Api(kube).patch_namespace(namespace, {"metadata": {"labels": {"steadfast-test-tier": namespace}}})
    allow_users(kube, namespace, USERS)
    return namespace


@pytest.fixture
def policy(kube: client.ApiClient, team: str) -> Iterator[str]:
    """A policy of the admins (the test's admin client) that selects only this test's namespace."""
    api = client.CustomObjectsApi(kube)
    name = f"org-{team}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SteadfastPolicy",
        "metadata": {"name": name},
        "spec": {
            "approvals": [
                {
                    "name": "high-needs-sre",
                    "match": {
                        "priorities": ["high", "critical"],
                        "namespaceSelector": {"matchLabels": {"steadfast-test-tier": team}},
                    },
                    "approvers": {"groups": ["sre"], "required": 1},
                    "timeout": "1h",
                }
            ]
        },
    }
    api.create_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", body)
    yield name
    try:
        api.delete_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", name)
    except ApiException as exc:
        if exc.status != 404:  # a test may have deleted it already
            raise


def saga(svc: TaskService, priority: str, approval: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": {"id": f"t-{priority}", "priority": priority},
        "steps": [{"name": "record", "action": {"http": {"method": "POST", "url": f"{svc.url}/records"}}}],
    }
    if approval is not None:
        spec["approval"] = approval
    return spec


def create(api: client.CustomObjectsApi, namespace: str, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskSaga", "metadata": {"name": name}, "spec": spec}
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "tasksagas", body)


def test_an_ungated_saga_is_gated_by_policy_and_only_its_approvers_decide(
    operator: Operator, kube: client.ApiClient, task_service: TaskService, team: str, policy: str, as_user: Any
) -> None:
    sagas = Resources(kube, team, "tasksagas", "TaskSaga")
    aprs = Resources(kube, team, "approvalrequests", "ApprovalRequest")
    create(as_user("bob"), team, "sneaky", saga(task_service, "high"))  # no spec.approval at all
    status = sagas.wait_phase("sneaky", "AwaitingApproval", "Succeeded", "Failed")["status"]
    assert status["phase"] == "AwaitingApproval"
    assert status["approvalPolicy"] == f"{policy}/high-needs-sre"
    request = eventually(lambda: aprs.get("sneaky-approval"), what="the gate's ApprovalRequest")
    assert request["spec"]["approvers"] == {"groups": ["sre"], "required": 1, "users": []}
    assert request["spec"]["timeout"] == "1h"
    assert "required by SteadfastPolicy" in request["spec"]["subject"]["description"]
    events = eventually(lambda: [e for e in sagas.events("sneaky") if e["reason"] == "AwaitingApproval"])
    assert f"SteadfastPolicy {policy}/high-needs-sre" in events[0]["message"]
    # bob (the author, in group approvers) may not approve: the policy names sre.
    assert "not" in refused(lambda: decide(as_user("bob"), team, "sneaky-approval", True, "mine"))
    decide(as_user("dave"), team, "sneaky-approval", True, "ok from sre")
    assert sagas.wait_phase("sneaky", "Succeeded", "Failed", "Rejected")["status"]["phase"] == "Succeeded"


def test_the_spec_cannot_name_a_friend_or_a_longer_timeout(
    operator: Operator, kube: client.ApiClient, task_service: TaskService, team: str, policy: str, as_user: Any
) -> None:
    sagas = Resources(kube, team, "tasksagas", "TaskSaga")
    aprs = Resources(kube, team, "approvalrequests", "ApprovalRequest")
    friendly = {"required": True, "approvers": {"users": ["mallory"]}, "timeout": "720h"}
    create(as_user("bob"), team, "friendly", saga(task_service, "critical", friendly))
    sagas.wait_phase("friendly", "AwaitingApproval", "Succeeded", "Failed")
    request = eventually(lambda: aprs.get("friendly-approval"), what="the gate's ApprovalRequest")
    assert request["spec"]["approvers"]["users"] == [] and request["spec"]["approvers"]["groups"] == ["sre"]
    assert request["spec"]["timeout"] == "1h"
    refused(lambda: decide(as_user("mallory"), team, "friendly-approval", True, "friend says yes"))


def test_sagas_the_policy_does_not_match_run_as_before(
    operator: Operator, kube: client.ApiClient, task_service: TaskService, team: str, policy: str, as_user: Any
) -> None:
    sagas = Resources(kube, team, "tasksagas", "TaskSaga")
    create(as_user("bob"), team, "low", saga(task_service, "low"))
    status = sagas.wait_phase("low", "Succeeded", "AwaitingApproval", "Failed")["status"]
    assert status["phase"] == "Succeeded" and "approvalPolicy" not in status


def test_a_policy_change_applies_to_sagas_not_yet_started(
    operator: Operator, kube: client.ApiClient, task_service: TaskService, team: str, policy: str, as_user: Any
) -> None:
    sagas = Resources(kube, team, "tasksagas", "TaskSaga")
    create(as_user("bob"), team, "before", saga(task_service, "high"))
    assert sagas.wait_phase("before", "AwaitingApproval", "Succeeded")["status"]["phase"] == "AwaitingApproval"
    client.CustomObjectsApi(kube).delete_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", policy)
    create(as_user("bob"), team, "after", saga(task_service, "high"))
    assert sagas.wait_phase("after", "Succeeded", "AwaitingApproval", "Failed")["status"]["phase"] == "Succeeded"
    # The saga gated before the change still waits for the policy's approvers.
    status = sagas.get("before")
    assert status is not None and status["status"]["phase"] == "AwaitingApproval"
    decide(as_user("dave"), team, "before-approval", True, "still needed")
    assert sagas.wait_phase("before", "Succeeded", "Failed", "Rejected")["status"]["phase"] == "Succeeded"


def test_kubectl_apply_warns_the_creator(
    operator: Operator,
    task_service: TaskService,
    team: str,
    policy: str,
    control_plane: cluster.State,
    kubectl_path: Path,
) -> None:
    manifest = json.dumps(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskSaga",
            "metadata": {"name": "warned", "namespace": team},
            "spec": saga(task_service, "high"),
        }
    )
    done = subprocess.run(
        [str(kubectl_path), "--kubeconfig", control_plane.kubeconfig, "--context", "bob", "apply", "-f", "-"],
        input=manifest,
        text=True,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "Warning: this TaskSaga will wait for approval: 1 approval(s) from group sre within 1h" in done.stderr
    assert f"required by SteadfastPolicy {policy}/high-needs-sre" in done.stderr


def test_only_cluster_admins_may_write_policies(operator: Operator, team: str, as_user: Any) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SteadfastPolicy",
        "metadata": {"name": "bobs-policy"},
        "spec": {"approvals": []},
    }
    for user in USERS:
        with pytest.raises(ApiException) as caught:
            as_user(user).create_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", body)
        assert caught.value.status == 403, user


def _service(core: client.CoreV1Api, namespace: str, name: str) -> str:
    body = {"metadata": {"name": name}, "spec": {"ports": [{"port": 80}], "selector": {"app": name}}}
    created = core.create_namespaced_service(namespace, body)
    return str(created.spec.cluster_ip)


def test_a_refused_step_compensates_what_was_done(
    operator: Operator, kube: client.ApiClient, task_service: TaskService, team: str
) -> None:
    core = client.CoreV1Api(kube)
    other = f"{team}-elsewhere"
    core.create_namespace({"metadata": {"name": other}})
    try:
        target = _service(core, other, "internal")
        time.sleep(2)  # the operator learns Services from its watch
        sagas = Resources(kube, team, "tasksagas", "TaskSaga")
        steps = [
            {
                "name": "record",
                "action": {"http": {"method": "POST", "url": f"{task_service.url}/records", "body": {"id": team}}},
                "compensation": {"http": {"method": "DELETE", "url": f"{task_service.url}/records/{team}"}},
            },
            {"name": "reach-across", "action": {"http": {"url": f"http://{target}/"}}},
        ]
        sagas.create("across", {"task": {"id": team}, "steps": steps})
        obj = sagas.wait_phase("across", "Compensated", "Succeeded", "Failed", "CompensationFailed")
        status = obj["status"]
        assert status["phase"] == "Compensated"
        assert f"Service {other}/internal, in another namespace than {team}" in status["steps"][1]["message"]
        assert [c["step"] for c in status["compensations"]] == ["record"]
        assert f"DELETE /records/{team}" in task_service.applied()
        stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
        assert stalled["status"] == "True" and "in another namespace" in stalled["message"]
    finally:
        core.delete_namespace(other)
