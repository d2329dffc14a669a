"""The keeper: one workflow instance per namespace and concurrency key, holding its slots (deterministic code).

The engine hands an instance its events one at a time, whichever replica raised them, so every operator
replica shares this one truth. Sagas raise `acquire` and `release` on it (KeeperMessage); it grants by raising
`slot` on a saga (NOTIFY). While it has holders or waiters it checks every `check_seconds` which of them still
run (CHECK): a saga terminated (onDelete: Abandon) or purged without a release frees its slot so. It never ends
by itself (an idle keeper waits for its next message), and continues as new after HISTORY_LIMIT messages and
checks, right after a message (no waiter open), with its state and the events not yet handled carried over, so
its history stays short.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import suppress
from datetime import timedelta
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, when_any
from dapr.ext.workflow._durabletask.task import TaskFailedError

from steadfast.concurrency.queue import Semaphore
from steadfast.concurrency.records import CHECK, KEEPER_EVENT, NOTIFY, KeeperMessage, Notice

HISTORY_LIMIT = 100


def apply(state: Semaphore, message: KeeperMessage) -> list[Notice]:
    """What one message changes (pure)."""
    if message.op == "acquire" and message.ticket is not None:
        return state.acquire(message.ticket)
    return state.release(message.instance)


def keeper_workflow(ctx: DaprWorkflowContext, inp: dict[str, Any]) -> Generator[Any, Any, None]:
    state = Semaphore.model_validate(inp)
    state.handled = 0
    # One waiter for messages and one check timer at a time: the SDK hands an event to the oldest waiter of its
    # name, and a timer made afresh for each message would never fire while messages keep coming.
    message: Any = None
    timer: Any = None
    while True:
        if message is None:
            # Continue as new only with no waiter open: the SDK carries over events nobody waited for, but an
            # event that completed a waiter the code has not read yet would be lost.
            if state.handled >= HISTORY_LIMIT:
                break
            message = ctx.wait_for_external_event(KEEPER_EVENT)
        if state.busy() and timer is None:
            timer = ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=state.check_seconds))
        winner = (yield when_any([message, timer])) if timer is not None else (yield message)
        state.handled += 1
        if timer is not None and winner is timer:
            timer = None
            try:
                gone = set((yield ctx.call_activity(CHECK, input={"instances": state.to_check()})) or [])
            except TaskFailedError:
                gone = set()  # nothing known: keep everyone until the next check
            notices = state.drop(gone)
        else:
            notices = apply(state, KeeperMessage.model_validate(message.get_result() or {}))
            message = None
        if notices:
            # A saga that missed its slot asks again (workflows.saga REACQUIRE_EVERY) and is granted again.
            with suppress(TaskFailedError):
                yield ctx.call_activity(NOTIFY, input={"notices": [n.wire() for n in notices]})
    ctx.continue_as_new(state.wire(), save_events=True)
