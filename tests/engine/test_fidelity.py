"""The local engine against daprd: the same workflows on both, compared result by result.

Each test runs one scenario through the unmodified SDK on every engine of the run (both by default) and
asserts two things: what a user would see (statuses, outputs, failure messages) is what the SDK promises,
and the engines agree on it. Where they differ, daprd is right; what still differs is in docs/engine.md.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import dapr.ext.workflow as wf
import grpc
import pytest
from beds import Bed

from steadfast.dev.workflow_api import WorkflowAPI

pytestmark = pytest.mark.engine

Observation = Any


def run_everywhere(beds: list[Bed], scenario: Callable[[Bed], Observation]) -> Observation:
    """Run `scenario` on each engine; fail unless every engine observed the same; return that observation."""
    seen = {bed.name: scenario(bed) for bed in beds}
    first, *rest = seen.values()
    assert all(other == first for other in rest), "engines disagree:\n" + "\n".join(
        f"  {name}: {json.dumps(value, sort_keys=True, default=str)}" for name, value in seen.items()
    )
    return first


def status(state: wf.WorkflowState | None) -> str | None:
    return None if state is None else state.runtime_status.name


def output(state: wf.WorkflowState | None) -> Any:
    return None if state is None or not state.serialized_output else json.loads(state.serialized_output)


def failure(state: wf.WorkflowState | None) -> dict[str, Any] | None:
    details = None if state is None else state.failure_details
    if details is None:
        return None
    return {"type": details.error_type, "message": details.message}


def rpc_error(call: Callable[[], Any]) -> dict[str, str] | None:
    """The gRPC code and message of a refused call (None when it was accepted)."""
    try:
        call()
    except grpc.RpcError as exc:
        return {"code": exc.code().name, "details": exc.details() or ""}
    return None


def finish(bed: Bed, iid: str, timeout: int = 30) -> wf.WorkflowState | None:
    return bed.client.wait_for_workflow_completion(iid, timeout_in_seconds=timeout)


def test_activity_failure_details(beds: list[Bed]) -> None:
    def scenario(bed: Bed) -> Observation:
        iid = bed.client.schedule_new_workflow("failing", input="boom", instance_id=bed.id("act-fail"))
        state = finish(bed, iid)
        return {"status": status(state), "failure": failure(state)}

    seen = run_everywhere(beds, scenario)
    assert seen["status"] == "FAILED"
    assert seen["failure"]["type"] == "TaskFailedError"
    assert "boom" in seen["failure"]["message"]


def test_workflow_code_failure_details(beds: list[Bed]) -> None:
    def scenario(bed: Bed) -> Observation:
        state = finish(bed, bed.client.schedule_new_workflow("raising", input="missing-key", instance_id=bed.id("r")))
        return {"status": status(state), "failure": failure(state)}

    seen = run_everywhere(beds, scenario)
    assert seen == {"status": "FAILED", "failure": {"type": "KeyError", "message": "'missing-key'"}}


def test_failures_as_workflow_code_sees_them(beds: list[Bed]) -> None:
    def scenario(bed: Bed) -> Observation:
        activity = finish(
            bed, bed.client.schedule_new_workflow("catching_activity", input="bad input", instance_id=bed.id("ca"))
        )
        child = finish(
            bed, bed.client.schedule_new_workflow("catching_parent", input="child broke", instance_id=bed.id("cp"))
        )
        return {"activity": output(activity), "child": output(child)}

    seen = run_everywhere(beds, scenario)
    assert seen["activity"]["type"] == "TaskFailedError" and "bad input" in seen["activity"]["message"]
    assert seen["child"]["type"] == "TaskFailedError" and "child broke" in seen["child"]["message"]


def test_child_failure_fails_the_parent_with_its_message(beds: list[Bed]) -> None:
    def scenario(bed: Bed) -> Observation:
        iid = bed.id("pfc")
        parent = finish(bed, bed.client.schedule_new_workflow("parent_failing_child", input="deep", instance_id=iid))
        child = bed.client.get_workflow_state(f"{iid}-child")
        return {
            "parent": status(parent),
            "parent_failure": failure(parent),
            "child": status(child),
            "child_failure": failure(child),
        }

    seen = run_everywhere(beds, scenario)
    assert seen["parent"] == seen["child"] == "FAILED"
    assert "deep" in seen["parent_failure"]["message"] and "deep" in seen["child_failure"]["message"]


@pytest.mark.parametrize("named", [True, False], ids=["named-child", "generated-child-id"])
def test_child_retry_policy_starts_a_failed_child_again(beds: list[Bed], named: bool) -> None:
    """A child started with a RetryPolicy whose first attempt failed runs again (daprd reuses the child's ID)."""

    def scenario(bed: Bed) -> Observation:
        iid = bed.id(f"retry-child-{named}")
        arg = {"attempts": 3, "fail": 1, "named": named, "key": iid, "marks": str(bed.marks)}
        state = finish(bed, bed.client.schedule_new_workflow("parent_retrying", input=arg, instance_id=iid))
        result = output(state) or {}
        return {
            "status": status(state),
            "failure": failure(state),
            "calls": result.get("calls"),
            "child_is_named": result.get("instance") == f"{iid}-child",
        }

    seen = run_everywhere(beds, scenario)
    assert seen == {"status": "COMPLETED", "failure": None, "calls": 2, "child_is_named": named}


def test_child_retries_exhausted_fail_the_parent(beds: list[Bed]) -> None:
    def scenario(bed: Bed) -> Observation:
        iid = bed.id("retry-out")
        arg = {"attempts": 2, "fail": 10, "named": True, "key": iid, "marks": str(bed.marks)}
        state = finish(bed, bed.client.schedule_new_workflow("parent_retrying", input=arg, instance_id=iid))
        return {
            "status": status(state),
            "calls": len(list((bed.marks / iid).iterdir())),
            "message": re.sub(r"flaky call \d+", "flaky call N", (failure(state) or {}).get("message", "")),
        }

    seen = run_everywhere(beds, scenario)
    assert seen["status"] == "FAILED" and seen["calls"] == 2
    assert "flaky call N" in seen["message"]


def test_activity_retry_policy(beds: list[Bed]) -> None:
    def scenario(bed: Bed) -> Observation:
        iid = bed.id("retry-act")
        arg = {"attempts": 3, "fail": 2, "key": iid, "marks": str(bed.marks)}
        state = finish(bed, bed.client.schedule_new_workflow("activity_retrying", input=arg, instance_id=iid))
        return {"status": status(state), "output": output(state)}

    assert run_everywhere(beds, scenario) == {"status": "COMPLETED", "output": 3}


def test_instance_ids_running_finished_and_purged(beds: list[Bed]) -> None:
    """A running ID is refused; a finished one can be used again (the SDK's contract since 1.18)."""

    def scenario(bed: Bed) -> Observation:
        iid = bed.id("reuse")
        bed.client.schedule_new_workflow("wait_event", input="go", instance_id=iid)
        bed.client.wait_for_workflow_start(iid, timeout_in_seconds=20)
        running_dup = rpc_error(lambda: bed.client.schedule_new_workflow("wait_event", input="go", instance_id=iid))
        purge_running = rpc_error(lambda: bed.client.purge_workflow(iid))
        bed.client.raise_workflow_event(iid, "go", data=1)
        first = finish(bed, iid)
        reused = rpc_error(lambda: bed.client.schedule_new_workflow("chain4", input=1, instance_id=iid))
        second = finish(bed, iid)
        purged = rpc_error(lambda: bed.client.purge_workflow(iid))
        after_purge = bed.client.get_workflow_state(iid)
        purge_missing = rpc_error(lambda: bed.client.purge_workflow(iid))
        return {
            "running_dup": running_dup,
            "purge_running_refused": purge_running is not None,
            "first": [status(first), output(first)],
            "reused": reused,
            "second": [status(second), output(second)],
            "purged": purged,
            "after_purge": status(after_purge),
            "purge_missing_refused": purge_missing is not None,
        }

    seen = run_everywhere(beds, scenario)
    assert seen["running_dup"]["code"] == "ALREADY_EXISTS" and "already exists" in seen["running_dup"]["details"]
    assert seen["purge_running_refused"]
    assert seen["first"] == ["COMPLETED", 1]
    assert seen["reused"] is None and seen["second"] == ["COMPLETED", 16]
    assert seen["purged"] is None and seen["after_purge"] is None


def test_recursive_terminate_and_purge(beds: list[Bed]) -> None:
    def scenario(bed: Bed) -> Observation:
        iid = bed.id("tree")
        children = [f"{iid}-c0", f"{iid}-c1"]
        bed.client.schedule_new_workflow("parent", input=2, instance_id=iid)
        started = [status(bed.client.wait_for_workflow_start(c, timeout_in_seconds=20)) for c in children]
        bed.client.terminate_workflow(iid, output="stop")
        ended = [status(finish(bed, each)) for each in (iid, *children)]
        parent_output = output(bed.client.get_workflow_state(iid))
        bed.client.purge_workflow(iid)
        gone = [status(bed.client.get_workflow_state(each)) for each in (iid, *children)]
        return {"started": started, "ended": ended, "output": parent_output, "gone": gone}

    assert run_everywhere(beds, scenario) == {
        "started": ["RUNNING"] * 2,
        "ended": ["TERMINATED"] * 3,
        "output": "stop",
        "gone": [None] * 3,
    }


def test_calls_on_unknown_or_finished_instances(beds: list[Bed]) -> None:
    def scenario(bed: Bed) -> Observation:
        done = finish(bed, bed.client.schedule_new_workflow("chain4", input=1, instance_id=bed.id("fin")))
        assert done is not None
        return {
            "terminate_missing": rpc_error(lambda: bed.client.terminate_workflow(bed.id("none"))),
            "terminate_finished": rpc_error(lambda: bed.client.terminate_workflow(done.instance_id)),
            "finished_after_terminate": status(bed.client.get_workflow_state(done.instance_id)),
            "raise_missing": rpc_error(lambda: bed.client.raise_workflow_event(bed.id("none"), "go", data=1)),
            "raise_finished": rpc_error(lambda: bed.client.raise_workflow_event(done.instance_id, "go", data=1)),
            "suspend_missing": rpc_error(lambda: bed.client.pause_workflow(bed.id("none"))),
            "purge_missing": rpc_error(lambda: bed.client.purge_workflow(bed.id("none"))),
            "resume_finished": rpc_error(lambda: bed.client.resume_workflow(done.instance_id)),
            "state_missing": status(bed.client.get_workflow_state(bed.id("none"))),
        }

    seen = run_everywhere(beds, scenario)
    assert seen["finished_after_terminate"] == "COMPLETED"
    assert seen["raise_missing"] == {"code": "UNKNOWN", "details": "no such instance exists"}
    assert seen["state_missing"] is None


def test_suspend_holds_events_until_resume(beds: list[Bed]) -> None:
    def scenario(bed: Bed) -> Observation:
        iid = bed.client.schedule_new_workflow("wait_event", input="go", instance_id=bed.id("susp"))
        bed.client.wait_for_workflow_start(iid, timeout_in_seconds=20)
        bed.client.pause_workflow(iid)
        suspended = status(bed.client.get_workflow_state(iid))
        bed.client.raise_workflow_event(iid, "go", data="held")
        time.sleep(1.0)
        held = status(bed.client.get_workflow_state(iid))
        bed.client.resume_workflow(iid)
        state = finish(bed, iid)
        return {"suspended": suspended, "held": held, "end": [status(state), output(state)]}

    assert run_everywhere(beds, scenario) == {
        "suspended": "SUSPENDED",
        "held": "SUSPENDED",
        "end": ["COMPLETED", "held"],
    }


def test_events_before_waiting_and_carried_over_continue_as_new(beds: list[Bed]) -> None:
    def scenario(bed: Bed) -> Observation:
        early = bed.client.schedule_new_workflow("two_events", instance_id=bed.id("early"))
        bed.client.raise_workflow_event(early, "b", data="second")
        bed.client.raise_workflow_event(early, "a", data="first")
        carried = bed.client.schedule_new_workflow("carry", input=0, instance_id=bed.id("carry"))
        bed.client.raise_workflow_event(carried, "kept", data="carried")
        return {"early": output(finish(bed, early)), "carried": output(finish(bed, carried))}

    assert run_everywhere(beds, scenario) == {"early": ["first", "second"], "carried": "carried"}


def test_continue_as_new_keeps_the_history_small(beds: list[Bed]) -> None:
    def scenario(bed: Bed) -> Observation:
        iid = bed.client.schedule_new_workflow("counter", input={"n": 0, "limit": 100}, instance_id=bed.id("can"))
        state = finish(bed, iid, timeout=120)
        with WorkflowAPI(bed.engine.address) as api:
            kinds = api.event_kinds(iid)
        return {
            "status": status(state),
            "output": output(state),
            "small": len(kinds) <= 6,
            "last": kinds[-1] if kinds else None,
        }

    assert run_everywhere(beds, scenario) == {
        "status": "COMPLETED",
        "output": 100,
        "small": True,
        "last": "executionCompleted",
    }


def test_timers(beds: list[Bed]) -> None:
    def scenario(bed: Bed) -> Observation:
        started = time.monotonic()
        sleeper = finish(bed, bed.client.schedule_new_workflow("sleeper", input=1.0, instance_id=bed.id("sleep")))
        waited = time.monotonic() - started
        timer_wins = finish(
            bed, bed.client.schedule_new_workflow("timer_or_event", input=0.5, instance_id=bed.id("t-wins"))
        )
        racing = bed.client.schedule_new_workflow("timer_or_event", input=60.0, instance_id=bed.id("e-wins"))
        bed.client.wait_for_workflow_start(racing, timeout_in_seconds=20)
        bed.client.raise_workflow_event(racing, "go", data=1)
        event_wins = finish(bed, racing)
        return {
            "slept_at_least": waited >= 1.0 and output(sleeper) >= 1.0,
            "timer_wins": output(timer_wins),
            "event_wins": output(event_wins),
        }

    assert run_everywhere(beds, scenario) == {"slept_at_least": True, "timer_wins": "timer", "event_wins": "event"}


def test_history_api(beds: list[Bed]) -> None:
    def scenario(bed: Bed) -> Observation:
        iid = finish(bed, bed.client.schedule_new_workflow("chain4", input=3, instance_id=bed.id("hist")))
        assert iid is not None
        with WorkflowAPI(bed.engine.address) as api:
            kinds = api.event_kinds(iid.instance_id)
            listed = iid.instance_id in api.instance_ids()
            missing = rpc_error(lambda: api.history(bed.id("none")))
        return {
            "output": output(iid),
            "scheduled": kinds.count("taskScheduled"),
            "completed": kinds.count("taskCompleted"),
            "last": kinds[-1],
            "listed": listed,
            "missing_refused": missing is not None,
        }

    assert run_everywhere(beds, scenario) == {
        "output": 48,
        "scheduled": 4,
        "completed": 4,
        "last": "executionCompleted",
        "listed": True,
        "missing_refused": True,
    }
