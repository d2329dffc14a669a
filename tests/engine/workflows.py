"""Workflows and activities shared by the engine tests, the worker subprocess and the benchmark."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import dapr.ext.workflow as wf


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
        tasks = [
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

    @rt.workflow(name="bench4")
    def bench4(ctx: wf.DaprWorkflowContext, x: int) -> Any:
        for _ in range(2):
            x = yield ctx.call_activity(double, input=x)
        yield ctx.wait_for_external_event("go")
        for _ in range(2):
            x = yield ctx.call_activity(double, input=x)
        return x
