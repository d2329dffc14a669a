"""When a saga goes wrong, a person decides: pause, retry, skip, compensate, resolve, on the real API server and
each engine, through the admission webhooks, RBAC and the `steadfast` verbs (issue #25).

Users come from the control plane's test identities: alice may edit and `repair` in the test's namespace, dave
may edit but not repair, bob may only read, mallory may do nothing there. Faults are armed on paths of the test's
own (the task service is shared by the session), and its deliveries show the Idempotency-Key each attempt carried.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService, eventually
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from steadfast.dev.controlplane import cluster

pytestmark = pytest.mark.controlplane

BULK = int(os.environ.get("STEADFAST_REPAIR_BULK", "50"))
EDIT = ["get", "list", "watch", "create", "patch", "update", "delete"]


@pytest.fixture
def people(kube: client.ApiClient, namespace: str) -> None:
    """alice: edit + repair; dave: edit; bob: view; mallory: nothing."""
    rbac = client.RbacAuthorizationV1Api(kube)
    resources = ["tasksagas", "approvalrequests"]
    for role, verbs, users in (
        ("repairer", [*EDIT, "repair"], ["alice"]),
        ("editor", EDIT, ["dave"]),
        ("viewer", ["get", "list", "watch"], ["bob"]),
    ):
        rule = {"apiGroups": [GROUP], "resources": resources, "verbs": verbs}
        rbac.create_namespaced_role(namespace, {"metadata": {"name": role}, "rules": [rule]})
        subjects = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u} for u in users]
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role}
        rbac.create_namespaced_role_binding(
            namespace, {"metadata": {"name": role}, "roleRef": ref, "subjects": subjects}
        )


def as_user(control_plane: cluster.State, namespace: str, user: str, plural: str = "tasksagas") -> Resources:
    api = config.new_client_from_config(config_file=control_plane.kubeconfig, context=user)
    kind = "TaskSaga" if plural == "tasksagas" else "ApprovalRequest"
    return Resources(api, namespace, plural, kind)


def http(method: str, url: str, **more: Any) -> dict[str, Any]:
    return {"http": {"method": method, "url": url, **more}}


def pausing_saga(svc: TaskService, task: str, *, timeout: str = "10m", later: bool = True) -> dict[str, Any]:
    """record (undone by DELETE /records/TASK), then the step on DELETE /notices/TASK the tests make fail."""
    steps: list[dict[str, Any]] = [
        {
            "name": "record",
            "action": http("POST", f"{svc.url}/records", body={"id": task}),
            "compensation": http("DELETE", f"{svc.url}/records/{task}"),
        },
        {"name": "notify", "action": http("DELETE", f"{svc.url}/notices/{task}")},
    ]
    if later:
        steps.append({"name": "dashboard", "action": http("POST", f"{svc.url}/dashboard", body={"task": task})})
    return {"task": {"id": task}, "steps": steps, "onFailure": {"action": "Pause", "pauseTimeout": timeout}}


def keys(svc: TaskService, path: str) -> list[str]:
    """The Idempotency-Key of every delivery to `path`."""
    return [d["key"] for d in svc.stats()["deliveries"] if d["path"] == path]


def repair(who: Resources, name: str, action: str, **more: Any) -> dict[str, Any]:
    patch = {"spec": {"repair": {"action": action, "step": None, "reason": None, **more}}}
    done: dict[str, Any] = who.api.patch_namespaced_custom_object(
        GROUP, VERSION, who.namespace, who.plural, name, patch
    )
    return done


def refusal(who: Resources, name: str, action: str, **more: Any) -> tuple[int, str]:
    with pytest.raises(ApiException) as refused:
        repair(who, name, action, **more)
    return refused.value.status, str(refused.value.body)


def steadfast(control_plane: cluster.State, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The `steadfast` command as `user` (its kubeconfig context), as a person would run it."""
    env = {**os.environ, "KUBECONFIG": control_plane.kubeconfig}
    command = [sys.executable, "-m", "steadfast.cli", *args, "--context", user]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions") or [] if c["type"] == kind)


@pytest.fixture
def fault_paths(task_service: TaskService) -> Iterator[list[str]]:
    """Exact-path faults the test arms; disarmed after it, even when it fails."""
    armed: list[str] = []
    yield armed
    for route in armed:
        task_service.fault(route, fail=0)


def paused(who: Resources, svc: TaskService, armed: list[str], name: str) -> str:
    """`name`, a pausing saga whose notify step fails (its exact path armed, and disarmed after the test): Paused."""
    task = f"{who.namespace}-{name}"
    armed.append(f"DELETE /notices/{task}")
    svc.fault(armed[-1], fail=-1, status=503)
    who.create(name, pausing_saga(svc, task))
    who.wait_phase(name, "Paused")
    return task


def test_a_paused_saga_retried_once_the_cause_is_fixed_and_a_gitops_reapply_changes_nothing(
    operator: Operator,
    kube: client.ApiClient,
    control_plane: cluster.State,
    task_service: TaskService,
    namespace: str,
    people: None,
    fault_paths: list[str],
    kubectl_path: Path,
    tmp_path: Path,
) -> None:
    alice = as_user(control_plane, namespace, "alice")
    admin = Resources(kube, namespace, "tasksagas", "TaskSaga")  # alice may not read Events
    task = f"{namespace}-pause"
    fault_paths.append(f"DELETE /notices/{task}")
    task_service.fault(fault_paths[0], fail=-1, status=503)
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TaskSaga",
        "metadata": {"name": "order-42", "namespace": namespace},
        "spec": pausing_saga(task_service, task),
    }
    path = tmp_path / "order-42.json"
    path.write_text(json.dumps(manifest))
    env = {**os.environ, "KUBECONFIG": control_plane.kubeconfig}
    apply = [str(kubectl_path), "--context", "alice", "apply", "--server-side", "--field-manager", "argocd"]
    subprocess.run([*apply, "-f", str(path)], env=env, check=True, capture_output=True)

    paused = alice.wait_phase("order-42", "Paused")["status"]
    assert paused["pause"]["step"] == "notify" and paused["currentStep"] == "notify"
    stalled = condition(paused, "Stalled")
    assert stalled["status"] == "True" and "paused for a decision" in stalled["message"]
    assert condition(paused, "Ready")["status"] == "False"
    assert not [d for d in task_service.stats()["deliveries"] if d["path"] == f"/records/{task}"]  # no undo
    admin.wait_event("order-42", "Paused")

    task_service.fault(fault_paths[0], fail=0)  # the notice service is back
    done = steadfast(control_plane, "alice", "retry", "order-42", "-n", namespace, "--reason", "relay fixed")
    assert done.returncode == 0, done.stderr
    assert "recorded for alice" in done.stdout
    final = alice.wait_phase("order-42", "Succeeded")
    attempts = keys(task_service, f"/notices/{task}")
    assert len(attempts) == 2 and len(set(attempts)) == 1, "a retry must carry the step's idempotency key"
    (decision,) = final["status"]["decisions"]
    assert (decision["action"], decision["user"], decision["reason"]) == ("Retry", "alice", "relay fixed")
    assert final["status"]["observedGeneration"] == final["metadata"]["generation"] == 2
    admin.wait_event("order-42", "RepairRetry", containing="alice")

    # Argo CD syncs the original manifest again (server-side, its own field manager): the decision stays, nothing
    # is replayed, the saga stays Succeeded.
    again = subprocess.run([*apply, "--force-conflicts", "-f", str(path)], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    time.sleep(2)
    after = alice.get("order-42") or {}
    assert after["metadata"]["generation"] == 2 and after["spec"]["repair"]["action"] == "Retry"
    assert after["status"]["phase"] == "Succeeded" and len(after["status"]["decisions"]) == 1
    assert len(keys(task_service, f"/notices/{task}")) == 2


def test_skip_compensate_and_a_pause_timeout(
    operator: Operator,
    control_plane: cluster.State,
    task_service: TaskService,
    namespace: str,
    people: None,
    fault_paths: list[str],
) -> None:
    alice = as_user(control_plane, namespace, "alice")
    for name in ("skipped", "undone", "late"):
        task = f"{namespace}-{name}"
        fault_paths.append(f"DELETE /notices/{task}")
        task_service.fault(fault_paths[-1], fail=-1, status=503)
        alice.create(name, pausing_saga(task_service, task, timeout="3s" if name == "late" else "10m"))
    for name in ("skipped", "undone"):
        alice.wait_phase(name, "Paused")
    status, body = refusal(alice, "skipped", "Skip")
    assert status == 422 and "spec.repair.reason is required to Skip" in body
    repair(alice, "skipped", "Skip", reason="customers get a letter instead")
    repair(alice, "undone", "Compensate", reason="the customer cancelled")

    skipped = alice.wait_phase("skipped", "Succeeded")["status"]
    assert [s["phase"] for s in skipped["steps"]] == ["Succeeded", "Skipped", "Succeeded"]
    assert "skipped by alice: customers get a letter instead" in skipped["steps"][1]["message"]
    undone = alice.wait_phase("undone", "Compensated")["status"]
    assert "compensating on alice's decision" in undone["result"]["error"]
    late = alice.wait_phase("late", "Compensated", timeout=60)["status"]
    assert "no decision came within 3s" in late["result"]["error"]
    for name in ("undone", "late"):
        assert keys(task_service, f"/records/{namespace}-{name}"), f"{name}: its record was not undone"


def test_compensation_failed_is_repaired_by_a_retry_or_resolved_by_hand(
    operator: Operator,
    control_plane: cluster.State,
    task_service: TaskService,
    namespace: str,
    people: None,
    fault_paths: list[str],
) -> None:
    """The seed's refund-service outage: the undo fails, the service comes back, a retry finishes the job with
    the key the service saw first; another saga's undo was done by hand and is recorded so."""
    alice = as_user(control_plane, namespace, "alice")
    for name in ("refund", "by-hand"):
        task = f"{namespace}-{name}"
        fault_paths += [f"DELETE /records/{task}", f"DELETE /notices/{task}"]
        task_service.fault(f"DELETE /records/{task}", fail=-1, status=503)  # the refund service is down
        task_service.fault(f"DELETE /notices/{task}", fail=-1, status=503)
        spec = pausing_saga(task_service, task)
        del spec["onFailure"]
        spec["steps"][0]["retry"] = {"maxAttempts": 2, "initialInterval": "100ms"}
        alice.create(name, spec)
    for name in ("refund", "by-hand"):
        failed = alice.wait_phase(name, "CompensationFailed")["status"]
        assert [(c["step"], c["phase"]) for c in failed["compensations"]] == [("record", "Failed")]
    status, body = refusal(alice, "refund", "Skip", reason="no")
    assert status == 403 and "CompensationFailed: Skip does not apply (possible: Retry, Resolve)" in body

    task_service.fault(f"DELETE /records/{namespace}-refund", fail=0)  # back
    repair(alice, "refund", "Retry")
    refunded = alice.wait_phase("refund", "Compensated")["status"]
    attempts = keys(task_service, f"/records/{namespace}-refund")
    assert len(attempts) == 3 and len(set(attempts)) == 1, attempts  # 2 failed + the retry, one key
    assert refunded["compensations"][0]["attempts"] == 3 and refunded["decisions"][0]["user"] == "alice"

    status, body = refusal(alice, "by-hand", "Resolve", reason="refunded in the bank's portal")
    assert status == 422 and "spec.repair.step is required to Resolve" in body
    repair(alice, "by-hand", "Resolve", step="record", reason="refunded in the bank's portal")
    resolved = alice.wait_phase("by-hand", "Compensated")["status"]
    assert resolved["compensations"][0]["phase"] == "Resolved"
    assert "refunded in the bank's portal" in resolved["compensations"][0]["message"]
    assert len(keys(task_service, f"/records/{namespace}-by-hand")) == 2  # nothing sent for a resolve


def test_an_approved_action_that_failed_is_retried(
    operator: Operator,
    control_plane: cluster.State,
    task_service: TaskService,
    namespace: str,
    people: None,
    fault_paths: list[str],
) -> None:
    bob_asks = as_user(control_plane, namespace, "alice", "approvalrequests")
    task = f"{namespace}-deploy"
    fault_paths.append(f"DELETE /notices/{task}")
    task_service.fault(fault_paths[0], fail=-1, status=503)
    spec = {
        "subject": {"title": "deploy v2"},
        "approvers": {"users": ["dave"]},
        "action": http("DELETE", f"{task_service.url}/notices/{task}"),
    }
    bob_asks.create("deploy", spec)
    bob_asks.wait_phase("deploy", "Pending")
    dave = as_user(control_plane, namespace, "dave", "approvalrequests")
    dave.patch("deploy", {"decision": {"approved": True}})
    bob_asks.wait_phase("deploy", "ActionFailed", timeout=90)
    task_service.fault(fault_paths[0], fail=0)
    done = steadfast(control_plane, "alice", "retry", "deploy", "--kind", "apr", "-n", namespace)
    assert done.returncode == 0, done.stderr
    final = bob_asks.wait_phase("deploy", "Completed")["status"]
    assert final["actionResult"]["succeeded"] and final["decisions"][0]["user"] == "alice"
    assert len(set(keys(task_service, f"/notices/{task}"))) == 1


def test_only_those_rbac_lets_repair_may_and_only_what_fits(
    operator: Operator,
    control_plane: cluster.State,
    task_service: TaskService,
    namespace: str,
    people: None,
    fault_paths: list[str],
) -> None:
    alice = as_user(control_plane, namespace, "alice")
    paused(alice, task_service, fault_paths, "who")
    for user, code, words in (
        ("bob", 403, "cannot patch"),  # a viewer: the API server refuses before any webhook
        ("mallory", 403, "cannot patch"),  # a stranger
        ("dave", 403, "may not repair TaskSaga"),  # an editor without the verb: the webhook refuses
    ):
        status, body = refusal(as_user(control_plane, namespace, user), "who", "Compensate")
        assert status == code and words in body, (user, body)
        if user == "dave":
            assert "'repair'" in body and "kubectl auth can-i repair" in body
    assert alice.status("who")["phase"] == "Paused" and not alice.status("who").get("decisions")
    # A decision that does not fit the phase or the step is refused with why.
    status, body = refusal(alice, "who", "Retry", step="record")
    assert status == 403 and "paused at step notify, not record" in body
    # Nobody types the decider.
    with pytest.raises(ApiException) as typed:
        alice.api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "tasksagas",
            "who",
            {"metadata": {"annotations": {"steadfast.dev/repaired-by": "admin"}}},
        )
    assert typed.value.status == 403
    # Creating a saga with a decision in it is refused: a decision is about a running saga.
    with pytest.raises(ApiException) as early:
        alice.create("early", {**pausing_saga(task_service, f"{namespace}-early"), "repair": {"action": "Retry"}})
    assert early.value.status == 403 and "cannot be set at creation" in str(early.value.body)
    repair(alice, "who", "Compensate")
    alice.wait_phase("who", "Compensated")
    status, body = refusal(alice, "who", "Retry", reason="again")
    assert status == 403 and "is Compensated: spec.repair is a decision for a TaskSaga that is" in body


def test_a_decision_made_while_the_operator_dies_is_carried_out_once(
    operator: Operator,
    control_plane: cluster.State,
    task_service: TaskService,
    namespace: str,
    people: None,
    fault_paths: list[str],
) -> None:
    alice = as_user(control_plane, namespace, "alice")
    task = paused(alice, task_service, fault_paths, "kill")
    task_service.fault(fault_paths[0], fail=0)
    repair(alice, "kill", "Retry")
    operator.kill()  # at once: the signal may or may not have been sent
    operator.start()
    final = alice.wait_phase("kill", "Succeeded", timeout=90)
    assert len(keys(task_service, f"/notices/{task}")) == 2  # the failed attempt and one retry, never two
    assert len(final["status"]["decisions"]) == 1


def test_bulk_retry_over_a_label_selector(
    operator: Operator,
    control_plane: cluster.State,
    task_service: TaskService,
    namespace: str,
    people: None,
    fault_paths: list[str],
) -> None:
    """A downstream outage pauses a batch; once it is back, one command retries every paused saga of it."""
    alice = as_user(control_plane, namespace, "alice")
    task = f"{namespace}-bulk"  # every saga of the batch calls the same path (with keys of its own)
    fault_paths.append(f"DELETE /notices/{task}")
    task_service.fault(fault_paths[0], fail=-1, status=503)
    names = [f"batch-{i:03d}" for i in range(BULK)]
    for name in names:
        spec = pausing_saga(task_service, task, later=False)
        spec["steps"][0]["action"]["http"]["body"] = {"id": f"{task}-{name}"}
        meta = {"name": name, "labels": {"batch": "b1"}}
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskSaga", "metadata": meta, "spec": spec}
        alice.api.create_namespaced_custom_object(GROUP, VERSION, namespace, "tasksagas", body)
    eventually(
        lambda: all(alice.status(n).get("phase") == "Paused" for n in names),
        timeout=60 + BULK,
        what="the whole batch paused",
        interval=0.5,
    )
    task_service.fault(fault_paths[0], fail=0)
    done = steadfast(control_plane, "alice", "retry", "-l", "batch=b1", "-n", namespace)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{BULK} done, 0 refused" in done.stdout
    eventually(
        lambda: all(alice.status(n).get("phase") == "Succeeded" for n in names),
        timeout=60 + BULK,
        what="the whole batch succeeded",
        interval=0.5,
    )
    assert len(keys(task_service, f"/notices/{task}")) == 2 * BULK
