"""Behaviour of the local engine through the real SDK over real gRPC (no mocks)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dapr.ext.workflow as wf
import grpc
import pytest
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs
from dapr.ext.workflow._durabletask.internal import protos as pb
from google.protobuf import empty_pb2

from steadfast_engine import cli
from steadfast_engine.process import EngineProcess

pytestmark = pytest.mark.engine


def _status(state: wf.WorkflowState | None) -> str:
    assert state is not None
    return state.runtime_status.name


def _stub(engine: EngineProcess) -> tuple[grpc.Channel, stubs.TaskHubSidecarServiceStub]:
    channel = grpc.insecure_channel(engine.address)
    return channel, stubs.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]  # generated without hints


def _history(engine: EngineProcess, iid: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "steadfast_engine", "history", iid, "--db", str(engine.db), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_happy_path_four_activities(
    engine: EngineProcess,
    client: wf.DaprWorkflowClient,
    runtime: wf.WorkflowRuntime,
    capsys: pytest.CaptureFixture[str],
) -> None:
    iid = client.schedule_new_workflow("chain4", input=3)
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=20)
    assert state is not None
    assert _status(state) == "COMPLETED"
    assert json.loads(state.serialized_output) == 48
    assert json.loads(state.serialized_input) == 3
    events = _history(engine, iid)
    kinds = [next(k for k in e if k not in ("eventId", "timestamp", "seq", "router")) for e in events]
    assert kinds.count("taskScheduled") == 4 and kinds.count("taskCompleted") == 4
    assert kinds[-1] == "executionCompleted"
    assert cli.main(["list", "--db", str(engine.db), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(i["instance_id"], i["status"], i["events"]) for i in listed] == [(iid, "COMPLETED", len(events))]


def test_activity_failure_fails_workflow(client: wf.DaprWorkflowClient, runtime: wf.WorkflowRuntime) -> None:
    iid = client.schedule_new_workflow("failing", input="boom")
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=20)
    assert state is not None
    assert _status(state) == "FAILED"
    assert "boom" in state.failure_details.message


def test_event_raised_before_wait_is_kept(client: wf.DaprWorkflowClient, runtime: wf.WorkflowRuntime) -> None:
    iid = client.schedule_new_workflow("two_events")
    client.raise_workflow_event(iid, "b", data="second")  # raised before the workflow waits for it
    client.raise_workflow_event(iid, "a", data="first")
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=20)
    assert state is not None
    assert json.loads(state.serialized_output) == ["first", "second"]


def test_raise_to_unknown_instance_is_refused(client: wf.DaprWorkflowClient, runtime: wf.WorkflowRuntime) -> None:
    """As on daprd: an event for an instance that does not exist is an error, not silently kept."""
    with pytest.raises(grpc.RpcError) as err:
        client.raise_workflow_event("no-such-instance", "go", data=1)
    assert err.value.details() == "no such instance exists"
    assert client.get_workflow_state("no-such-instance") is None


def test_duplicate_ids_purge_and_reuse(client: wf.DaprWorkflowClient, runtime: wf.WorkflowRuntime) -> None:
    iid = client.schedule_new_workflow("wait_event", input="go", instance_id="dup-1")
    with pytest.raises(grpc.RpcError) as running_dup:
        client.schedule_new_workflow("wait_event", input="go", instance_id=iid)
    assert running_dup.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "already exists" in running_dup.value.details()
    with pytest.raises(grpc.RpcError) as purge_running:
        client.purge_workflow(iid)
    assert purge_running.value.code() == grpc.StatusCode.UNKNOWN
    client.terminate_workflow(iid, output="stopped")
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=20)
    assert state is not None
    assert _status(state) == "TERMINATED"
    assert json.loads(state.serialized_output) == "stopped"
    # A finished instance's ID can be used again (as on daprd 1.18): a new execution replaces it.
    client.schedule_new_workflow("wait_event", input="go", instance_id=iid)
    client.raise_workflow_event(iid, "go", data=7)
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=20)
    assert state is not None
    assert json.loads(state.serialized_output) == 7
    client.purge_workflow(iid)
    assert client.get_workflow_state(iid) is None
    client.schedule_new_workflow("wait_event", input="go", instance_id=iid)
    client.raise_workflow_event(iid, "go", data=8)
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=20)
    assert state is not None
    assert json.loads(state.serialized_output) == 8


def test_recursive_terminate_and_purge(client: wf.DaprWorkflowClient, runtime: wf.WorkflowRuntime) -> None:
    iid = client.schedule_new_workflow("parent", input=2, instance_id="par")
    for child in ("par-c0", "par-c1"):
        assert _status(client.wait_for_workflow_start(child, timeout_in_seconds=20)) == "RUNNING"
    client.terminate_workflow(iid)
    for each in (iid, "par-c0", "par-c1"):
        assert _status(client.wait_for_workflow_completion(each, timeout_in_seconds=20)) == "TERMINATED"
    client.purge_workflow(iid)
    for each in (iid, "par-c0", "par-c1"):
        assert client.get_workflow_state(each) is None


def test_child_workflow_result(client: wf.DaprWorkflowClient, runtime: wf.WorkflowRuntime) -> None:
    iid = client.schedule_new_workflow("parent_ok", input=1)
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=20)
    assert state is not None
    assert json.loads(state.serialized_output) == 17


def test_suspend_holds_events_until_resume(client: wf.DaprWorkflowClient, runtime: wf.WorkflowRuntime) -> None:
    iid = client.schedule_new_workflow("wait_event", input="go")
    client.wait_for_workflow_start(iid, timeout_in_seconds=20)
    client.pause_workflow(iid)
    assert _status(client.get_workflow_state(iid)) == "SUSPENDED"
    client.raise_workflow_event(iid, "go", data="held")
    time.sleep(0.5)
    assert _status(client.get_workflow_state(iid)) == "SUSPENDED"
    client.resume_workflow(iid)
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=20)
    assert state is not None
    assert json.loads(state.serialized_output) == "held"


def test_continue_as_new_keeps_history_constant(
    engine: EngineProcess, client: wf.DaprWorkflowClient, runtime: wf.WorkflowRuntime
) -> None:
    iid = client.schedule_new_workflow("counter", input={"n": 0, "limit": 1000})
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=120)
    assert state is not None
    assert _status(state) == "COMPLETED"
    assert json.loads(state.serialized_output) == 1000
    assert len(_history(engine, iid)) <= 4


def test_continue_as_new_carries_unprocessed_events(client: wf.DaprWorkflowClient, runtime: wf.WorkflowRuntime) -> None:
    iid = client.schedule_new_workflow("carry", input=0)
    state = client.wait_for_workflow_start(iid, timeout_in_seconds=20)
    client.raise_workflow_event(iid, "kept", data="carried")
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=20)
    assert state is not None
    assert json.loads(state.serialized_output) == "carried"


def test_timer_fires_at_or_after_its_time(client: wf.DaprWorkflowClient, runtime: wf.WorkflowRuntime) -> None:
    started = time.monotonic()
    iid = client.schedule_new_workflow("sleeper", input=1.0)
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=20)
    assert state is not None
    assert time.monotonic() - started >= 1.0
    assert json.loads(state.serialized_output) >= 1.0


def test_payload_over_grpc_limit_is_refused(client: wf.DaprWorkflowClient, runtime: wf.WorkflowRuntime) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.schedule_new_workflow("chain4", input="x" * (5 * 1024 * 1024))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_history_over_limit_fails_the_workflow_clearly(
    client: wf.DaprWorkflowClient, runtime: wf.WorkflowRuntime
) -> None:
    iid = client.schedule_new_workflow("two_events")
    big = "y" * (3 * 1024 * 1024)
    client.raise_workflow_event(iid, "a", data=big)
    client.raise_workflow_event(iid, "b", data=big)
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=30)
    assert state is not None
    assert _status(state) == "FAILED"
    assert "message limit" in state.failure_details.message


def test_garbage_input_gets_grpc_errors(engine: EngineProcess, client: wf.DaprWorkflowClient) -> None:
    channel, stub = _stub(engine)
    with channel:
        bad = [
            (stub.TerminateInstance, pb.TerminateRequest(instanceId="missing"), grpc.StatusCode.UNKNOWN),
            (stub.SuspendInstance, pb.SuspendRequest(instanceId="missing"), grpc.StatusCode.UNKNOWN),
            (stub.PurgeInstances, pb.PurgeInstancesRequest(instanceId="missing"), grpc.StatusCode.UNKNOWN),
            (
                stub.CompleteActivityTask,
                pb.ActivityResponse(instanceId="missing", taskId=3, completionToken="forged"),
                grpc.StatusCode.UNKNOWN,
            ),
            (
                stub.CompleteOrchestratorTask,
                pb.WorkflowResponse(instanceId="missing", completionToken="forged"),
                grpc.StatusCode.UNKNOWN,
            ),
            (
                stub.RerunWorkflowFromEvent,
                pb.RerunWorkflowFromEventRequest(sourceInstanceID="x"),
                grpc.StatusCode.UNIMPLEMENTED,
            ),
        ]
        for call, request, code in bad:
            with pytest.raises(grpc.RpcError) as err:
                call(request, timeout=10)
            assert err.value.code() == code, (request, err.value.details())
        # raw garbage bytes instead of a protobuf message
        raw = channel.unary_unary("/TaskHubSidecarService/StartInstance")
        with pytest.raises(grpc.RpcError):
            raw(b"\xff\xfe garbage \x00", timeout=10)
        stub.Hello(empty_pb2.Empty(), timeout=10)  # still alive
    assert client.get_workflow_state("missing") is None


def test_late_completion_of_redispatched_work_is_refused(engine: EngineProcess, client: wf.DaprWorkflowClient) -> None:
    """A work item whose stream went away is given again; the old token is then refused."""
    client.schedule_new_workflow("chain4", input=1, instance_id="late")
    channel1, stub1 = _stub(engine)
    stream1 = stub1.GetWorkItems(pb.GetWorkItemsRequest())
    first = next(stream1)
    assert first.workflowRequest.instanceId == "late"
    stream1.cancel()
    channel1.close()
    channel2, stub2 = _stub(engine)
    with channel2:
        stream2 = stub2.GetWorkItems(pb.GetWorkItemsRequest())
        second = next(stream2)
        assert second.workflowRequest.instanceId == "late"
        assert second.completionToken != first.completionToken
        with pytest.raises(grpc.RpcError) as err:
            stub2.CompleteOrchestratorTask(
                pb.WorkflowResponse(instanceId="late", completionToken=first.completionToken), timeout=10
            )
        assert "no longer" in err.value.details()
        stub2.CompleteOrchestratorTask(
            pb.WorkflowResponse(instanceId="late", completionToken=second.completionToken), timeout=10
        )
        stream2.cancel()


def test_sdk_finds_engine_through_env(engine: EngineProcess) -> None:
    code = "import dapr.ext.workflow as wf\nc = wf.DaprWorkflowClient()\nprint(c.get_workflow_state('nobody'))\n"
    forms = [
        {"DAPR_GRPC_ENDPOINT": engine.address},
        {"DAPR_GRPC_ENDPOINT": f"http://{engine.address}"},
        {"DAPR_RUNTIME_HOST": engine.host, "DAPR_GRPC_PORT": str(engine.port)},
    ]
    for form in forms:
        env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("DAPR_")}
        env.update(form)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (form, out.stderr[-2000:])
        assert out.stdout.strip() == "None", form


def test_idle_engine_uses_no_cpu(engine: EngineProcess, runtime: wf.WorkflowRuntime) -> None:
    def cpu() -> float:
        fields = Path(f"/proc/{engine.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100.0

    time.sleep(0.5)
    before = cpu()
    time.sleep(3.0)
    assert cpu() - before < 0.1  # seconds of CPU over 3 s of idling with a worker connected
