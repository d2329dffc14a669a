"""Workflow versioning on both engines: a patched workflow replayed by old and new code, and a stalled instance.

The worker reports the patches it took (`ctx.is_patched`) and the version it ran (named versions) with each
result; the engine records them on the turn's `workflowStarted` event. Code newer than an instance's history
replays it the old way; code older than the history stalls the instance (status STALLED, an `executionStalled`
event saying why) until a worker with the newer code takes it up again. Where the engines differ, daprd is right.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dapr.ext.workflow as wf
import pytest
from beds import Bed
from dapr.ext.workflow._durabletask.internal import protos as pb
from google.protobuf import wrappers_pb2
from test_fidelity_calls import refusal, run_everywhere
from versioned_workflows import Code, register

pytestmark = pytest.mark.engine


@contextmanager
def worker(bed: Bed, code: Code) -> Iterator[None]:
    rt = wf.WorkflowRuntime(host=bed.engine.host, port=str(bed.engine.port))
    register(rt, code)
    rt.start()  # type: ignore[no-untyped-call]  # the SDK's start() has no hints
    try:
        yield
    finally:
        rt.shutdown()  # type: ignore[no-untyped-call]  # the SDK's shutdown() has no hints


def history(stub: Any, iid: str) -> list[Any]:
    return list(stub.GetInstanceHistory(pb.GetInstanceHistoryRequest(instanceId=iid)).events)


def until(what: str, check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def waiting(stub: Any, iid: str, after: str) -> None:
    """Until the instance's history holds `after`: it then waits for "go" with that turn committed."""
    until(f"{iid} to record {after}", lambda: any(e.HasField(after) for e in history(stub, iid)))


def status(stub: Any, iid: str) -> str:
    state = stub.GetInstance(pb.GetInstanceRequest(instanceId=iid)).workflowState
    return str(pb.OrchestrationStatus.Name(state.workflowStatus))


def patches(stub: Any, iid: str) -> list[list[str]]:
    return [list(e.workflowStarted.version.patches) for e in history(stub, iid) if e.HasField("workflowStarted")]


def versions(stub: Any, iid: str) -> list[str]:
    return [e.workflowStarted.version.name for e in history(stub, iid) if e.HasField("workflowStarted")]


def stalls(stub: Any, iid: str) -> list[tuple[str, str]]:
    return [
        (pb.StalledReason.Name(e.executionStalled.reason), e.executionStalled.description)
        for e in history(stub, iid)
        if e.HasField("executionStalled")
    ]


def test_patched_workflow_replayed_by_old_and_new_code_and_stalled_by_older_code(bare_beds: list[Bed]) -> None:
    def scenario(bed: Bed) -> dict[str, Any]:
        old_patched, old_named = bed.id("v-old-patched"), bed.id("v-old-named")
        new_patched, new_named = bed.id("v-new-patched"), bed.id("v-new-named")
        seen: dict[str, Any] = {}
        with bed.raw() as stub:

            def start(iid: str, name: str) -> None:
                stub.StartInstance(pb.CreateInstanceRequest(instanceId=iid, name=name))

            def go(iid: str) -> Any:
                event = pb.RaiseEventRequest(instanceId=iid, name="go", input=wrappers_pb2.StringValue(value='"go"'))
                return refusal(functools.partial(stub.RaiseEvent, event))

            def end(iid: str) -> Any:
                state = stub.WaitForInstanceCompletion(
                    pb.GetInstanceRequest(instanceId=iid, getInputsAndOutputs=True), timeout=60
                ).workflowState
                return [pb.OrchestrationStatus.Name(state.workflowStatus), state.output.value]

            # 1. instances started by the old code
            with worker(bed, "old"):
                start(old_patched, "patched")
                start(old_named, "named")
                waiting(stub, old_patched, "taskCompleted")
                waiting(stub, old_named, "workflowStarted")
            # 2. the new code finishes them the old way and starts new ones the new way
            with worker(bed, "new"):
                go(old_patched)
                go(old_named)
                seen["old_by_new"] = [end(old_patched), end(old_named)]
                seen["old_patches"] = patches(stub, old_patched)
                start(new_patched, "patched")
                start(new_named, "named")
                waiting(stub, new_patched, "taskCompleted")
                waiting(stub, new_named, "workflowStarted")
            seen["new_patches"] = patches(stub, new_patched)
            seen["new_versions"] = versions(stub, new_named)
            # 3. code older than their history stalls them
            with worker(bed, "old"):
                seen["go_before_stall"] = [go(new_patched), go(new_named)]
                until(
                    "the stall",
                    lambda: status(stub, new_patched) == status(stub, new_named) == "ORCHESTRATION_STATUS_STALLED",
                )
                seen["stalls"] = [stalls(stub, new_patched), stalls(stub, new_named)]
                seen["go_while_stalled"] = go(new_patched)
                seen["terminate_while_stalled"] = refusal(
                    functools.partial(stub.TerminateInstance, pb.TerminateRequest(instanceId=new_named), timeout=10)
                )
            # 4. the new code takes them up again and runs the held events
            with worker(bed, "new"):
                seen["recovered"] = [end(new_patched), end(new_named)]
            seen["patches_after"] = patches(stub, new_patched)
        return seen

    seen = run_everywhere(bare_beds, scenario)
    assert seen["old_by_new"] == [
        ["ORCHESTRATION_STATUS_COMPLETED", '["old step", "go"]'],
        ["ORCHESTRATION_STATUS_COMPLETED", '["v1", "go"]'],
    ]
    assert seen["new_patches"][0] == ["new-step"] and all(p == [] for p in seen["new_patches"][1:])
    assert seen["go_while_stalled"]["details"].endswith("actor is stalled")
    assert seen["recovered"] == [
        ["ORCHESTRATION_STATUS_COMPLETED", '["new step", "go"]'],
        ["ORCHESTRATION_STATUS_COMPLETED", '["v2", "go"]'],
    ]
    assert seen["stalls"][0][0][0] == "PATCH_MISMATCH" and seen["stalls"][1] == [
        ("VERSION_NOT_AVAILABLE", "Version not available: v2")
    ]
