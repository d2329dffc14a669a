"""The engine facade: client operations, recovery and the timer thread, over dispatch and history.

Semantics follow durabletask-go (the engine inside daprd): an orchestration work item carries the
instance's past events plus its new ones (a ``workflowStarted`` marker followed by the inbox); the
worker answers with actions that the engine turns into history events, activity work, timers and
messages to other instances. The parts are layered on one state machine: :mod:`.state` (the records
and the one lock), :mod:`.dispatch` (worker streams, ready queue, leases), :mod:`.history` (applying
workers' results) and this module (what clients call). All state lives in memory under that lock and
every change is written to SQLite through :class:`~.store.Store` in the same critical section, so
memory and disk change in the same order. Nothing polls: worker streams, waiting clients and the
timer thread sleep on conditions that state changes notify.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from . import store as st
from .defaults import DEFAULT_APP_ID, DEFAULT_WORKER_WAIT
from .history import HistoryApplication
from .protos import STALLED, pb, status_name, timestamp, to_epoch
from .state import Activity, EngineError, Instance, Lease, Stream, event, sv

__all__ = [
    "DEFAULT_APP_ID",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_WORKER_WAIT",
    "Activity",
    "Engine",
    "EngineError",
    "Instance",
    "Lease",
    "Stream",
]

log = logging.getLogger("steadfast.engine")

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_MAX_SLEEP = 3600.0

# daprd's wording of "no such instance" differs per call; clients may match on it, so ours is the same.
_NOT_FOUND_PREFIX = {
    "terminate": "failed to submit termination request: ",
    "purge": "failed to purge workflow state: failed to fetch workflow state: ",
}


def _not_found(call: str = "") -> EngineError:
    return EngineError(grpc.StatusCode.UNKNOWN, f"{_NOT_FOUND_PREFIX.get(call, '')}no such instance exists")


def _stalled(iid: str, call: str = "") -> EngineError:
    """daprd's answer to a call on a stalled workflow: its actor holds the stall and takes no call."""
    return EngineError(
        grpc.StatusCode.UNKNOWN,
        f"{_NOT_FOUND_PREFIX.get(call, '')}failed to invoke method for workflow '{iid}': actor is stalled",
    )


def _text(value: Any | None) -> str | None:
    """The payload of an optional StringValue, passed through as daprd does (the worker decodes it)."""
    return None if value is None else str(value.value)


class Engine(HistoryApplication):
    """Thread-safe engine state machine; the gRPC service is a thin layer over it.

    Dispatch (:meth:`open_stream`, :meth:`next_work_item`, ...) and completions
    (:meth:`complete_orchestration`, :meth:`complete_activity`) are inherited from the layers below.
    """

    def __init__(
        self,
        store: st.Store,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        app_id: str = DEFAULT_APP_ID,
        worker_wait: float | None = DEFAULT_WORKER_WAIT,
    ) -> None:
        super().__init__(store, max_message_bytes)
        self.app_id = app_id
        self.worker_wait = worker_wait
        with self._lock:
            self._recover()
        self._timer_thread = threading.Thread(target=self._timer_loop, name="engine-timers", daemon=True)
        self._timer_thread.start()

    # == recovery ==================================================================================

    def _recover(self) -> None:
        state = self.store.load()
        self._inbox_seq = itertools.count(state.max_inbox_seq + 1)
        for row in state.instances:
            inst = Instance(**row)
            if inst.terminal:
                inst.history = None
            else:
                inst.history = [pb.HistoryEvent.FromString(b) for b in state.history.get(inst.instance_id, [])]
            self._instances[inst.instance_id] = inst
            if inst.parent_id:
                self._children.setdefault(inst.parent_id, set()).add(inst.instance_id)
        for iid, entries in state.inbox.items():
            inst_or_none = self._instances.get(iid)
            if inst_or_none is not None:
                inst_or_none.inbox = [(seq, pb.HistoryEvent.FromString(b)) for seq, b in entries]
        for iid, task_id, execution_id, blob in state.activities:
            owner = self._instances.get(iid)
            if owner is not None and not owner.terminal:
                owner.activities[task_id] = Activity(iid, task_id, execution_id, pb.HistoryEvent.FromString(blob))
        for iid, timer_id, execution_id, fire_at, _blob in state.timers:
            owner = self._instances.get(iid)
            if owner is not None and not owner.terminal and owner.execution_id == execution_id:
                owner.timers[timer_id] = fire_at
                self._push_heap(fire_at, "timer", iid, timer_id, execution_id)
        for inst in self._instances.values():
            if inst.terminal:
                continue
            if inst.not_before is not None and inst.not_before > time.time():
                self._push_heap(inst.not_before, "start", inst.instance_id, 0, inst.execution_id)
            self._maybe_enqueue(inst)
            for act in inst.activities.values():
                self._enqueue_activity(act)
        running = sum(1 for i in self._instances.values() if not i.terminal)
        log.info(
            "recovered %d instances (%d not finished, %d activities, %d timers pending)",
            len(self._instances),
            running,
            len(state.activities),
            len(state.timers),
        )

    def close(self) -> None:
        """Stop the timer thread and wake every waiter; the store is closed by the caller."""
        with self._lock:
            self._closed = True
            self._sched.notify_all()
            self._work.notify_all()
            for cond, _ in self._watchers.values():
                cond.notify_all()
        self._timer_thread.join(timeout=5)

    # == client operations =========================================================================

    def start_instance(self, req: Any) -> tuple[str, st.Ticket]:
        """Create an instance; an ID is free again once its instance and every descendant have finished.

        As daprd does, the ID, the name and the input are taken as they come (an empty ID is an ID, an input that
        is not JSON reaches the worker, which fails the workflow or not: its SDK decides).
        """
        iid: str = req.instanceId
        name: str = req.name
        input_text = _text(req.input if req.HasField("input") else None)
        not_before = None
        if req.HasField("scheduledStartTimestamp"):
            not_before = to_epoch(req.scheduledStartTimestamp)
        with self._lock:
            self._check_open()
            taken = self._id_taken(iid)
            if taken:
                raise EngineError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"failed to create workflow instance: rpc error: code = AlreadyExists desc = {taken}",
                )
            ops: list[st.Op] = []
            self._forget_finished(ops, iid)
            started = pb.ExecutionStartedEvent(
                name=name,
                input=sv(input_text),
                workflowInstance=pb.WorkflowInstance(instanceId=iid, executionId=sv(uuid.uuid4().hex)),
                scheduledStartTimestamp=req.scheduledStartTimestamp if not_before is not None else None,
                parentTraceContext=req.parentTraceContext if req.HasField("parentTraceContext") else None,
            )
            # daprd 1.18.3 takes neither the request's version, tags nor execution ID into the history
            self._create_instance(ops, started, None, not_before)
            return iid, self.store.submit(ops)

    def wait_for_worker(self, timeout: float | None, register_cancel: Callable[[Callable[[], None]], object]) -> bool:
        """Block until a worker is connected (True) or ``timeout`` passes or the call is cancelled (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cancelled = threading.Event()
        register_cancel(lambda: self._notify_cancel(self._joined, cancelled))
        with self._lock:
            while not self._streams:
                remaining = None if deadline is None else deadline - time.monotonic()
                if cancelled.is_set() or self._closed or (remaining is not None and remaining <= 0):
                    return False
                self._joined.wait(remaining)
            return True

    def unreachable(self, iid: str, prefix: str = "") -> EngineError:
        """daprd's answer to a call on an instance while no worker (so no workflow actor) is there."""
        return EngineError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{prefix}failed to lookup actor: api error: code = FailedPrecondition desc = did not find address "
            f"for actor 'dapr.internal.default.{self.app_id}.workflow/{iid}'",
        )

    def get_state(self, iid: str, with_payloads: bool) -> Any | None:
        """The instance's WorkflowState message, or None when it does not exist."""
        with self._lock:
            inst = self._instances.get(iid)
            state = None if inst is None else self._state_message(inst, with_payloads)
            barrier = self.store.barrier()
        barrier.wait()  # only report what is durable
        return state

    def wait_for(
        self,
        iid: str,
        predicate: Callable[[Instance], bool],
        with_payloads: bool,
        timeout: float | None,
        register_cancel: Callable[[Callable[[], None]], object],
        *,
        only_while_workers: bool = False,
    ) -> Any | None:
        """Block until ``predicate`` holds for the instance (woken by changes, not by polling).

        Returns the state message, or None when the instance does not exist. With
        ``only_while_workers`` the wait also ends when no worker is connected, because nothing could
        make progress then (used by terminate/suspend/resume, which durabletask-go makes wait).
        """
        state = self._wait_for(iid, predicate, with_payloads, timeout, register_cancel, only_while_workers)
        self.store.barrier().wait()  # only report what is durable
        return state

    def _wait_for(
        self,
        iid: str,
        predicate: Callable[[Instance], bool],
        with_payloads: bool,
        timeout: float | None,
        register_cancel: Callable[[Callable[[], None]], object],
        only_while_workers: bool,
    ) -> Any | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        cancelled = threading.Event()
        with self._lock:
            cond = self._watch(iid)
            register_cancel(lambda: self._notify_cancel(cond, cancelled))
            try:
                while True:
                    inst = self._instances.get(iid)
                    if inst is None:
                        return None
                    if predicate(inst) or cancelled.is_set() or self._closed:
                        return self._state_message(inst, with_payloads)
                    if only_while_workers and not self._streams:
                        return self._state_message(inst, with_payloads)
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise EngineError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded while waiting")
                    cond.wait(remaining)
            finally:
                self._unwatch(iid)

    def _notify_cancel(self, cond: threading.Condition, flag: threading.Event) -> None:
        with self._lock:
            flag.set()
            cond.notify_all()

    def raise_event(self, iid: str, name: str, input_value: Any | None) -> st.Ticket:
        """Append an external event: refused by an unknown or stalled instance, dropped by a finished one (daprd)."""
        text = _text(input_value)
        with self._lock:
            self._check_open()
            inst = self._instances.get(iid)
            if inst is None:
                raise EngineError(grpc.StatusCode.UNKNOWN, "no such instance exists")
            if inst.status == STALLED:
                raise _stalled(iid)
            ops: list[st.Op] = []
            ev = event(time.time(), eventRaised=pb.EventRaisedEvent(name=name, input=sv(text)))
            self._deliver(ops, iid, ev)
            return self.store.submit(ops)

    def control(self, iid: str, kind: str, payload: Any | None, recursive: bool = False) -> st.Ticket:
        """Send terminate / suspend / resume to an instance (no-op once it has finished)."""
        text = _text(payload) if kind == "terminate" else None
        with self._lock:
            self._check_open()
            inst = self._instances.get(iid)
            if inst is None:
                raise _not_found(kind)
            if inst.status == STALLED:
                raise _stalled(iid, kind)
            if inst.terminal:
                return st.DONE
            now = time.time()
            if kind == "terminate":
                ev = event(now, executionTerminated=pb.ExecutionTerminatedEvent(input=sv(text), recurse=recursive))
            elif kind == "suspend":
                reason = payload.value if payload is not None and payload.value else None
                ev = event(now, executionSuspended=pb.ExecutionSuspendedEvent(input=sv(reason)))
            else:
                reason = payload.value if payload is not None and payload.value else None
                ev = event(now, executionResumed=pb.ExecutionResumedEvent(input=sv(reason)))
            ops: list[st.Op] = []
            self._deliver(ops, iid, ev)
            return self.store.submit(ops)

    def purge(self, iid: str, recursive: bool) -> tuple[int, st.Ticket]:
        """Delete a finished instance (and its finished children when recursive)."""
        with self._lock:
            self._check_open()
            inst = self._instances.get(iid)
            if inst is None:
                raise _not_found("purge")
            if inst.status == STALLED:
                raise _stalled(iid, "purge")
            victims = [iid, *(self._descendants(iid) if recursive else ())]
            for vid in victims:
                victim = self._instances[vid]
                if not victim.terminal:
                    raise EngineError(
                        grpc.StatusCode.UNKNOWN,
                        f"cannot purge instance '{vid}': orchestration is not completed "
                        f"(status {status_name(victim.status)}); terminate it first",
                    )
            ops: list[st.Op] = []
            for vid in victims:
                victim = self._instances.pop(vid)
                ops.extend(st.op_delete_instance(vid))
                if victim.parent_id and victim.parent_id in self._children:
                    self._children[victim.parent_id].discard(vid)
                self._children.pop(vid, None)
                self._notify_watchers(vid)
            return len(victims), self.store.submit(ops)

    def list_instance_ids(self, start_after: str | None, page_size: int) -> tuple[list[str], str | None]:
        with self._lock:
            ids = sorted(i for i in self._instances if start_after is None or i > start_after)
        if page_size and len(ids) > page_size:
            return ids[:page_size], ids[page_size - 1]
        return ids, None

    def history(self, iid: str) -> list[Any]:
        """Stored history of an instance (from memory while running, from disk once finished)."""
        with self._lock:
            inst = self._instances.get(iid)
            if inst is None:
                raise EngineError(grpc.StatusCode.NOT_FOUND, f"workflow instance '{iid}' not found")
            if inst.history is not None:
                return list(inst.history)
            barrier = self.store.barrier()
        barrier.wait()
        return [pb.HistoryEvent.FromString(b) for b in self.store.read_history(iid)]

    # == timers and waiting clients ================================================================

    def _timer_loop(self) -> None:
        """Fire due timers and scheduled starts; sleeps until the earliest one, never polls."""
        with self._lock:
            while not self._closed:
                if not self._heap:
                    self._sched.wait()
                    continue
                delay = self._heap[0][0] - time.time()
                if delay > 0:
                    self._sched.wait(min(delay, _MAX_SLEEP))
                    continue
                _, _, kind, iid, timer_id, execution_id = heapq.heappop(self._heap)
                inst = self._instances.get(iid)
                if inst is None or inst.terminal or inst.execution_id != execution_id:
                    continue
                if kind == "start":
                    self._maybe_enqueue(inst)
                    continue
                fire_at = inst.timers.pop(timer_id, None)
                if fire_at is None:
                    continue
                ops: list[st.Op] = [st.op_timer_delete(iid, timer_id)]
                now = time.time()
                ev = event(now, timerFired=pb.TimerFiredEvent(fireAt=timestamp(fire_at), timerId=timer_id))
                # keep the exact fireAt the workflow asked for
                assert inst.history is not None
                for h in reversed(inst.history):
                    if h.eventId == timer_id and h.HasField("timerCreated"):
                        ev.timerFired.fireAt.CopyFrom(h.timerCreated.fireAt)
                        break
                self._deliver(ops, iid, ev)
                self.store.submit(ops)  # a lost timer firing is re-fired from disk after a crash

    def _watch(self, iid: str) -> threading.Condition:
        cond, count = self._watchers.get(iid, (None, 0))
        if cond is None:
            cond = threading.Condition(self._lock)
        self._watchers[iid] = (cond, count + 1)
        return cond

    def _unwatch(self, iid: str) -> None:
        cond, count = self._watchers[iid]
        if count <= 1:
            del self._watchers[iid]
        else:
            self._watchers[iid] = (cond, count - 1)

    def _state_message(self, inst: Instance, with_payloads: bool) -> Any:
        state = pb.WorkflowState(
            instanceId=inst.instance_id,
            name=inst.name,
            workflowStatus=inst.status,
            createdTimestamp=timestamp(inst.created_at),
            lastUpdatedTimestamp=timestamp(inst.updated_at),
            executionId=sv(inst.execution_id),
        )
        if inst.completed_at is not None:
            state.completedTimestamp.CopyFrom(timestamp(inst.completed_at))
        if inst.not_before is not None:
            state.scheduledStartTimestamp.CopyFrom(timestamp(inst.not_before))
        if inst.parent_id:
            state.parentInstanceId.value = inst.parent_id
        if with_payloads:  # an empty payload is still a payload (daprd answers `input {}` for "")
            for field_name, text in (
                ("input", inst.input),
                ("output", inst.output),
                ("customStatus", inst.custom_status),
            ):
                if text is not None:
                    getattr(state, field_name).SetInParent()
                    getattr(state, field_name).value = text
            if inst.failure:
                state.failureDetails.ParseFromString(inst.failure)
        return state
