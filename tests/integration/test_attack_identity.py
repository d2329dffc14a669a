"""Adversarial suite: identities and decisions (#23 classes 1, 3 and 4), by namespace editors with the chart's roles.

Each test is an attack that once worked or that the design must keep refusing: a gate decided by a request that is
not the gate's, a gate request's status forged, stamps typed where admission does not run, a seal carried to
another resource, self-approval, and undo marks planted on an object a saga changes. The users are editors of
their namespace through the built-in `edit` role, which the chart's roles aggregate into (the control plane runs
the ClusterRole aggregation controller, as a cluster does).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService, admission_stamps, eventually
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from steadfast.dev.controlplane import binaries, cluster
from steadfast.records import idempotency_key

pytestmark = [pytest.mark.controlplane, pytest.mark.adversarial]

CHART = Path(__file__).resolve().parents[2] / "charts" / "steadfast"
EDITORS = ("alice", "bob", "dave", "mallory")
UNCOVERED = "steadfast-test/no-admission"


@pytest.fixture(scope="module")
def chart_roles(kube: client.ApiClient) -> None:
    """The chart's aggregated user roles, as `helm install` creates them."""
    helm = binaries.ensure(binaries.HELM)["helm"]
    out = subprocess.run(
        [str(helm), "template", "steadfast", str(CHART), "--show-only", "templates/rbac.yaml"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    rbac = client.RbacAuthorizationV1Api(kube)
    for doc in yaml.safe_load_all(out):
        labels = ((doc or {}).get("metadata") or {}).get("labels") or {}
        if doc and doc["kind"] == "ClusterRole" and any("aggregate-to" in k for k in labels):
            try:
                rbac.create_cluster_role(doc)
            except ApiException as exc:
                if exc.status != 409:
                    raise


def as_user(control_plane: cluster.State, user: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=control_plane.kubeconfig, context=user)


@pytest.fixture
def team(kube: client.ApiClient, namespace: str, chart_roles: None, control_plane: cluster.State) -> str:
    """The namespace, where every test user is an editor (built-in `edit`, with the chart's aggregated rules)."""
    client.RbacAuthorizationV1Api(kube).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "editors"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u} for u in EDITORS],
        },
    )

    def may_create_sagas() -> bool:
        review = client.AuthorizationV1Api(as_user(control_plane, "mallory")).create_self_subject_access_review(
            {
                "spec": {
                    "resourceAttributes": {
                        "group": GROUP,
                        "resource": "tasksagas",
                        "verb": "create",
                        "namespace": namespace,
                    }
                }
            }
        )
        return bool(review.status.allowed)

    eventually(may_create_sagas, timeout=30, what="edit aggregates the chart's rules")
    return namespace


@pytest.fixture
def policy(kube: client.ApiClient, team: str) -> Iterator[str]:
    """An admins' policy: high-priority sagas in this namespace need one approval from group sre (dave)."""
    api = client.CustomObjectsApi(kube)
    name = f"attack-{team}"
    client.CoreV1Api(kube).patch_namespace(team, {"metadata": {"labels": {"attack-tier": team}}})
    rule = {
        "name": "high-needs-sre",
        "match": {"priorities": ["high"], "namespaceSelector": {"matchLabels": {"attack-tier": team}}},
        "approvers": {"groups": ["sre"], "required": 1},
        "timeout": "1h",
    }
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SteadfastPolicy", "metadata": {"name": name}}
    api.create_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", {**body, "spec": {"approvals": [rule]}})
    yield name
    api.delete_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", name)


@pytest.fixture
def uncovered(kube: client.ApiClient) -> Iterator[Callable[[str], None]]:
    """Namespaces the admission webhooks do not cover (a namespaceSelector, as the chart's value allows)."""
    admission = client.AdmissionregistrationV1Api(kube)
    selector = {"matchExpressions": [{"key": UNCOVERED, "operator": "DoesNotExist"}]}
    patched: list[tuple[str, str]] = []
    for kind in ("mutating", "validating"):
        read = getattr(admission, f"read_{kind}_webhook_configuration")
        patch = getattr(admission, f"patch_{kind}_webhook_configuration")
        found = read("steadfast.dev")
        hooks = [{"name": h.name, "namespaceSelector": selector} for h in found.webhooks]
        patch("steadfast.dev", {"webhooks": hooks})
        patched.append((kind, "steadfast.dev"))

    def leave_out(namespace: str) -> None:
        """Label the namespace and wait until the API server stops calling the webhooks there: its view of the
        configuration and of the namespace's labels comes from caches that lag the writes."""
        client.CoreV1Api(kube).patch_namespace(namespace, {"metadata": {"labels": {UNCOVERED: "true"}}})
        api = client.CustomObjectsApi(kube)
        eventually(
            lambda: admission_stamps(api, namespace) is False, timeout=30, what="webhooks left out", interval=0.2
        )

    yield leave_out
    for kind, name in patched:
        getattr(admission, f"patch_{kind}_webhook_configuration")(
            name,
            {
                "webhooks": [
                    {"name": h.name, "namespaceSelector": {}}
                    for h in getattr(admission, f"read_{kind}_webhook_configuration")(name).webhooks
                ]
            },
        )


@pytest.fixture
def other_namespace(kube: client.ApiClient) -> Iterator[str]:
    name = f"t-other-{int(time.time() * 1000) % 10**8}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def saga_body(name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskSaga", "metadata": meta, "spec": spec}


def create(api: client.ApiClient, namespace: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body
    )
    return created


def http_step(svc: TaskService, name: str = "record") -> dict[str, Any]:
    return {"name": name, "action": {"http": {"method": "POST", "url": f"{svc.url}/records", "body": {"id": name}}}}


def phase(resources: Resources, name: str) -> str | None:
    found = resources.get(name) or {}
    return (found.get("status") or {}).get("phase")


def stays(check: Callable[[], bool], seconds: float, what: str) -> None:
    """`check` holds for `seconds`: an attack that does not land within that time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), what
        time.sleep(0.2)


# ---- class 1: the gate is decided only by its own request's sealed decisions ----------------------


def test_an_old_approved_request_repointed_at_a_gated_saga_does_not_run_it(
    operator: Operator,
    kube: client.ApiClient,
    control_plane: cluster.State,
    task_service: TaskService,
    team: str,
    policy: str,
) -> None:
    sagas = Resources(kube, team, "tasksagas", "TaskSaga")
    aprs = Resources(kube, team, "approvalrequests", "ApprovalRequest")
    mallory, alice = as_user(control_plane, "mallory"), as_user(control_plane, "alice")
    # An old, unrelated request that alice approved.
    create(
        mallory,
        team,
        "approvalrequests",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ApprovalRequest",
            "metadata": {"name": "old"},
            "spec": {"subject": {"title": "lunch"}, "approvers": {"users": ["alice"]}, "timeout": "1h"},
        },
    )
    eventually(lambda: phase(aprs, "old") == "Pending", what="old request open")
    client.CustomObjectsApi(alice).patch_namespaced_custom_object(
        GROUP, VERSION, team, "approvalrequests", "old", {"spec": {"decision": {"approved": True, "reason": "sure"}}}
    )
    eventually(lambda: phase(aprs, "old") == "Approved", what="old request approved")
    # mallory's policy-gated saga, and the old approval re-pointed at it (an editor may patch requests).
    saga = create(
        mallory,
        team,
        "tasksagas",
        saga_body("heist", {"task": {"id": "h", "priority": "high"}, "steps": [http_step(task_service)]}),
    )
    sagas.wait_phase("heist", "AwaitingApproval", "Succeeded")
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskSaga", "name": "heist", "uid": saga["metadata"]["uid"]}
    client.CustomObjectsApi(mallory).patch_namespaced_custom_object(
        GROUP, VERSION, team, "approvalrequests", "old", {"metadata": {"ownerReferences": [owner]}}
    )
    # Touch its status too, as a write of approvalrequests/status would (the event the operator reacts to).
    client.CustomObjectsApi(kube).patch_namespaced_custom_object_status(
        GROUP, VERSION, team, "approvalrequests", "old", {"status": {"reason": "nudged"}}
    )
    stays(lambda: phase(sagas, "heist") == "AwaitingApproval", 6, "the saga ran on another approval")
    assert phase(aprs, "heist-approval") == "Pending"
    # The real gate still decides: dave (sre) rejects.
    client.CustomObjectsApi(as_user(control_plane, "dave")).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        team,
        "approvalrequests",
        "heist-approval",
        {"spec": {"decision": {"approved": False, "reason": "no"}}},
    )
    assert sagas.wait_phase("heist", "Rejected", "Succeeded")["status"]["phase"] == "Rejected"


def test_a_forged_approved_status_on_the_gate_request_does_not_run_the_saga(
    operator: Operator,
    kube: client.ApiClient,
    control_plane: cluster.State,
    task_service: TaskService,
    team: str,
    policy: str,
) -> None:
    sagas = Resources(kube, team, "tasksagas", "TaskSaga")
    aprs = Resources(kube, team, "approvalrequests", "ApprovalRequest")
    before = len(task_service.applied("/records"))
    create(
        as_user(control_plane, "mallory"),
        team,
        "tasksagas",
        saga_body("forged", {"task": {"id": "f", "priority": "high"}, "steps": [http_step(task_service)]}),
    )
    sagas.wait_phase("forged", "AwaitingApproval", "Succeeded")
    eventually(lambda: aprs.get("forged-approval"), what="the gate's request")
    # Whoever may write approvalrequests/status (here the admin client stands in for them) sets Approved.
    client.CustomObjectsApi(kube).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        team,
        "approvalrequests",
        "forged-approval",
        {"status": {"phase": "Approved", "approver": "dave"}},
    )
    stays(lambda: phase(sagas, "forged") == "AwaitingApproval", 6, "the saga ran on a forged status")
    assert len(task_service.applied("/records")) == before


def test_a_requester_may_not_approve_their_own_gate(
    operator: Operator,
    kube: client.ApiClient,
    control_plane: cluster.State,
    task_service: TaskService,
    team: str,
    policy: str,
) -> None:
    sagas = Resources(kube, team, "tasksagas", "TaskSaga")
    create(
        as_user(control_plane, "dave"),
        team,
        "tasksagas",
        saga_body("own", {"task": {"id": "o", "priority": "high"}, "steps": [http_step(task_service)]}),
    )
    sagas.wait_phase("own", "AwaitingApproval", "Succeeded")
    with pytest.raises(ApiException) as refused:
        client.CustomObjectsApi(as_user(control_plane, "dave")).patch_namespaced_custom_object(
            GROUP, VERSION, team, "approvalrequests", "own-approval", {"spec": {"decision": {"approved": True}}}
        )
    assert "may not approve" in str(refused.value.body)


# ---- class 3: identities only from seals admission wrote -----------------------------------------


def forged_kube_saga(name: str, namespace: str, annotations: dict[str, str]) -> dict[str, Any]:
    """A saga whose only step writes a ConfigMap in kube-system: only a cluster admin could."""
    target = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"pwned-{namespace}", "namespace": "kube-system"},
    }
    step = {"name": "escalate", "action": {"kubernetes": {"operation": "apply", "object": target}}}
    return saga_body(name, {"task": {"id": name}, "steps": [step]}, annotations)


def test_typed_stamps_where_admission_does_not_run_act_as_nobody(
    operator: Operator,
    kube: client.ApiClient,
    control_plane: cluster.State,
    team: str,
    uncovered: Callable[[str], None],
) -> None:
    uncovered(team)
    sagas = Resources(kube, team, "tasksagas", "TaskSaga")
    forged = {
        "steadfast.dev/requested-by": "admin",
        "steadfast.dev/requested-by-groups": '["system:masters"]',
        "steadfast.dev/seal": "eyJyb2xlIjoiY3JlYXRvciJ9.AAAA",
    }
    create(as_user(control_plane, "mallory"), team, "tasksagas", forged_kube_saga("typed", team, forged))
    status = sagas.wait_phase("typed", "Failed", "Succeeded", "Compensated")["status"]
    assert status["phase"] != "Succeeded"
    assert "vouched for by Steadfast's admission webhook" in str(status["steps"])
    with pytest.raises(ApiException) as gone:
        client.CoreV1Api(kube).read_namespaced_config_map(f"pwned-{team}", "kube-system")
    assert gone.value.status == 404


def test_a_seal_copied_from_another_saga_acts_as_nobody(
    operator: Operator,
    kube: client.ApiClient,
    control_plane: cluster.State,
    team: str,
    other_namespace: str,
    uncovered: Callable[[str], None],
) -> None:
    # The admin's own saga (sealed by admission) in another namespace: its stamps are readable by its viewers.
    other = other_namespace
    never = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "never"}}
    wait = {"operation": "wait", "object": never, "successWhen": "true", "timeout": "2s"}
    admins = create(
        kube,
        other,
        "tasksagas",
        saga_body("legit", {"task": {"id": "l"}, "steps": [{"name": "wait", "action": {"kubernetes": wait}}]}),
    )
    stamps = {
        k: v
        for k, v in admins["metadata"]["annotations"].items()
        if k.startswith("steadfast.dev/") and k != "steadfast.dev/finalizer"
    }
    assert "steadfast.dev/seal" in stamps
    uncovered(team)
    create(as_user(control_plane, "mallory"), team, "tasksagas", forged_kube_saga("legit", team, stamps))
    status = Resources(kube, team, "tasksagas", "TaskSaga").wait_phase("legit", "Failed", "Succeeded", "Compensated")[
        "status"
    ]
    assert status["phase"] != "Succeeded" and "vouched for" in str(status["steps"])
    with pytest.raises(ApiException) as gone:
        client.CoreV1Api(kube).read_namespaced_config_map(f"pwned-{team}", "kube-system")
    assert gone.value.status == 404


# ---- class 4: undo marks cannot be planted ---------------------------------------------------------


def test_a_planted_created_by_mark_does_not_turn_the_undo_into_a_delete(
    operator: Operator, kube: client.ApiClient, control_plane: cluster.State, team: str
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_config_map(team, {"metadata": {"name": "shared"}, "data": {"level": "1"}})
    go = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "go"}}
    patch = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"level": "9"}}
    spec = {
        "task": {"id": "u"},
        "steps": [
            # Waits until the test says go: time to read the saga's UID and plant the mark.
            {
                "name": "hold",
                "action": {"kubernetes": {"operation": "wait", "object": go, "successWhen": "true", "timeout": "60s"}},
            },
            {"name": "tune", "action": {"kubernetes": {"operation": "patch", "object": patch}}},
            {
                "name": "boom",
                "action": {
                    "kubernetes": {"operation": "wait", "object": go, "successWhen": "false", "failureWhen": "true"}
                },
            },
        ],
    }
    saga = create(as_user(control_plane, "alice"), team, "tasksagas", saga_body("undo", spec))
    key = idempotency_key(saga["metadata"]["uid"], "tune", "action")
    # mallory, an editor who can read the saga and edit ConfigMaps, plants the mark the step would have written.
    client.CoreV1Api(as_user(control_plane, "mallory")).patch_namespaced_config_map(
        "shared", team, {"metadata": {"annotations": {"steadfast.dev/created-by": key}}}
    )
    core.create_namespaced_config_map(team, {"metadata": {"name": "go"}})
    sagas = Resources(kube, team, "tasksagas", "TaskSaga")
    status = sagas.wait_phase("undo", "Compensated", "CompensationFailed", "Succeeded", timeout=60)["status"]
    assert status["phase"] == "Compensated", status
    restored = core.read_namespaced_config_map("shared", team)  # still there, with the value from before
    assert restored.data == {"level": "1"}
