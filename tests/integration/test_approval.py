"""ApprovalRequest end to end with several identities: the real API server runs the operator's admission
webhooks, so every identity check here is made by the API server, not by the test."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService, allow_users, eventually
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from steadfast import cli
from steadfast.dev.controlplane import cluster

pytestmark = pytest.mark.controlplane

USERS = ("alice", "bob", "dave", "mallory")
PLURAL = "approvalrequests"
DONE = ("Completed", "ActionFailed", "Rejected", "TimedOut")


@pytest.fixture(autouse=True)
def clean_service(task_service: TaskService) -> None:
    task_service.reset()


@pytest.fixture
def rbac(kube: client.ApiClient, namespace: str) -> None:
    """Every test user may create and patch approval requests and sagas here: only the webhooks decide."""
    allow_users(kube, namespace, USERS)


@pytest.fixture
def as_user(control_plane: cluster.State) -> Callable[[str], client.CustomObjectsApi]:
    cache: dict[str, client.CustomObjectsApi] = {}

    def get(user: str) -> client.CustomObjectsApi:
        if user not in cache:
            cache[user] = client.CustomObjectsApi(
                config.new_client_from_config(config_file=control_plane.kubeconfig, context=user)
            )
        return cache[user]

    return get


@pytest.fixture
def aprs(kube: client.ApiClient, namespace: str, rbac: None, operator: Operator) -> Iterator[Resources]:
    res = Resources(kube, namespace, PLURAL, "ApprovalRequest")
    wait_webhooks(res.api, namespace)
    yield res


def wait_webhooks(api: client.CustomObjectsApi, namespace: str, timeout: float = 60) -> None:
    """Until the API server calls the operator's webhooks (a dry-run create comes back stamped)."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ApprovalRequest",
        "metadata": {"name": "probe"},
        "spec": {"subject": {"title": "probe"}, "approvers": {"users": ["alice"]}},
    }

    def stamped() -> bool:
        try:
            obj = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, dry_run="All")
        except ApiException:
            return False
        return "steadfast.dev/requested-by" in (obj["metadata"].get("annotations") or {})

    eventually(stamped, timeout=timeout, what="admission webhooks served", interval=0.25)


def wait_open(aprs: Resources, name: str) -> dict[str, Any]:
    """Pending as the workflow reports it (the binding's first Pending has no expiresAt yet)."""
    return aprs.wait_status(name, lambda s: s.get("phase") == "Pending" and bool(s.get("expiresAt")), "open")


def request(
    svc: TaskService,
    *,
    users: tuple[str, ...] = ("alice",),
    groups: tuple[str, ...] = ("sre",),
    required: int = 1,
    timeout: str = "1h",
    **subject: Any,
) -> dict[str, Any]:
    return {
        "subject": {"title": "Deploy 1.2.3 to prod", **subject},
        "approvers": {"users": list(users), "groups": list(groups), "required": required},
        "timeout": timeout,
        "notify": {"http": {"method": "POST", "url": f"{svc.url}/approvals"}},
        "action": {"http": {"method": "POST", "url": f"{svc.url}/deploy"}},
    }


def create(
    api: client.CustomObjectsApi,
    namespace: str,
    name: str,
    spec: dict[str, Any],
    kind: str = "ApprovalRequest",
    plural: str = PLURAL,
    **meta: Any,
) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name, **meta}, "spec": spec}
    obj: dict[str, Any] = api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
    return obj


def decide(
    api: client.CustomObjectsApi, namespace: str, name: str, approved: bool, reason: str | None = None
) -> dict[str, Any]:
    patch = {"spec": {"decision": {"approved": approved, "reason": reason}}}
    obj: dict[str, Any] = api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)
    return obj


def refused(action: Callable[[], Any]) -> str:
    """The API server's refusal message for `action` (which must be refused)."""
    with pytest.raises(ApiException) as caught:
        action()
    assert caught.value.status in (400, 403, 422), caught.value.body
    return str(caught.value.body)


@pytest.mark.statestores  # also run on daprd with the chart's PostgreSQL and Redis stores
def test_approve_runs_the_action_once(aprs: Resources, as_user: Any, task_service: TaskService) -> None:
    ns = aprs.namespace
    created = create(as_user("bob"), ns, "deploy", request(task_service, requester="bob"))
    assert created["metadata"]["annotations"]["steadfast.dev/requested-by"] == "bob"
    groups = json.loads(created["metadata"]["annotations"]["steadfast.dev/requested-by-groups"])
    assert "approvers" in groups and "system:authenticated" in groups
    pending = wait_open(aprs, "deploy")
    assert pending["expiresAt"] and pending["workflowInstanceId"].startswith("approvalrequest-")
    eventually(lambda: task_service.applied("/approvals"), what="notify sent")
    started = time.monotonic()
    decided = decide(as_user("alice"), ns, "deploy", True, "looks good")
    assert decided["metadata"]["annotations"]["steadfast.dev/decided-by"] == "alice"
    aprs.wait_status("deploy", lambda s: bool(s.get("approvals")), "decision recorded", timeout=5)
    assert time.monotonic() - started < 2.0
    status = aprs.wait_phase("deploy", *DONE)["status"]
    assert status["phase"] == "Completed"
    assert status["approver"] == "alice"
    assert [(a["user"], a["approved"], a["reason"]) for a in status["approvals"]] == [("alice", True, "looks good")]
    assert status["actionResult"]["succeeded"] is True and status["notifyResult"]["succeeded"] is True
    assert status["decidedAt"]
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["status"] == "True"
    assert task_service.applied("/deploy") == ["POST /deploy"]
    assert task_service.applied("/approvals") == ["POST /approvals"]
    eventually(
        lambda: {"Opened", "Approved", "Completed"} <= {e["reason"] for e in aprs.events("deploy")},
        what="Events of each transition",
    )  # Events follow the status write of their transition
    # Final: a second approver cannot change it afterwards.
    assert "final" in refused(lambda: decide(as_user("dave"), ns, "deploy", False, "too late"))


def test_reject_by_a_group_member(aprs: Resources, as_user: Any, task_service: TaskService) -> None:
    ns = aprs.namespace
    create(as_user("bob"), ns, "risky", request(task_service, users=("alice",), groups=("sre",)))
    aprs.wait_phase("risky", "Pending")
    decide(as_user("dave"), ns, "risky", False, "not during the freeze")
    status = aprs.wait_phase("risky", *DONE)["status"]
    assert status["phase"] == "Rejected"
    assert status["approver"] == "dave"
    assert "not during the freeze" in status["reason"]
    assert task_service.applied("/deploy") == []


def test_the_api_server_refuses_with_clear_messages(aprs: Resources, as_user: Any, task_service: TaskService) -> None:
    ns = aprs.namespace
    message = refused(lambda: create(as_user("mallory"), ns, "forged", request(task_service, requester="alice")))
    assert "spec.subject.requester is 'alice'" in message and "mallory" in message
    message = refused(
        lambda: create(
            as_user("bob"), ns, "stamped", request(task_service), annotations={"steadfast.dev/decided-by": "alice"}
        )
    )
    assert "cannot be set by hand" in message
    predecided = {**request(task_service), "decision": {"approved": True}}
    assert "cannot be set at creation" in refused(lambda: create(as_user("bob"), ns, "early", predecided))

    create(as_user("bob"), ns, "guarded", request(task_service, users=("alice", "bob"), groups=()))
    aprs.wait_phase("guarded", "Pending")
    message = refused(lambda: decide(as_user("mallory"), ns, "guarded", True, "me too"))
    assert "mallory may not decide" in message and "alice, bob" in message
    message = refused(lambda: decide(as_user("bob"), ns, "guarded", True))
    assert "bob requested" in message and "may not approve" in message
    patch = {"metadata": {"annotations": {"steadfast.dev/requested-by": "mallory"}}}
    message = refused(
        lambda: as_user("bob").patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "guarded", patch)
    )
    assert "steadfast.dev/requested-by" in message and "cannot be set, changed or removed" in message
    status = aprs.get("guarded")["status"]  # type: ignore[index]
    assert status["phase"] == "Pending" and status["approvals"] == []


def test_timeout_rejects_and_a_late_decision_is_refused(
    aprs: Resources, as_user: Any, task_service: TaskService
) -> None:
    ns = aprs.namespace
    create(as_user("bob"), ns, "slow", request(task_service, timeout="2s"))
    status = aprs.wait_phase("slow", *DONE, timeout=20)["status"]
    assert status["phase"] == "TimedOut"
    assert "no decision within 2s" in status["reason"]
    assert next(c for c in status["conditions"] if c["type"] == "Stalled")["status"] == "True"
    message = refused(lambda: decide(as_user("alice"), ns, "slow", True, "sorry, late"))
    assert "spec.decision is final" in message and "timed out" in message  # the CRD's CEL rule, before webhooks
    assert task_service.applied("/deploy") == []


def test_quorum_of_two_distinct_approvers(aprs: Resources, as_user: Any, task_service: TaskService) -> None:
    ns = aprs.namespace
    create(as_user("dave"), ns, "two", request(task_service, users=("alice", "bob"), groups=(), required=2))
    aprs.wait_phase("two", "Pending")
    decide(as_user("alice"), ns, "two", True, "ok from alice")
    status = aprs.wait_status("two", lambda s: len(s.get("approvals") or []) == 1, "first approval recorded")
    assert status["phase"] == "Pending"
    assert "already decided" in refused(lambda: decide(as_user("alice"), ns, "two", True, "again"))
    decide(as_user("bob"), ns, "two", True, "ok from bob")
    status = aprs.wait_phase("two", *DONE)["status"]
    assert status["phase"] == "Completed"
    assert [a["user"] for a in status["approvals"]] == ["alice", "bob"]
    assert status["approver"] == "bob"
    assert task_service.applied("/deploy") == ["POST /deploy"]


@pytest.mark.parametrize("approved", [True, False], ids=["approved", "rejected"])
def test_saga_gate(
    aprs: Resources, as_user: Any, task_service: TaskService, kube: client.ApiClient, approved: bool
) -> None:
    ns = aprs.namespace
    sagas = Resources(kube, ns, "tasksagas", "TaskSaga")
    steps = [{"name": "deploy", "action": {"http": {"method": "POST", "url": f"{task_service.url}/deploy"}}}]
    spec = {
        "task": {"id": "t-gate", "title": "Ship it", "priority": "high"},
        "steps": steps,
        "approval": {"priorities": ["high", "critical"], "approvers": {"users": ["alice", "dave"]}, "timeout": "1h"},
    }
    create(as_user("dave"), ns, "gated", spec, kind="TaskSaga", plural="tasksagas")
    saga = sagas.wait_phase("gated", "AwaitingApproval")["status"]
    assert saga["approvalRequest"] == "gated-approval"
    apr = aprs.wait_phase("gated-approval", "Pending")
    assert apr["metadata"]["annotations"]["steadfast.dev/requested-by"] == "dave"
    assert apr["metadata"]["ownerReferences"][0]["name"] == "gated"
    assert task_service.applied("/deploy") == []
    # The saga's creator is the requester: listed as an approver or not, dave may not approve it.
    assert "dave requested" in refused(lambda: decide(as_user("dave"), ns, "gated-approval", True))
    decide(as_user("alice"), ns, "gated-approval", approved, None if approved else "not now")
    final = sagas.wait_phase("gated", "Succeeded", "Rejected", "Failed", "Compensated")["status"]
    if approved:
        assert final["phase"] == "Succeeded"
        assert task_service.applied("/deploy") == ["POST /deploy"]
    else:
        assert final["phase"] == "Rejected"
        assert "not now" in final["result"]["error"]
        assert [s["phase"] for s in final["steps"]] == ["Skipped"]
        assert task_service.applied("/deploy") == []


def test_operator_restart_keeps_requests_open_and_timers_running(
    aprs: Resources, as_user: Any, task_service: TaskService, operator: Operator
) -> None:
    ns = aprs.namespace
    create(as_user("bob"), ns, "waits", request(task_service))
    create(as_user("bob"), ns, "expires", request(task_service, timeout="8s"))
    before = {n: wait_open(aprs, n) for n in ("waits", "expires")}
    operator.kill()
    operator.start()
    wait_webhooks(aprs.api, ns)
    after = aprs.get("waits")["status"]  # type: ignore[index]
    assert after["phase"] == "Pending"
    assert after["expiresAt"] == before["waits"]["expiresAt"]
    assert after["workflowInstanceId"] == before["waits"]["workflowInstanceId"]
    decide(as_user("alice"), ns, "waits", True, "after the restart")
    assert aprs.wait_phase("waits", *DONE)["status"]["phase"] == "Completed"
    expired = aprs.wait_phase("expires", *DONE, timeout=30)["status"]
    assert expired["phase"] == "TimedOut"
    assert expired["expiresAt"] == before["expires"]["expiresAt"]  # the same timer, not a new one
    assert task_service.applied("/deploy") == ["POST /deploy"]
    assert task_service.applied("/approvals") == ["POST /approvals", "POST /approvals"]


def test_cli_approve_reject_and_status(
    aprs: Resources,
    as_user: Any,
    task_service: TaskService,
    control_plane: cluster.State,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = aprs.namespace
    create(as_user("bob"), ns, "by-cli", request(task_service))
    create(as_user("bob"), ns, "no-by-cli", request(task_service))
    for name in ("by-cli", "no-by-cli"):
        aprs.wait_phase(name, "Pending")

    def run(user: str, *argv: str) -> tuple[int, str, str]:
        code = cli.main([*argv, "-n", ns, "--kubeconfig", control_plane.kubeconfig, "--context", user])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = run("alice", "status")
    assert code == 0 and "by-cli" in out and "PHASE" in out
    code, _, err = run("mallory", "approve", "by-cli")
    assert code == 1 and "mallory may not decide" in err
    code, out, _ = run("alice", "approve", "by-cli", "--reason", "ship it")
    assert code == 0 and "approved by alice" in out
    code, out, _ = run("dave", "reject", "no-by-cli", "--reason", "wrong window")
    assert code == 0 and "rejected by dave" in out
    assert aprs.wait_phase("by-cli", *DONE)["status"]["phase"] == "Completed"
    assert aprs.wait_phase("no-by-cli", *DONE)["status"]["phase"] == "Rejected"
    code, out, _ = run("alice", "status", "by-cli")
    assert code == 0 and "alice approved" in out and "Completed" in out


def test_gitops_reapply_does_not_undo_a_decision(
    aprs: Resources, as_user: Any, task_service: TaskService, control_plane: cluster.State, kubectl_path: Any
) -> None:
    """What Argo CD (ServerSideApply) and Flux do on self-heal: re-apply Git's manifest, which has no decision."""
    import json
    import subprocess

    ns = aprs.namespace
    manifest = json.dumps(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ApprovalRequest",
            "metadata": {"name": "from-git", "namespace": ns},
            "spec": request(task_service),
        }
    )

    def kubectl(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(kubectl_path), "--kubeconfig", control_plane.kubeconfig, *argv],
            input=manifest,
            text=True,
            capture_output=True,
            timeout=30,
        )

    applied = kubectl("apply", "--server-side", "--field-manager=gitops", "-f", "-")
    assert applied.returncode == 0, applied.stderr
    wait_open(aprs, "from-git")
    decide(as_user("alice"), ns, "from-git", True, "approved outside Git")
    assert aprs.wait_phase("from-git", *DONE)["status"]["phase"] == "Completed"
    reapplied = kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=gitops", "-f", "-")
    assert reapplied.returncode == 0, reapplied.stderr
    obj = aprs.get("from-git")
    assert obj is not None and obj["spec"]["decision"] == {"approved": True, "reason": "approved outside Git"}
    owners = {m["manager"]: json.dumps(m.get("fieldsV1", {})) for m in obj["metadata"]["managedFields"]}
    assert "f:decision" not in owners["gitops"]  # Git never owned it, so applying Git cannot remove it
    # Nor the finalizer and the creator's stamp that admission added to Git's first apply.
    assert obj["metadata"]["finalizers"] == ["steadfast.dev/finalizer"]
    assert obj["metadata"]["annotations"]["steadfast.dev/requested-by"] == "admin"
    # A sync that replaces the whole object (Argo CD's Replace=true) is refused instead of undoing it.
    replaced = kubectl("replace", "-f", "-")
    assert replaced.returncode != 0 and "cannot be removed" in replaced.stderr


def test_notify_and_action_see_the_request_and_its_approvers(
    aprs: Resources, as_user: Any, task_service: TaskService
) -> None:
    ns = aprs.namespace
    spec = request(task_service, requester="bob")
    spec["notify"]["http"]["body"] = {
        "text": "$(request.requestedBy) asks: $(request.subject.title)",
        "ns": "$(request.namespace)",
    }
    spec["action"]["http"]["body"] = {"approvedBy": "$(request.approvedBy)"}
    create(as_user("bob"), ns, "templated", spec)
    wait_open(aprs, "templated")
    decide(as_user("alice"), ns, "templated", True, "ok")
    assert aprs.wait_phase("templated", *DONE)["status"]["phase"] == "Completed"
    notices = [a["body"] for a in task_service.stats()["applied"] if a["route"] == "POST /approvals"]
    assert {"text": "bob asks: Deploy 1.2.3 to prod", "ns": ns} in notices
    deploys = [a["body"] for a in task_service.stats()["applied"] if a["route"] == "POST /deploy"]
    assert {"approvedBy": ["alice"]} in deploys
