"""Fixtures: the operator's real saga, monitor and approval workflows on a local engine, with fake activities.

One engine and one worker serve the whole session (started once, stopped even when tests fail); each
test gets a `Harness` with unique resource UIDs, so its instances, calls and snapshots never mix with
another test's. The fakes themselves are in workflow_fakes.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import dapr.ext.workflow as wf
import pytest
from workflow_fakes import Harness, World

from steadfast.approval import workflow as approval
from steadfast.concurrency import keeper
from steadfast.concurrency.activities import SlotActivities
from steadfast.concurrency.records import KEEPER
from steadfast.records import EXECUTE, REPORT
from steadfast.schedules import workflow as schedule
from steadfast.schedules.records import FIRE, LOOK
from steadfast.workflows import monitor, saga
from steadfast_engine.process import EngineProcess, start_engine

logging.getLogger("durabletask-worker").setLevel(logging.ERROR)
logging.getLogger("durabletask-client").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    proc = start_engine(Path(tmp_path_factory.mktemp("workflow-engine")) / "engine.db")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def world() -> World:
    return World()


@pytest.fixture(scope="session")
def runtime(engine: EngineProcess, world: World) -> Iterator[wf.WorkflowRuntime]:
    """One worker with the operator's real workflows, the fake activities and the real concurrency activities
    (they only talk to the engine; a keeper checks its holders every second here)."""
    rt = wf.WorkflowRuntime(host=engine.host, port=str(engine.port))
    slots_client = wf.DaprWorkflowClient(host=engine.host, port=str(engine.port))
    rt.register_workflow(keeper.keeper_workflow, name=KEEPER)
    SlotActivities(slots_client, check_seconds=1).register(rt)
    rt.register_workflow(saga.saga_workflow, name=saga.NAME)
    rt.register_workflow(monitor.monitor_workflow, name=monitor.NAME)
    rt.register_workflow(approval.approval_workflow, name=approval.NAME)
    rt.register_workflow(schedule.schedule_workflow, name=schedule.NAME)
    rt.register_activity(world.fire, name=FIRE)
    rt.register_activity(world.look, name=LOOK)
    rt.register_activity(world.execute, name=EXECUTE)
    rt.register_activity(world.report, name=REPORT)
    rt.start()  # type: ignore[no-untyped-call]  # the SDK's start() has no hints
    try:
        yield rt
    finally:
        rt.shutdown()  # type: ignore[no-untyped-call]  # the SDK's shutdown() has no hints


@pytest.fixture(scope="session")
def client(engine: EngineProcess) -> Iterator[wf.DaprWorkflowClient]:
    c = wf.DaprWorkflowClient(host=engine.host, port=str(engine.port))
    try:
        yield c
    finally:
        c.close()  # type: ignore[no-untyped-call]  # the SDK's close() has no hints


@pytest.fixture
def harness(
    request: pytest.FixtureRequest, runtime: wf.WorkflowRuntime, client: wf.DaprWorkflowClient, world: World
) -> Iterator[Harness]:
    """Per test: unique resource names and UIDs; running instances are terminated afterwards."""
    name = request.node.name.replace("_", "-").lower()[:40].strip("-")
    h = Harness(client, world, name)
    try:
        yield h
    finally:
        h.close()
    # Every snapshot any test's workflow reported fits the CRD's status schema (nothing pruned or refused).
    assert h.schema_problems() == []
