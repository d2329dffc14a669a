"""Crash and restart: SIGKILL of the engine and of workers, through the real SDK."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import dapr.ext.workflow as wf
import grpc
import pytest
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs
from dapr.ext.workflow._durabletask.internal import protos as pb

from steadfast_engine.process import EngineProcess

# For hints only: at run time "conftest" may be another folder's (pytest imports every conftest.py by that name).
if TYPE_CHECKING:
    from conftest import WorkerProcess

pytestmark = [pytest.mark.engine, pytest.mark.chaos]


def _history(address: str, iid: str) -> list[pb.HistoryEvent]:
    with grpc.insecure_channel(address) as channel:
        stub = stubs.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]  # generated without hints
        return list(stub.GetInstanceHistory(pb.GetInstanceHistoryRequest(instanceId=iid), timeout=30).events)


def _assert_each_result_once(address: str, iid: str) -> None:
    events = _history(address, iid)
    scheduled = [e.eventId for e in events if e.HasField("taskScheduled")]
    results = Counter(
        e.taskCompleted.taskScheduledId if e.HasField("taskCompleted") else e.taskFailed.taskScheduledId
        for e in events
        if e.HasField("taskCompleted") or e.HasField("taskFailed")
    )
    assert sorted(results) == sorted(scheduled), iid
    assert all(n == 1 for n in results.values()), (iid, results)


def test_kill_9_engine_loses_nothing_acknowledged(
    engine: EngineProcess, worker_process: Callable[[], WorkerProcess], tmp_path: Path
) -> None:
    worker_process()
    marks = tmp_path / "marks"
    acknowledged: list[tuple[str, int]] = []
    stop = threading.Event()

    def schedule() -> None:
        client = wf.DaprWorkflowClient(host=engine.host, port=str(engine.port))
        n = 0
        while not stop.is_set():
            iid = f"kill-{n}"
            try:
                client.schedule_new_workflow(
                    "slow_chain", input={"x": n, "steps": 3, "sleep": 0.02, "marks": str(marks)}, instance_id=iid
                )
                acknowledged.append((iid, n))
            except grpc.RpcError as exc:
                if "already exists" in (exc.details() or ""):
                    acknowledged.append((iid, n))  # committed before the crash, answer lost
                else:
                    time.sleep(0.05)
                    continue
            n += 1
        client.close()  # type: ignore[no-untyped-call]  # the SDK's close() has no hints

    scheduler = threading.Thread(target=schedule)
    scheduler.start()
    rng = random.Random(4)
    try:
        for _ in range(3):
            time.sleep(rng.uniform(0.3, 0.8))
            engine.kill()
            time.sleep(0.2)
            engine.start()
        time.sleep(0.3)
    finally:
        stop.set()
        scheduler.join(60)
    assert len(acknowledged) >= 5
    client = wf.DaprWorkflowClient(host=engine.host, port=str(engine.port))
    try:
        for iid, n in acknowledged:
            state = client.wait_for_workflow_completion(iid, timeout_in_seconds=60)
            assert state is not None, f"acknowledged instance {iid} was lost"
            assert state.runtime_status.name == "COMPLETED", (iid, state.runtime_status)
            assert json.loads(state.serialized_output) == n * 8
            _assert_each_result_once(engine.address, iid)
    finally:
        client.close()  # type: ignore[no-untyped-call]  # the SDK's close() has no hints


def test_worker_killed_mid_activity_runs_it_again(
    engine: EngineProcess,
    client: wf.DaprWorkflowClient,
    worker_process: Callable[[], WorkerProcess],
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    first = worker_process()
    iid = client.schedule_new_workflow(
        "slow_chain", input={"x": 1, "steps": 1, "sleep": 1.5, "marks": str(marks)}, instance_id="victim"
    )
    deadline = time.monotonic() + 20
    while not (marks.exists() and any(marks.iterdir())):
        assert time.monotonic() < deadline, "activity never started"
        time.sleep(0.05)
    first.kill()
    worker_process()
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=30)
    assert state is not None
    assert state.runtime_status.name == "COMPLETED"
    assert json.loads(state.serialized_output) == 2
    runs = [p.name for p in marks.iterdir()]
    assert len(runs) >= 2, runs
    _assert_each_result_once(engine.address, iid)


def test_two_workers_share_the_load(
    engine: EngineProcess,
    client: wf.DaprWorkflowClient,
    worker_process: Callable[[], WorkerProcess],
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    worker_process()
    worker_process()
    ids = [
        client.schedule_new_workflow(
            "slow_chain", input={"x": i, "steps": 2, "sleep": 0.05, "marks": str(marks)}, instance_id=f"share-{i}"
        )
        for i in range(30)
    ]
    for i, iid in enumerate(ids):
        state = client.wait_for_workflow_completion(iid, timeout_in_seconds=60)
        assert state is not None
        assert json.loads(state.serialized_output) == i * 4
        _assert_each_result_once(engine.address, iid)
    pids = {name.split("-")[-2] for name in (p.name for p in marks.iterdir())}
    assert len(pids) == 2, pids
    assert len(list(marks.iterdir())) == 60  # every activity ran exactly once: no double delivery


def test_timer_survives_engine_restart(
    engine: EngineProcess, client: wf.DaprWorkflowClient, runtime: wf.WorkflowRuntime
) -> None:
    iid = client.schedule_new_workflow("sleeper", input=2.0)
    client.wait_for_workflow_start(iid, timeout_in_seconds=20)
    started = time.monotonic()
    engine.kill()
    time.sleep(0.5)
    engine.start()
    fresh = wf.DaprWorkflowClient(host=engine.host, port=str(engine.port))
    try:
        state = fresh.wait_for_workflow_completion(iid, timeout_in_seconds=30)
    finally:
        fresh.close()  # type: ignore[no-untyped-call]  # the SDK's close() has no hints
    assert state is not None
    assert state.runtime_status.name == "COMPLETED"
    assert json.loads(state.serialized_output) >= 2.0
    assert time.monotonic() - started >= 1.0
