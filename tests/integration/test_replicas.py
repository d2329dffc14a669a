"""Two operator replicas, each with its own daprd, on one placement, one scheduler and one database, as the chart
deploys them: the workflow work is spread over both, and SIGKILL of one replica with its daprd loses nothing
(nor gives a concurrency slot twice: the killed batch shares one key).

kopf peering makes one replica active for resource handlers (the other stands by), but both run the workflow
worker: placement spreads the workflow and activity actors over both daprd, so each replica runs part of every
batch. Runs on engines with a database server of their own (`daprd-postgres`, `daprd-redis`; `make replicas`) and
is skipped on the others (several daprd on one SQLite file is not a deployment). `STEADFAST_REPLICA_SAGAS=50` runs
it bigger.

The test checks the engine first (nothing lost) and then the statuses (the replicas' status writes are ordered
through the object: a late progress snapshot of one never replaces the final one of the other), and says which
one failed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from e2e_support import Operator, Resources, TaskService, activities, allow_users, eventually, peering
from kubernetes import client, config
from test_approval import create, decide, request, wait_open, wait_webhooks
from test_resilience import assert_effects_once, final_sagas, saga

from steadfast.api.kinds import TASK_SAGA
from steadfast.binding import instance_id
from steadfast.dev import statestores
from steadfast.dev.controlplane import cluster
from steadfast.dev.controlplane.daprd import DaprdEngine
from steadfast.dev.engines import Engine
from steadfast.dev.workflow_api import WorkflowAPI
from steadfast.records import idempotency_key

pytestmark = [pytest.mark.controlplane, pytest.mark.chaos, pytest.mark.replicas]

SAGAS = int(os.environ.get("STEADFAST_REPLICA_SAGAS", "10"))
LIMIT = 3  # the killed batch shares one concurrency key: its keeper's slots across both replicas and the kill
PEERING = "replica-peers"


def shared_store(engine: Engine) -> DaprdEngine:
    if isinstance(engine, DaprdEngine) and isinstance(engine.store, statestores.ChartPostgres | statestores.ChartRedis):
        return engine
    pytest.skip("several replicas need a state store on a database server (daprd-postgres, daprd-redis)")


def sagas_at_once(svc: TaskService, uids: dict[str, str]) -> int:
    """The most sagas whose calls overlapped: each saga's span runs from its first call's arrival to its last
    (its Idempotency-Keys say which calls are its own; a redelivery after the kill stays inside its span)."""
    steps = [s["name"] for s in saga(svc, "x")["steps"]]
    owner = {idempotency_key(uid, step, "action"): name for name, uid in uids.items() for step in steps}
    spans: dict[str, list[float]] = {}
    for delivery in svc.stats()["deliveries"]:
        name = owner.get(delivery["key"])
        if name is not None:
            spans.setdefault(name, []).append(delivery["at"])
    bounds = [(min(times), max(times)) for times in spans.values()]
    return max((sum(1 for start, end in bounds if start <= at <= end) for at, _ in bounds), default=0)


def test_two_replicas_share_the_work_and_survive_sigkill(
    operator: Operator,
    engine: Engine,
    control_plane: cluster.State,
    task_service: TaskService,
    kube: client.ApiClient,
    namespace: str,
    kubectl_path: Path,
    tmp_path: Path,
) -> None:
    first = shared_store(engine)
    alice, bob = (
        client.CustomObjectsApi(config.new_client_from_config(config_file=control_plane.kubeconfig, context=user))
        for user in ("alice", "bob")
    )
    operator.stop()  # the session's operator makes room for the two replicas
    peering(kube, kubectl_path, control_plane.kubeconfig, PEERING)
    allow_users(kube, namespace, ("alice", "bob"))
    task_service.reset()
    second = first.sidecar(tmp_path / "daprd-b")
    common = ["--peering", PEERING, "--peering-lifetime", "3"]
    a = Operator(control_plane, first, tmp_path / "a.log", extra_args=[*common, "--priority", "100"])
    b = Operator(control_plane, second, tmp_path / "b.log", extra_args=[*common, "--priority", "50"])
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    monitors = Resources(kube, namespace, "healthmonitors", "HealthMonitor")
    aprs = Resources(kube, namespace, "approvalrequests", "ApprovalRequest")
    try:
        second.start()
        a.start()
        eventually(lambda: "Resuming operations" in a.log.read_text(), timeout=30, what="replica a active")
        b.start()  # the last to start points the admission webhooks at itself: b, the one that survives
        wait_webhooks(aprs.api, namespace)
        assert "Resuming operations" not in b.log.read_text(), "both replicas handle resources"

        # 1. The work is spread: each replica's worker runs activities of one batch.
        spread = [f"s{i:03d}" for i in range(SAGAS)]
        for name in spread:
            sagas.create(name, saga(task_service, f"{namespace}-{name}"))
        final_sagas(sagas, spread, timeout=60 + SAGAS)
        per_replica = {"a": activities(a, "TaskSaga"), "b": activities(b, "TaskSaga")}
        print(f"\n[replicas] saga activities per replica: {per_replica} ({4 * SAGAS} steps)")
        assert per_replica["a"] > 0 and per_replica["b"] > 0, f"one replica ran all the work: {per_replica}"
        assert sum(per_replica.values()) >= 4 * SAGAS

        # 2. Work in flight on both, then SIGKILL replica a and its daprd.
        monitors.create(
            "watch", {"target": {"http": {"url": f"{task_service.url}/healthz/watch"}}, "healthyInterval": "1s"}
        )
        create(bob, namespace, "deploy", request(task_service, users=("alice",)))
        wait_open(aprs, "deploy")
        monitors.wait_status("watch", lambda s: s.get("checkCount", 0) >= 1, "first check", timeout=30)
        task_service.fault("POST /notices", fail=0, delay=0.5)  # keep sagas in flight across the kill
        killed = [f"k{i:03d}" for i in range(SAGAS)]
        for name in killed:
            sagas.create(
                name, {**saga(task_service, f"{namespace}-{name}"), "concurrency": {"key": "batch", "limit": LIMIT}}
            )
        eventually(lambda: len(task_service.applied("/records")) >= len(spread) + 2, what="the batch under way")
        b_before = activities(b)
        a.kill()
        first.kill()
        at_kill = time.monotonic()
        checks_at_kill = monitors.status("watch").get("checkCount", 0)
        open_at_kill = [n for n in killed if sagas.status(n).get("phase") != "Succeeded"]
        assert open_at_kill, "the batch finished before the kill: nothing was in flight"

        decide(alice, namespace, "deploy", approved=True)
        assert (
            aprs.wait_phase("deploy", "Completed", "ActionFailed", "Rejected", "TimedOut", timeout=90)["status"][
                "phase"
            ]
            == "Completed"
        )
        # Nothing lost in the engine: every instance of the batch completes (the workflow's own record) ...
        uids = {n: (sagas.get(n) or {})["metadata"]["uid"] for n in killed}
        with WorkflowAPI(second.address) as api:  # the survivor
            eventually(
                lambda: all(
                    api.runtime_status(instance_id(TASK_SAGA, namespace, n, u)) == "COMPLETED" for n, u in uids.items()
                ),
                timeout=120 + SAGAS,
                what="every instance of the batch COMPLETED in the engine",
                interval=0.5,
            )
        engine_done = time.monotonic() - at_kill
        # ... and every resource says so: a progress snapshot lingering in one replica never lands over the final
        # one written by the other (steadfast.status orders them through the object).
        try:
            done = final_sagas(sagas, killed, timeout=30)
        except AssertionError:
            now = {n: sagas.status(n) for n in killed}
            stale = {
                n: f"{s.get('phase')} at {s.get('currentStep')}"
                for n, s in now.items()
                if s.get("phase") != "Succeeded"
            }
            raise AssertionError(
                f"completed in the engine {engine_done:.1f}s after the kill, but the resource status regressed "
                f"(a stale progress write of the other replica): {stale}"
            ) from None
        recovered = time.monotonic() - at_kill
        assert {d["status"]["phase"] for d in done.values()} == {"Succeeded"}
        monitors.wait_status(
            "watch", lambda s: s.get("checkCount", 0) >= checks_at_kill + 3, "checks after the kill", timeout=60
        )
        assert_effects_once(task_service, spread + killed)
        at_once = sagas_at_once(task_service, uids)
        assert 0 < at_once <= LIMIT, f"{at_once} sagas of the key ran at once across the replicas (limit {LIMIT})"
        assert task_service.applied("/deploy") == ["POST /deploy"], "the approval's action ran other than once"
        assert activities(b) > b_before, "the surviving replica ran nothing after the kill"
        assert "Resuming operations" in b.log.read_text(), "the standby did not take over the resource handlers"
        print(
            f"[replicas] {len(open_at_kill)} of {SAGAS} sagas in flight at SIGKILL of replica a and its daprd; "
            f"every saga final {recovered:.1f}s after it; at most {at_once} of the key's sagas at once (limit {LIMIT})"
        )
    finally:
        task_service.clear_faults()
        a.stop()
        b.stop()
        second.stop()
        if not first.running:
            first.start()
        operator.start()
