"""Concurrency limits on the local engine: the real saga and keeper workflows and the real concurrency
activities (which only talk to the engine), fake actions held open so a test decides when a saga's step ends."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import dapr.ext.workflow as wf
import pytest
from workflow_fakes import SERVICE, Harness, Subject

from steadfast.api.kinds import TASK_SAGA
from steadfast.api.saga import TaskSagaSpec
from steadfast.binding import instance_id
from steadfast.concurrency import keeper
from steadfast.concurrency.records import SagaConcurrency
from steadfast.concurrency.rules import keeper_id
from steadfast.workflows import saga


def wait_until(test: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.02)


class Line:
    """Sagas of one test on one fresh key, each with one step POSTing to /<its name>."""

    def __init__(self, harness: Harness, client: wf.DaprWorkflowClient, limit: int) -> None:
        self.harness = harness
        self.client = client
        self.limit = limit
        self.key = f"k-{uuid.uuid4().hex[:8]}"
        self.subjects: dict[str, Subject] = {}
        self.iids: dict[str, str] = {}

    def start(self, name: str, created: str) -> Subject:
        subject = self.harness.subject(TASK_SAGA)
        subject.ref = subject.ref.__class__(**{**subject.ref.__dict__, "name": name})
        self.harness.world.add(subject)
        spec = TaskSagaSpec.model_validate(
            {
                "task": {"id": name},
                "steps": [{"name": "work", "action": {"http": {"method": "POST", "url": f"{SERVICE}/{name}"}}}],
                "concurrency": {"key": self.key, "limit": self.limit},
            }
        )
        subject.service.hold(f"/{name}")
        concurrency = SagaConcurrency(
            key=self.key, limit=self.limit, keeper=keeper_id("default", self.key), created=created
        )
        given = saga.SagaInput(ref=subject.ref, generation=1, spec=spec, gate_resolved=True, concurrency=concurrency)
        iid = instance_id(TASK_SAGA, "default", name, subject.ref.uid)
        self.client.schedule_new_workflow(saga.NAME, input=given.wire(), instance_id=iid)
        self.harness.started.append(iid)
        self.subjects[name], self.iids[name] = subject, iid
        return subject

    def entered(self, name: str) -> bool:
        return bool(self.subjects[name].service.calls_to(f"/{name}"))

    def let_go(self, name: str) -> None:
        self.subjects[name].service.release_all()

    def running(self) -> list[str]:
        return sorted(n for n in self.subjects if self.entered(n) and not self.done(n))

    def done(self, name: str) -> bool:
        state = self.client.get_workflow_state(self.iids[name], fetch_payloads=False)
        return state is not None and state.runtime_status != wf.WorkflowStatus.RUNNING

    def queued_at(self, name: str, position: int) -> dict[str, Any]:
        return self.subjects[name].log.wait_for(
            lambda s: s.get("phase") == "Queued" and (s.get("queue") or {}).get("position") == position,
            f"{name} Queued at position {position}",
        )


def test_limit_holds_line_keeps_creation_order_and_a_withdrawn_waiter_frees_nothing(
    harness: Harness, client: wf.DaprWorkflowClient
) -> None:
    line = Line(harness, client, limit=1)
    line.start("a", "2026-01-01T00:00:00Z")
    wait_until(lambda: line.entered("a"), "a holds the slot")
    line.start("d", "2026-01-01T00:00:03Z")
    line.start("c", "2026-01-01T00:00:02Z")
    line.start("b", "2026-01-01T00:00:01Z")
    queued = line.queued_at("d", 1)  # alone in line when it queued
    assert queued["queue"]["key"] == line.key and queued["queue"]["limit"] == 1
    line.queued_at("b", 1)
    wait_until(
        lambda: [s.get("queue", {}).get("position") for s in line.subjects["d"].log.snapshots()][-1] == 3,
        "d told it moved back",
    )
    assert line.running() == ["a"]

    client.raise_workflow_event(line.iids["c"], saga.CANCEL_EVENT, data={"reason": "deleted"})
    harness.finish(line.iids["c"])
    assert "deleted while queued" in line.subjects["c"].log.latest()["result"]["error"]
    time.sleep(0.5)
    assert line.running() == ["a"], "a withdrawn waiter freed a slot it never held"

    line.let_go("a")
    wait_until(lambda: line.entered("b"), "b goes next")
    assert not line.entered("d"), "d took a slot while b held the only one"
    line.let_go("b")
    wait_until(lambda: line.entered("d"), "d goes last")
    line.let_go("d")
    for name in "abd":
        harness.finish(line.iids[name])
        assert line.subjects[name].log.latest()["phase"] == "Succeeded"
    assert not line.entered("c")


def test_a_terminated_holder_is_found_ended_and_its_slot_freed(harness: Harness, client: wf.DaprWorkflowClient) -> None:
    """onDelete: Abandon terminates the saga: no release is sent, the keeper's check frees the slot."""
    line = Line(harness, client, limit=1)
    line.start("a", "2026-01-01T00:00:00Z")
    wait_until(lambda: line.entered("a"), "a holds the slot")
    line.start("b", "2026-01-01T00:00:01Z")
    line.queued_at("b", 1)
    client.terminate_workflow(line.iids["a"])
    wait_until(lambda: line.entered("b"), "b gets the terminated saga's slot", timeout=20)
    line.let_go("b")
    line.let_go("a")
    harness.finish(line.iids["b"])


def test_the_keeper_continues_as_new_without_losing_a_message(
    harness: Harness, client: wf.DaprWorkflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keeper that continues as new every 2 messages, with sagas queueing and leaving meanwhile."""
    monkeypatch.setattr(keeper, "HISTORY_LIMIT", 2)
    line = Line(harness, client, limit=2)
    names = [f"s{n}" for n in range(6)]
    for n, name in enumerate(names):
        line.start(name, f"2026-01-01T00:00:0{n}Z")
    wait_until(lambda: len(line.running()) == 2, "two hold slots")
    for _ in names:
        wait_until(lambda: bool(line.running()), "a saga holds a slot")
        running = line.running()
        assert len(running) <= 2, f"{running} at once"
        line.let_go(running[0])
        wait_until(lambda first=running[0]: line.done(first), f"{running[0]} done")  # type: ignore[misc]
    for name in names:
        harness.finish(line.iids[name])
        assert line.subjects[name].log.latest()["phase"] == "Succeeded"
