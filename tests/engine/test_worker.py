"""The operator's worker watchdog on both engines: it notices when daprd stops routing work and reconnects."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import dapr.ext.workflow as wf
import pytest
from engine_workflows import register

from steadfast.dev import engines
from steadfast.worker import Worker, unreachable

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module", params=engines.selected())
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[engines.Engine]:
    proc = engines.start(request.param, tmp_path_factory.mktemp(f"worker-{request.param}"))
    try:
        yield proc
    finally:
        proc.stop()


def test_daprds_answers_are_classified() -> None:
    """The messages daprd 1.18.3 gives with and without this app's actor types registered (seen in its tests)."""
    assert unreachable(
        "failed to purge workflow state: failed to create actor: actor type "
        "dapr.internal.default.steadfast.workflow not registered"
    )
    assert unreachable(
        "failed to lookup actor: api error: code = FailedPrecondition desc = did not find address "
        "for actor 'dapr.internal.default.steadfast.workflow/steadfast-worker-probe'"
    )
    assert not unreachable("failed to purge workflow state: failed to fetch workflow state: no such instance exists")
    assert not unreachable("failed to connect to all addresses")  # down, not forgotten: the SDK reconnects itself


def test_watchdog_reconnects_a_worker_the_engine_forgot(engine: engines.Engine, tmp_path: Path) -> None:
    client = wf.DaprWorkflowClient(host=engine.host, port=str(engine.port))
    built: list[wf.WorkflowRuntime] = []

    def build() -> wf.WorkflowRuntime:
        rt = wf.WorkflowRuntime(host=engine.host, port=str(engine.port))
        register(rt)
        built.append(rt)
        return rt

    worker = Worker(build, client, interval=0.5)
    worker.start()
    try:
        assert worker.probe()
        waiting = client.schedule_new_workflow("wait_event", input="go")
        client.wait_for_workflow_start(waiting, timeout_in_seconds=30)
        # The worker's stream goes away behind the watchdog's back (what daprd's lost registration looks like).
        built[0].shutdown()  # type: ignore[no-untyped-call]  # the SDK's shutdown() has no hints
        if engine.name == "daprd":
            assert not worker.probe()  # daprd has unregistered the actor types: nothing would run
        deadline = time.monotonic() + 30
        while len(built) < 2 and engine.name == "daprd" and time.monotonic() < deadline:
            time.sleep(0.2)
        if engine.name == "local":
            worker.reconnect()  # the local engine keeps routing to any worker; reconnect explicitly
        assert len(built) == 2, "the watchdog did not reconnect"
        assert worker.probe()
        client.raise_workflow_event(waiting, "go", data="after reconnect")
        state = client.wait_for_workflow_completion(waiting, timeout_in_seconds=60)
        assert state is not None and json.loads(state.serialized_output) == "after reconnect"
        done = client.wait_for_workflow_completion(
            client.schedule_new_workflow("chain4", input=1), timeout_in_seconds=60
        )
        assert done is not None and json.loads(done.serialized_output) == 16
    finally:
        worker.stop()
        client.close()  # type: ignore[no-untyped-call]  # the SDK's close() has no hints


def test_the_operators_own_runtime_reconnects(engine: engines.Engine) -> None:
    """The operator's real registrations (runner.runtime_factory) survive a reconnect on a real engine."""
    from steadfast.actions import ActionRunner
    from steadfast.egress import EgressPolicy
    from steadfast.runner import runtime_factory
    from steadfast.workflows.activities import Activities

    client = wf.DaprWorkflowClient(host=engine.host, port=str(engine.port))
    activities = Activities(ActionRunner(None, EgressPolicy.parse(allow=[], deny=[])), None)  # type: ignore[arg-type]
    factory = runtime_factory(activities, host=engine.host, port=str(engine.port))
    built: list[wf.WorkflowRuntime] = []

    def build() -> wf.WorkflowRuntime:
        built.append(factory())
        return built[-1]

    worker = Worker(build, client, interval=0.5)
    try:
        worker.start()
        assert worker.probe()
        worker.reconnect()  # a second runtime with the same workflows and activities
        assert len(built) == 2 and worker.probe()
    finally:
        worker.stop()
        client.close()  # type: ignore[no-untyped-call]  # the SDK's close() has no hints
