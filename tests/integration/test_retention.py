"""Retention end to end: finished resources go after the time set for their outcome, their workflow instances
are purged with them (seen through the engine's workflow API), and nothing unfinished or waiting for a person
is ever removed. The session operator sweeps every second (e2e_support.Operator)."""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService, eventually
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.api.kinds import APPROVAL_REQUEST, TASK_SAGA
from steadfast.binding import instance_id
from steadfast.dev.controlplane import cluster
from steadfast.dev.engines import Engine
from steadfast.dev.workflow_api import WorkflowAPI

FAIL = [{"name": "X-Fail", "value": "always"}]


def http(method: str, url: str, **more: Any) -> dict[str, Any]:
    return {"http": {"method": method, "url": url, **more}}


def saga(svc: TaskService, task: str, *, fail: bool = False, undo_fails: bool = False, **extra: Any) -> dict[str, Any]:
    """record (undone by DELETE /records/TASK), then a notice that fails when asked to."""
    undo = http("DELETE", f"{svc.url}/records/{task}", **({"headers": FAIL} if undo_fails else {}))
    record: dict[str, Any] = {
        "name": "record",
        "action": http("POST", f"{svc.url}/records", body={"id": task}),
        "compensation": undo,
    }
    if undo_fails:
        record["retry"] = {"maxAttempts": 1}  # also the compensation's: it fails at once
    return {
        "task": {"id": task},
        "steps": [
            record,
            {"name": "notice", "action": http("POST", f"{svc.url}/notices", **({"headers": FAIL} if fail else {}))},
        ],
        **extra,
    }


def request(timeout: str, **extra: Any) -> dict[str, Any]:
    return {"subject": {"title": "retention"}, "approvers": {"users": ["alice"]}, "timeout": timeout, **extra}


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def runtime_status(engine: Engine, kind: Any, obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    with WorkflowAPI(engine.address) as api:
        return api.runtime_status(instance_id(kind, meta["namespace"], meta["name"], meta["uid"]))


def removals(op: Operator, kind: str, outcome: str) -> float:
    return op.metrics().get(f'steadfast_retention_removals_total{{kind="{kind}",outcome="{outcome}"}}', 0.0)


def test_finished_resources_go_by_outcome_and_their_instances_are_purged(
    operator: Operator, engine: Engine, kube: client.ApiClient, namespace: str, task_service: TaskService
) -> None:
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    requests = Resources(kube, namespace, "approvalrequests", "ApprovalRequest")
    before = removals(operator, "TaskSaga", "succeeded"), removals(operator, "TaskSaga", "failed")
    task = f"{namespace}-"
    sagas.create("done", saga(task_service, task + "done", retention={"succeeded": "2s", "failed": "1h"}))
    sagas.create("undone", saga(task_service, task + "undone", fail=True, retention={"failed": "2s"}))
    sagas.create("kept", saga(task_service, task + "kept", fail=True, retention={"succeeded": "1s"}))
    broken = saga(task_service, task + "broken", fail=True, undo_fails=True, retention={"failed": "1s"})
    sagas.create("broken", broken)
    requests.create("timed-out", request("1s", retention={"failed": "1s"}))
    requests.create("open", request("1h", retention={"succeeded": "1s", "failed": "1s"}))

    # What is due goes: the status said when, and the instance is gone from the engine with it.
    finished = {}
    for name, phase in (("done", "Succeeded"), ("undone", "Compensated")):
        obj = sagas.wait_phase(name, phase)
        status = obj["status"]
        assert moment(status["retainedUntil"]) == moment(status["finishedAt"]) + timedelta(seconds=2), status
        # Its instance is there (completing, or completed: the final report comes just before the end).
        assert runtime_status(engine, TASK_SAGA, obj) in ("RUNNING", "COMPLETED")
        finished[name] = obj
    timed_out = requests.wait_phase("timed-out", "TimedOut")
    assert moment(timed_out["status"]["retainedUntil"]) == moment(timed_out["status"]["decidedAt"]) + timedelta(
        seconds=1
    )
    for name in ("done", "undone"):
        sagas.wait_gone(name, timeout=20)
        assert runtime_status(engine, TASK_SAGA, finished[name]) == "MISSING"
    requests.wait_gone("timed-out", timeout=20)
    assert runtime_status(engine, APPROVAL_REQUEST, timed_out) == "MISSING"
    # A finished saga is not compensated again on its way out: one undo of its record, at its failure.
    undos = [d for d in task_service.stats()["deliveries"] if d["path"] == f"/records/{task}undone"]
    assert len(undos) == 1, undos
    after = removals(operator, "TaskSaga", "succeeded"), removals(operator, "TaskSaga", "failed")
    assert after[0] >= before[0] + 1 and after[1] >= before[1] + 1

    # What is not due never goes: a failure with only `succeeded` set, a saga waiting for a repair decision,
    # an undecided request. Several sweeps later they are all still there.
    kept = sagas.wait_phase("kept", "Compensated")["status"]
    assert "retainedUntil" not in kept or kept["retainedUntil"] is None
    waiting = sagas.wait_phase("broken", "CompensationFailed")
    assert not waiting["status"].get("retainedUntil")
    eventually(  # "kept" counts as a retained finished saga
        lambda: operator.metrics().get('steadfast_retained_resources{kind="TaskSaga"}', 0) >= 1,
        timeout=10,
        what="the retained gauge",
    )
    deadline = datetime.now() + timedelta(seconds=3)
    eventually(lambda: datetime.now() >= deadline, timeout=5, what="three more sweeps")
    assert sagas.get("kept") is not None and sagas.get("broken") is not None
    assert requests.get("open") is not None and requests.status("open")["phase"] == "Pending"
    assert runtime_status(engine, TASK_SAGA, waiting) == "RUNNING"  # still waiting for a person


@pytest.fixture
def policy(kube: client.ApiClient, namespace: str) -> Iterator[str]:
    """A policy of the admins whose retention rule selects only this test's namespace."""
    client.CoreV1Api(kube).patch_namespace(namespace, {"metadata": {"labels": {"steadfast-test-retention": "on"}}})
    api = client.CustomObjectsApi(kube)
    name = f"retention-{namespace}"
    selector = {"matchLabels": {"steadfast-test-retention": "on", "kubernetes.io/metadata.name": namespace}}
    rules = [{"name": "short", "namespaceSelector": selector, "succeeded": "1s"}]
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SteadfastPolicy",
        "metadata": {"name": name},
        "spec": {"retention": rules},
    }
    api.create_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", body)
    yield name
    try:
        api.delete_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def test_a_policy_default_applies_and_a_sagas_own_retention_wins(
    operator: Operator, engine: Engine, kube: client.ApiClient, namespace: str, task_service: TaskService, policy: str
) -> None:
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    sagas.create("by-policy", saga(task_service, f"{namespace}-by-policy"))
    sagas.create("own", saga(task_service, f"{namespace}-own", retention={"succeeded": "1h"}))
    obj = sagas.wait_phase("by-policy", "Succeeded")
    assert moment(obj["status"]["retainedUntil"]) == moment(obj["status"]["finishedAt"]) + timedelta(seconds=1)
    sagas.wait_gone("by-policy", timeout=20)
    assert runtime_status(engine, TASK_SAGA, obj) == "MISSING"
    own = sagas.wait_phase("own", "Succeeded")["status"]
    assert moment(own["retainedUntil"]) == moment(own["finishedAt"]) + timedelta(hours=1)
    # The field is fixed at creation, like the rest of the spec but a repair decision.
    with pytest.raises(ApiException) as refused:
        sagas.patch("own", {"retention": {"succeeded": "1s"}})
    assert refused.value.status == 422 and "immutable" in str(refused.value.body)


# ---- what one finished saga costs, and that retention gives it back -------------------------------------------

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "samples" / "tasksaga-succeeds.yaml"
SIZING_SAGAS = int(os.environ.get("STEADFAST_SIZING_SAGAS", "5"))


def etcd_bytes(state: cluster.State, prefix: str) -> tuple[int, int]:
    """(keys, bytes of their values) stored under `prefix` in the control plane's etcd, read from etcd itself."""
    pki = Path(state.directory) / "pki"
    context = ssl.create_default_context(cafile=str(pki / "etcd-ca.crt"))
    context.load_cert_chain(str(pki / "apiserver-etcd-client.crt"), str(pki / "apiserver-etcd-client.key"))
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = {"key": base64.b64encode(prefix.encode()).decode(), "range_end": base64.b64encode(end.encode()).decode()}
    req = urllib.request.Request(f"{state.etcd}/v3/kv/range", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, context=context, timeout=10) as response:
        kvs = json.loads(response.read()).get("kvs") or []
    return len(kvs), sum(len(base64.b64decode(kv["value"])) for kv in kvs)


def history_bytes(engine: Engine, obj: dict[str, Any]) -> int:
    meta = obj["metadata"]
    with WorkflowAPI(engine.address) as api:
        events = api.history(instance_id(TASK_SAGA, meta["namespace"], meta["name"], meta["uid"]))
    return sum(e.ByteSize() for e in events)


def test_bytes_per_finished_saga_and_retention_gives_them_back(
    operator: Operator,
    engine: Engine,
    control_plane: cluster.State,
    kube: client.ApiClient,
    namespace: str,
    task_service: TaskService,
) -> None:
    """The seed's four-step onboarding saga (config/samples), N times: what each leaves in etcd (the object and its
    Events, read from etcd) and in the engine (its history, through the workflow API), then gone with retention.
    STEADFAST_SIZING_SAGAS=N for a bigger run; docs/install.md has the numbers."""
    import yaml

    sample = yaml.safe_load(SAMPLE.read_text().replace("http://127.0.0.1:8089", task_service.url))
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    for n in range(SIZING_SAGAS):
        spec = {**sample["spec"], "task": {**sample["spec"]["task"], "id": f"{namespace}-{n}"}}
        spec["retention"] = {"succeeded": f"{max(6, 2 * SIZING_SAGAS)}s"}  # measured before it goes
        sagas.create(f"onboard-{n}", spec)
    done = [sagas.wait_phase(f"onboard-{n}", "Succeeded") for n in range(SIZING_SAGAS)]
    objects = etcd_bytes(control_plane, f"/registry/steadfast.dev/tasksagas/{namespace}/")
    events = etcd_bytes(control_plane, f"/registry/events/{namespace}/")
    history = [history_bytes(engine, obj) for obj in done]
    per_object, per_events = objects[1] / SIZING_SAGAS, events[1] / SIZING_SAGAS
    print(
        f"\n[{engine.name}] {SIZING_SAGAS} four-step sagas: etcd {per_object:.0f} B/object, "
        f"{per_events:.0f} B of Events ({events[0] / SIZING_SAGAS:.1f}/saga), "
        f"engine history {sum(history) / len(history):.0f} B/instance"
    )
    assert objects[0] == SIZING_SAGAS
    assert per_object < 16_000 and sum(history) / len(history) < 64_000

    for n in range(SIZING_SAGAS):
        sagas.wait_gone(f"onboard-{n}", timeout=60 + SIZING_SAGAS)
    assert etcd_bytes(control_plane, f"/registry/steadfast.dev/tasksagas/{namespace}/") == (0, 0)
    assert all(runtime_status(engine, TASK_SAGA, obj) == "MISSING" for obj in done)
