"""Workflows and activities shared by the engine tests, the worker subprocess and the engine fidelity tests."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import dapr.ext.workflow as wf
from dapr.ext.workflow._durabletask.task import Task


def register(rt: wf.WorkflowRuntime) -> None:
    """Register everything the tests use on one runtime."""

    @rt.activity(name="double")
    def double(ctx: Any, x: int) -> int:
        return x * 2

    @rt.activity(name="slow_double")
    def slow_double(ctx: Any, arg: dict[str, Any]) -> int:
        """Sleeps, and records each execution in a marker directory (to count re-runs)."""
        marks = Path(arg["marks"])
        marks.mkdir(parents=True, exist_ok=True)
        (marks / f"{ctx.workflow_id}-{ctx.task_id}-{os.getpid()}-{time.monotonic_ns()}").touch()
        time.sleep(arg.get("sleep", 0.0))
        return int(arg["x"]) * 2

    @rt.activity(name="fail")
    def fail(ctx: Any, msg: str) -> None:
        raise ValueError(msg)

    @rt.activity(name="flaky")
    def flaky(ctx: Any, arg: dict[str, Any]) -> int:
        """Fails the first `fail` calls for `arg["key"]` (counted in a marker directory), then returns the count."""
        marks = Path(arg["marks"]) / arg["key"]
        marks.mkdir(parents=True, exist_ok=True)
        (marks / f"{os.getpid()}-{time.monotonic_ns()}").touch()
        calls = len(list(marks.iterdir()))
        if calls <= arg["fail"]:
            raise RuntimeError(f"flaky call {calls} of {arg['key']}")
        return calls

    @rt.workflow(name="chain4")
    def chain4(ctx: wf.DaprWorkflowContext, x: int) -> Any:
        for _ in range(4):
            x = yield ctx.call_activity(double, input=x)
        return x

    @rt.workflow(name="slow_chain")
    def slow_chain(ctx: wf.DaprWorkflowContext, arg: dict[str, Any]) -> Any:
        x = arg["x"]
        for _ in range(arg.get("steps", 3)):
            x = yield ctx.call_activity(slow_double, input={**arg, "x": x})
        return x

    @rt.workflow(name="wait_event")
    def wait_event(ctx: wf.DaprWorkflowContext, name: str) -> Any:
        value = yield ctx.wait_for_external_event(name or "go")
        return value

    @rt.workflow(name="two_events")
    def two_events(ctx: wf.DaprWorkflowContext, _: Any) -> Any:
        a = yield ctx.wait_for_external_event("a")
        b = yield ctx.wait_for_external_event("b")
        return [a, b]

    @rt.workflow(name="sleeper")
    def sleeper(ctx: wf.DaprWorkflowContext, seconds: float) -> Any:
        start = ctx.current_utc_datetime
        yield ctx.create_timer(timedelta(seconds=seconds))
        return (ctx.current_utc_datetime - start).total_seconds()

    @rt.workflow(name="counter")
    def counter(ctx: wf.DaprWorkflowContext, state: dict[str, int]) -> Any:
        if state["n"] >= state["limit"]:
            return state["n"]
        ctx.continue_as_new({"n": state["n"] + 1, "limit": state["limit"]})
        return None

    @rt.workflow(name="carry")
    def carry(ctx: wf.DaprWorkflowContext, n: int) -> Any:
        if n == 0:
            ctx.continue_as_new(1, save_events=True)
            return None
        value = yield ctx.wait_for_external_event("kept")
        return value

    @rt.workflow(name="parent")
    def parent(ctx: wf.DaprWorkflowContext, n: int) -> Any:
        tasks: list[Task[Any]] = [
            ctx.call_child_workflow(wait_event, input="never", instance_id=f"{ctx.instance_id}-c{i}") for i in range(n)
        ]
        results = yield wf.when_all(tasks)
        return results

    @rt.workflow(name="parent_ok")
    def parent_ok(ctx: wf.DaprWorkflowContext, x: int) -> Any:
        r = yield ctx.call_child_workflow(chain4, input=x)
        return r + 1

    @rt.workflow(name="failing")
    def failing(ctx: wf.DaprWorkflowContext, msg: str) -> Any:
        yield ctx.call_activity(fail, input=msg)

    @rt.workflow(name="flaky_child")
    def flaky_child(ctx: wf.DaprWorkflowContext, arg: dict[str, Any]) -> Any:
        calls = yield ctx.call_activity(flaky, input=arg)
        return {"calls": calls, "instance": ctx.instance_id}

    @rt.workflow(name="parent_retrying")
    def parent_retrying(ctx: wf.DaprWorkflowContext, arg: dict[str, Any]) -> Any:
        """A child whose activity has no retry, started with a retry policy: the child is started again."""
        policy = None
        if arg.get("attempts"):
            policy = wf.RetryPolicy(
                first_retry_interval=timedelta(milliseconds=200), max_number_of_attempts=arg["attempts"]
            )
        child_id = f"{ctx.instance_id}-child" if arg.get("named") else None
        result = yield ctx.call_child_workflow(flaky_child, input=arg, instance_id=child_id, retry_policy=policy)
        return result

    @rt.workflow(name="activity_retrying")
    def activity_retrying(ctx: wf.DaprWorkflowContext, arg: dict[str, Any]) -> Any:
        policy = wf.RetryPolicy(
            first_retry_interval=timedelta(milliseconds=100), max_number_of_attempts=arg["attempts"]
        )
        calls = yield ctx.call_activity(flaky, input=arg, retry_policy=policy)
        return calls

    @rt.workflow(name="parent_failing_child")
    def parent_failing_child(ctx: wf.DaprWorkflowContext, msg: str) -> Any:
        yield ctx.call_child_workflow(failing, input=msg, instance_id=f"{ctx.instance_id}-child")

    @rt.workflow(name="catching_parent")
    def catching_parent(ctx: wf.DaprWorkflowContext, msg: str) -> Any:
        """Catches a child's failure: what the workflow code sees of it."""
        try:
            yield ctx.call_child_workflow(failing, input=msg, instance_id=f"{ctx.instance_id}-child")
        except Exception as exc:
            return {"type": type(exc).__name__, "message": str(exc)}
        return None

    @rt.workflow(name="catching_activity")
    def catching_activity(ctx: wf.DaprWorkflowContext, msg: str) -> Any:
        try:
            yield ctx.call_activity(fail, input=msg)
        except Exception as exc:
            return {"type": type(exc).__name__, "message": str(exc)}
        return None

    @rt.workflow(name="raising")
    def raising(ctx: wf.DaprWorkflowContext, msg: str) -> Any:
        """Fails in workflow code itself, not in an activity."""
        raise KeyError(msg)

    @rt.workflow(name="timer_or_event")
    def timer_or_event(ctx: wf.DaprWorkflowContext, seconds: float) -> Any:
        timer = ctx.create_timer(timedelta(seconds=seconds))
        event = ctx.wait_for_external_event("go")
        winner = yield wf.when_any([timer, event])
        return "event" if winner == event else "timer"

    register_echo(rt)

    @rt.workflow(name="bench4")
    def bench4(ctx: wf.DaprWorkflowContext, x: int) -> Any:
        for _ in range(2):
            x = yield ctx.call_activity(double, input=x)
        yield ctx.wait_for_external_event("go")
        for _ in range(2):
            x = yield ctx.call_activity(double, input=x)
        return x


def register_echo(rt: wf.WorkflowRuntime) -> None:
    """A workflow that returns its input as the worker decoded it (what other SDKs' inputs turn into)."""

    @rt.workflow(name="echo")
    def echo(ctx: wf.DaprWorkflowContext, value: Any) -> Any:
        return value
