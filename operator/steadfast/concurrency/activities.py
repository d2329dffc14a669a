"""The keeper's and the saga's side effects: create a keeper, raise events on it and on sagas, check instances.

Workflow code cannot raise events on other instances, nor ask the engine about them; these activities do, with
the operator's workflow client. Each is safe to run twice (the keeper's operations are idempotent).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from dapr.ext.workflow import DaprWorkflowClient, WorkflowStatus

from steadfast.concurrency.queue import Semaphore
from steadfast.concurrency.records import (
    ACQUIRE,
    CHECK,
    KEEPER,
    KEEPER_EVENT,
    NOTIFY,
    RELEASE,
    Notice,
    SlotRequest,
)
from steadfast.worker import registrable

log = logging.getLogger(__name__)

CHECK_SECONDS = 30.0
# Ended for good: its slot is free. Anything else (running, suspended, stalled until an upgrade) keeps it.
_ENDED = (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.TERMINATED)


class SlotActivities:
    def __init__(self, client: DaprWorkflowClient, check_seconds: float = CHECK_SECONDS) -> None:
        self.client = client
        self.check_seconds = check_seconds

    def acquire(self, _ctx: Any, inp: dict[str, Any]) -> None:
        """Make sure the key's keeper runs ("already exists" is the usual answer), then ask it for a slot."""
        request = SlotRequest.model_validate(inp)
        first = Semaphore(namespace=request.namespace, key=request.key, check_seconds=self.check_seconds)
        try:
            self.client.schedule_new_workflow(KEEPER, input=first.wire(), instance_id=request.keeper)
        except grpc.RpcError as exc:
            if "already exists" not in str(exc).lower():
                raise
        self.client.raise_workflow_event(request.keeper, KEEPER_EVENT, data=request.message.wire())

    def release(self, _ctx: Any, inp: dict[str, Any]) -> None:
        """Tell the keeper the saga leaves (holding or waiting); a keeper that is gone holds nothing."""
        request = SlotRequest.model_validate(inp)
        try:
            self.client.raise_workflow_event(request.keeper, KEEPER_EVENT, data=request.message.wire())
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND,) or "no such instance" in str(exc).lower():
                return
            raise

    def notify(self, _ctx: Any, inp: dict[str, Any]) -> None:
        """Raise the keeper's notices on sagas; a saga that ended meanwhile is skipped (it released, or will be
        found gone by the next check). A few tries each: a saga that misses its slot waits until it asks again."""
        for raw in inp.get("notices") or []:
            notice = Notice.model_validate(raw)
            for attempt in range(3):
                try:
                    self.client.raise_workflow_event(notice.instance, notice.event, data=notice.data)
                    break
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND or "no such instance" in str(exc).lower():
                        break
                    log.info("cannot raise %s on %s (try %d): %s", notice.event, notice.instance, attempt + 1, exc)
                    time.sleep(0.5 * (attempt + 1))

    def check(self, _ctx: Any, inp: dict[str, Any]) -> list[str]:
        """The instances among `instances` that no longer run (ended, terminated, purged); unknown ones stay."""
        gone: list[str] = []
        for instance in inp.get("instances") or []:
            try:
                state = self.client.get_workflow_state(instance, fetch_payloads=False)
            except grpc.RpcError as exc:
                log.info("cannot check workflow %s: %s", instance, exc)
                continue
            if state is None or state.runtime_status in _ENDED:
                gone.append(instance)
        return gone

    def register(self, runtime: Any) -> None:
        runtime.register_activity(registrable(self.acquire), name=ACQUIRE)
        runtime.register_activity(registrable(self.release), name=RELEASE)
        runtime.register_activity(registrable(self.notify), name=NOTIFY)
        runtime.register_activity(registrable(self.check), name=CHECK)
