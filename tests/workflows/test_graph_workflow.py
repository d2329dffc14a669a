"""A saga whose steps declare dependsOn: the real workflow on the local engine with fake activities.

Holding calls at the fake service shows which steps are in flight together; the order of the calls shows
joins and the order of compensations.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_object_waits import calls_to, configmap, pending
from test_repair_workflow import paused, start_pausing
from test_saga_workflow import FAST_RETRY, finish, phases, repair, spec, step, wait_until
from workflow_fakes import Harness

from steadfast.api.kinds import TASK_SAGA
from steadfast.workflows import saga
from steadfast.workflows.common import REARM_EVENT

pytestmark = pytest.mark.engine


def after(name: str, *deps: str, undo: bool = True, **extra: Any) -> dict[str, Any]:
    return {**step(name, undo=undo, **extra), "dependsOn": list(deps)}


def position(order: list[str], what: str) -> int:
    return order.index(what)


def test_independent_steps_run_together_and_a_join_waits_for_all(harness: Harness) -> None:
    plan = spec(after("db"), after("queue"), after("bucket"), after("deploy", "db", "queue", "bucket"))
    subject = harness.subject(TASK_SAGA)
    held = {name: subject.service.hold(f"/{name}") for name in ("db", "queue", "bucket")}
    iid = harness.start_saga(subject, plan)
    for name, (entered, _) in held.items():
        assert entered.wait(10), f"{name} did not start while the others were in flight"
    during = subject.log.wait_for(lambda s: s["currentStep"] == "db, queue, bucket", "three steps in flight")
    assert phases(during) == ["Running", "Running", "Running", "Pending"]
    assert during["progress"] == "0/4"
    held["db"][1].set()
    held["queue"][1].set()
    subject.log.wait_for(lambda s: s["currentStep"] == "bucket", "db and queue done, bucket in flight")
    assert "deploy/action" not in subject.service.order(), "the join started before all it depends on"
    held["bucket"][1].set()
    result, status = finish(harness, subject, iid)

    assert result["status"] == "Succeeded"
    assert subject.service.order()[-1] == "deploy/action"
    assert status["progress"] == "4/4"
    assert status["steps"][3]["dependsOn"] == ["db", "queue", "bucket"]
    assert status["currentStep"] is None


def test_parallelism_limits_steps_in_flight(harness: Harness) -> None:
    plan = spec(after("a"), after("b"), after("c"), parallelism=1)
    subject = harness.subject(TASK_SAGA)
    entered, release = subject.service.hold("/a")
    iid = harness.start_saga(subject, plan)
    assert entered.wait(10)
    assert subject.service.order() == ["a/action"], "a second step started beyond parallelism 1"
    release.set()
    result, _ = finish(harness, subject, iid)
    assert result["status"] == "Succeeded"
    assert subject.service.order() == ["a/action", "b/action", "c/action"]


def test_diamond_compensates_in_reverse_dependency_order(harness: Harness) -> None:
    """base <- left, right <- top; top fails: left and right are undone (at once) before base."""
    plan = spec(after("base"), after("left", "base"), after("right", "base"), after("top", "left", "right"))
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/top")
    result, status = finish(harness, subject, harness.start_saga(subject, plan))

    order = subject.service.order()
    assert result["status"] == "Compensated"
    assert sorted(order[-3:-1]) == ["left/compensation", "right/compensation"]
    assert order[-1] == "base/compensation"
    assert phases(status) == ["Succeeded", "Succeeded", "Succeeded", "Failed"]
    assert {c["step"]: c["phase"] for c in status["compensations"]} == {
        "left": "Succeeded",
        "right": "Succeeded",
        "base": "Succeeded",
    }
    assert status["progress"] == "3/4", "progress stays as the steps left it"


def test_failure_lets_siblings_in_flight_finish_and_undoes_their_success(harness: Harness) -> None:
    plan = spec(after("slow"), after("bad"), after("later", "bad"), after("also", "slow"))
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/bad")
    entered, release = subject.service.hold("/slow")
    iid = harness.start_saga(subject, plan)
    assert entered.wait(10)
    subject.log.wait_for(lambda s: s["steps"][1]["phase"] == "Failed", "bad failed while slow is in flight")
    release.set()
    result, status = finish(harness, subject, iid)

    order = subject.service.order()
    assert result["status"] == "Compensated"
    assert "later/action" not in order and "also/action" not in order, "a step started after a failure"
    assert order[-1] == "slow/compensation"
    assert phases(status) == ["Succeeded", "Failed", "Skipped", "Skipped"]
    assert "step bad failed" in (result["error"] or "")


def test_wide_fan_out_undoes_every_leaf_before_the_root(harness: Harness) -> None:
    leaves = [f"leaf{n}" for n in range(6)]
    plan = spec(after("root"), *(after(n, "root") for n in leaves), after("fail", *leaves))
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/fail")
    result, _ = finish(harness, subject, harness.start_saga(subject, plan))

    order = subject.service.order()
    undone = [w for w in order if w.endswith("/compensation")]
    assert result["status"] == "Compensated"
    assert undone[-1] == "root/compensation"
    assert sorted(undone[:-1]) == sorted(f"{n}/compensation" for n in leaves)
    assert all(position(order, f"{n}/action") < position(order, "fail/action") for n in leaves)


def test_deleting_a_running_graph_saga_finishes_in_flight_and_compensates(harness: Harness) -> None:
    plan = spec(after("a"), after("b", retry={"maxAttempts": 50, **FAST_RETRY}), after("c", "a", "b"))
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/b")
    entered, release = subject.service.hold("/a")
    iid = harness.start_saga(subject, plan)
    assert entered.wait(10)
    wait_until(lambda: len(subject.service.calls_to("/b")) >= 2, "b retried")
    harness.client.raise_workflow_event(iid, saga.CANCEL_EVENT)
    release.set()
    result, status = finish(harness, subject, iid)

    order = subject.service.order()
    assert result["status"] == "Compensated"
    assert "c/action" not in order
    assert order[-1] == "a/compensation"
    assert status["steps"][1]["phase"] == "Failed"
    assert len(subject.service.calls_to("/b")) < 50, "retries went on after the deletion"


def test_two_kubernetes_waits_in_flight_both_hear_their_events_and_the_re_arm(harness: Harness) -> None:
    waiting = {"successWhen": 'object.data.open == "yes"', "timeout": "5m"}
    plan = spec(
        *(
            {"name": n, "action": {"kubernetes": {"object": configmap(n), **waiting}}, "dependsOn": []}
            for n in ("one", "two")
        ),
        {**step("after", undo=False), "dependsOn": ["one", "two"]},
    )
    subject = harness.subject(TASK_SAGA)
    for name in ("one", "two"):
        subject.service.object_answers(name, pending())
    iid = harness.start_saga(subject, plan)
    first = {name: calls_to(subject, name, 1)[0] for name in ("one", "two")}
    harness.client.raise_workflow_event(iid, REARM_EVENT, data={"reason": "operator resumed"})
    again = {name: calls_to(subject, name, 2)[1] for name in ("one", "two")}  # the fake now answers ok
    assert all(call.rearm and call.key == first[name].key for name, call in again.items())
    result = harness.finish(iid)
    assert result["status"] == "Succeeded"
    assert subject.service.order()[-1] == "after/action"


def test_a_paused_graph_waits_for_siblings_then_retry_and_skip_work(harness: Harness) -> None:
    plan = spec(after("a"), after("b"), after("c", "a"), after("d", "b"))
    subject = harness.subject(TASK_SAGA)
    entered, release = subject.service.hold("/b")  # b is still in flight when a fails
    subject, iid = start_pausing(harness, plan, failing="/a", subject=subject)
    assert entered.wait(10)
    subject.log.wait_for(lambda s: s["steps"][0]["phase"] == "Failed" or s["phase"] == "Paused", "a failed")
    release.set()
    status = paused(subject)
    assert status["pause"]["step"] == "a" and status["currentStep"] == "a"
    assert status["steps"][1]["phase"] == "Succeeded", "the sibling in flight finished before the pause"
    assert "d/action" not in subject.service.order(), "a step started after the failure"
    repair(harness, iid, "Skip", generation=2, step="a", reason="done by hand")
    result, status = finish(harness, subject, iid)
    assert result["status"] == "Succeeded"
    assert phases(status) == ["Skipped", "Succeeded", "Succeeded", "Succeeded"]
    assert status["progress"] == "4/4"


def test_a_paused_graph_step_retried_runs_again(harness: Harness) -> None:
    subject, iid = start_pausing(harness, spec(after("a"), after("b", "a")), failing="/a", times=1)
    paused(subject)
    repair(harness, iid, "Retry", generation=2)
    result, status = finish(harness, subject, iid)
    assert result["status"] == "Succeeded"
    assert subject.service.order() == ["a/action", "a/action", "b/action"]
    assert status["steps"][0]["attempts"] == 2


def test_a_step_timeout_in_a_graph_fails_it_and_compensates_the_rest(harness: Harness) -> None:
    slow = after("slow", retry={"maxAttempts": 100, **FAST_RETRY}, timeout="1s")
    subject = harness.subject(TASK_SAGA)
    subject.service.fail("/slow")
    result, status = finish(harness, subject, harness.start_saga(subject, spec(after("fine"), slow)))
    assert result["status"] == "Compensated"
    assert "time limit 1s reached" in status["steps"][1]["message"]
    assert subject.service.order()[-1] == "fine/compensation"
