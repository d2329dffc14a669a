"""The binding of a resource to its workflow instance: the instance ID, the delete handler's retries."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from dapr.ext.workflow import WorkflowStatus

from steadfast.api.errors import Unstartable
from steadfast.api.kinds import TASK_SAGA
from steadfast.binding import Binding, Bindings, instance_id


def test_instance_id_is_deterministic_and_safe() -> None:
    one = instance_id(TASK_SAGA, "team-a", "onboard.42", "0f6a-uid")
    assert one == instance_id(TASK_SAGA, "team-a", "onboard.42", "0f6a-uid")
    assert one != instance_id(TASK_SAGA, "team-a", "onboard.42", "other-uid")
    assert all(c.isalnum() or c in "-_" for c in one)


class _Winding:
    """A workflow client whose instance is still winding down: its waits time out as the SDK's do."""

    def __init__(self) -> None:
        self.raised: list[str] = []

    def get_workflow_state(self, iid: str, fetch_payloads: bool = True) -> Any:
        return SimpleNamespace(runtime_status=WorkflowStatus.RUNNING)

    def raise_workflow_event(self, iid: str, event: str, data: Any = None) -> None:
        self.raised.append(event)

    def wait_for_workflow_completion(self, iid: str, fetch_payloads: bool = True, timeout_in_seconds: int = 0) -> Any:
        raise TimeoutError("Timed-out waiting for the orchestration to complete")  # dapr-ext-workflow 1.18.3


def test_a_delete_waiting_for_a_long_wind_down_comes_back_in_a_second() -> None:
    """kopf retries an unexpected exception after 60 s: a wind-down longer than the wait must not cost that."""
    client = _Winding()
    bindings = Bindings(client, writer=None)  # type: ignore[arg-type]
    binding = Binding(TASK_SAGA, "saga", lambda *_: None, stop_event=lambda spec: "cancel")
    body = {"metadata": {"namespace": "team-a", "name": "s", "uid": "u-1"}, "spec": {}}
    with pytest.raises(kopf.TemporaryError) as caught:
        asyncio.run(bindings.stop(binding, body, logging.getLogger("test")))  # type: ignore[arg-type]
    assert caught.value.delay == 1
    assert client.raised == ["cancel"]


class _Absent:
    """A workflow client with no instance yet; records schedules."""

    def __init__(self) -> None:
        self.scheduled: list[str] = []

    def get_workflow_state(self, iid: str, fetch_payloads: bool = True) -> Any:
        return None

    def schedule_new_workflow(self, workflow: str, input: Any = None, instance_id: str = "") -> None:
        self.scheduled.append(instance_id)


class _Writer:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def submit(self, ref: Any, patch: dict[str, Any], seq: int = 0, urgent: bool = False) -> Any:
        self.patches.append(patch)
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.set_result(None)
        return future


def test_a_saga_whose_template_is_gone_at_start_is_stalled_and_runs_nothing() -> None:
    client, writer = _Absent(), _Writer()
    bindings = Bindings(client, writer)  # type: ignore[arg-type]

    def gone(*_: Any) -> Any:
        raise Unstartable("TemplateNotFound", "ClusterSagaTemplate onboard not found")

    binding = Binding(TASK_SAGA, "saga", lambda *_: None, workflow_input=gone)
    spec = {"task": {"id": "1"}, "template": {"kind": "ClusterSagaTemplate", "name": "onboard"}}
    body = {"metadata": {"namespace": "team-a", "name": "s", "uid": "u-1", "generation": 1}, "spec": spec}
    with pytest.raises(kopf.PermanentError):
        asyncio.run(bindings.start(binding, body, logging.getLogger("test")))  # type: ignore[arg-type]
    assert client.scheduled == []
    stalled = next(c for c in writer.patches[-1]["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "TemplateNotFound"
    assert stalled["message"] == "ClusterSagaTemplate onboard not found"
