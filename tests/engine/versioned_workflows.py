"""One workflow in two releases of its code, for the versioning tests: "old" and "new".

`patched` gained a step guarded by `ctx.is_patched("new-step")`; `named` gained a version `v2` (named versions).
Both wait for the event "go" after their first step, so a test can swap the worker's code mid-run.
"""

from __future__ import annotations

from typing import Any, Literal

import dapr.ext.workflow as wf

Code = Literal["old", "new"]


def register(rt: wf.WorkflowRuntime, code: Code) -> None:
    @rt.activity(name="v_echo")
    def v_echo(ctx: Any, x: str) -> str:
        return x

    if code == "old":

        @rt.workflow(name="patched")
        def patched_old(ctx: wf.DaprWorkflowContext, _: Any) -> Any:
            step = yield ctx.call_activity(v_echo, input="old step")
            data = yield ctx.wait_for_external_event("go")
            return [step, data]

    else:

        @rt.workflow(name="patched")
        def patched_new(ctx: wf.DaprWorkflowContext, _: Any) -> Any:
            if ctx.is_patched("new-step"):
                step = yield ctx.call_activity(v_echo, input="new step")
            else:
                step = yield ctx.call_activity(v_echo, input="old step")
            data = yield ctx.wait_for_external_event("go")
            return [step, data]

    def named_v1(ctx: wf.DaprWorkflowContext, _: Any) -> Any:
        data = yield ctx.wait_for_external_event("go")
        return ["v1", data]

    def named_v2(ctx: wf.DaprWorkflowContext, _: Any) -> Any:
        data = yield ctx.wait_for_external_event("go")
        return ["v2", data]

    rt.register_versioned_workflow(named_v1, name="named", version_name="v1", is_latest=code == "old")
    if code == "new":
        rt.register_versioned_workflow(named_v2, name="named", version_name="v2", is_latest=True)
