"""The event-sourced workflow engine: instances, inboxes, leases, timers and action application.

Semantics follow durabletask-go (the engine inside daprd): an orchestration work item carries the
instance's past events plus its new ones (a ``workflowStarted`` marker followed by the inbox); the
worker answers with actions that the engine turns into history events, activity work, timers and
messages to other instances. All state lives in memory under one lock and every change is written
to SQLite through :class:`~.store.Store` in the same critical section, so memory and disk change in
the same order. Nothing polls: worker streams, waiting clients and the timer thread sleep on
conditions that state changes notify.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from . import store as st
from .protos import (
    COMPLETED,
    CONTINUED_AS_NEW,
    FAILED,
    PENDING,
    RUNNING,
    STALLED,
    SUSPENDED,
    TERMINAL_STATUSES,
    TERMINATED,
    pb,
    status_name,
    timestamp,
    to_epoch,
    wrappers_pb2,
)

log = logging.getLogger("steadfast.engine")

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Timers at or beyond this are "never" (the SDK's indefinite-wait sentinel is 9999-12-31).
_NEVER = 253402300799.0 - 86400 * 365
_MAX_SLEEP = 3600.0


class EngineError(Exception):
    """A request the engine refuses; carries the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> EngineError:
    return EngineError(grpc.StatusCode.INVALID_ARGUMENT, message)


# daprd's wording of "no such instance" differs per call; clients may match on it, so ours is the same.
_NOT_FOUND_PREFIX = {
    "terminate": "failed to submit termination request: ",
    "purge": "failed to purge workflow state: failed to fetch workflow state: ",
}


def _not_found(call: str = "") -> EngineError:
    return EngineError(grpc.StatusCode.UNKNOWN, f"{_NOT_FOUND_PREFIX.get(call, '')}no such instance exists")


def _check_json(what: str, value: Any) -> str | None:
    """Return the payload of a StringValue if set, refusing anything that is not JSON."""
    if value is None:
        return None
    text: str = value.value
    try:
        json.loads(text)
    except ValueError as exc:
        raise _invalid(f"{what} is not valid JSON: {exc}") from None
    return text


def _sv(text: str | None) -> Any:
    return wrappers_pb2.StringValue(value=text) if text is not None else None


def _event(now: float, event_id: int = -1, **kind: Any) -> Any:
    return pb.HistoryEvent(eventId=event_id, timestamp=timestamp(now), **kind)


@dataclass
class Activity:
    """An activity scheduled by an orchestration and not yet completed."""

    instance_id: str
    task_id: int
    execution_id: str
    event: Any  # the TaskScheduled history event
    lease: Lease | None = None
    queued: bool = False


@dataclass
class Instance:
    """In-memory state of one workflow instance; mirrors the ``instances`` row and its children rows."""

    instance_id: str
    name: str
    status: int
    execution_id: str
    created_at: float
    updated_at: float
    completed_at: float | None = None
    not_before: float | None = None
    input: str | None = None
    output: str | None = None
    custom_status: str | None = None
    failure: bytes | None = None
    parent_id: str | None = None
    event_count: int = 0
    history: list[Any] | None = field(default_factory=list)  # None once terminal (read from disk)
    inbox: list[tuple[int, Any]] = field(default_factory=list)
    activities: dict[int, Activity] = field(default_factory=dict)
    timers: dict[int, float] = field(default_factory=dict)
    lease: Lease | None = None
    queued: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in st.INSTANCE_COLUMNS}


@dataclass
class Lease:
    """A work item handed to one worker stream; its token must come back with the result."""

    token: str
    stream: Stream
    kind: str  # "orchestration" | "activity"
    instance_id: str
    task_id: int = 0
    inbox_seqs: list[int] = field(default_factory=list)
    new_events: list[Any] = field(default_factory=list)


@dataclass
class Stream:
    """One connected ``GetWorkItems`` stream (one worker connection)."""

    stream_id: int
    peer: str
    active: bool = True
    leases: dict[str, Lease] = field(default_factory=dict)


class Engine:
    """Thread-safe engine state machine; the gRPC service is a thin layer over it."""

    def __init__(self, store: st.Store, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.store = store
        self.max_message_bytes = max_message_bytes
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # worker streams wait here
        self._sched = threading.Condition(self._lock)  # the timer thread waits here
        self._watchers: dict[str, tuple[threading.Condition, int]] = {}
        self._instances: dict[str, Instance] = {}
        self._children: dict[str, set[str]] = {}
        self._ready: deque[tuple[str, str, int]] = deque()
        self._heap: list[tuple[float, int, str, str, int, str]] = []
        self._heap_seq = itertools.count()
        self._streams: dict[int, Stream] = {}
        self._stream_ids = itertools.count(1)
        self._leases: dict[str, Lease] = {}
        self._boot = uuid.uuid4().hex[:8]
        self._token_seq = itertools.count(1)
        self._inbox_seq = itertools.count(1)
        self._closed = False
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
        """Create an instance; an ID is free again once its instance and every descendant have finished."""
        iid: str = req.instanceId
        name: str = req.name
        if not iid:
            raise _invalid("instance ID must not be empty")
        if not name:
            raise _invalid("workflow name must not be empty")
        input_text = _check_json("workflow input", req.input if req.HasField("input") else None)
        not_before = None
        if req.HasField("scheduledStartTimestamp"):
            not_before = to_epoch(req.scheduledStartTimestamp)
        execution_id = req.executionId.value if req.HasField("executionId") and req.executionId.value else None
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
                input=_sv(input_text),
                workflowInstance=pb.WorkflowInstance(instanceId=iid, executionId=_sv(execution_id or uuid.uuid4().hex)),
                scheduledStartTimestamp=req.scheduledStartTimestamp if not_before is not None else None,
                parentTraceContext=req.parentTraceContext if req.HasField("parentTraceContext") else None,
            )
            if req.HasField("version"):
                started.version.CopyFrom(req.version)
            for key, value in req.tags.items():
                started.tags[key] = value
            self._create_instance(ops, started, None, not_before)
            return iid, self.store.submit(ops)

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
        """Append an external event: refused for an unknown instance, dropped by a finished one (as on daprd)."""
        if not iid:
            raise _invalid("instance ID must not be empty")
        if not name:
            raise _invalid("event name must not be empty")
        text = _check_json("event data", input_value)
        with self._lock:
            self._check_open()
            if iid not in self._instances:
                raise EngineError(grpc.StatusCode.UNKNOWN, "no such instance exists")
            ops: list[st.Op] = []
            ev = _event(time.time(), eventRaised=pb.EventRaisedEvent(name=name, input=_sv(text)))
            self._deliver(ops, iid, ev)
            return self.store.submit(ops)

    def control(self, iid: str, kind: str, payload: Any | None, recursive: bool = False) -> st.Ticket:
        """Send terminate / suspend / resume to an instance (no-op once it has finished)."""
        if not iid:
            raise _invalid("instance ID must not be empty")
        text = _check_json("terminate output", payload) if kind == "terminate" else None
        with self._lock:
            self._check_open()
            inst = self._instances.get(iid)
            if inst is None:
                raise _not_found(kind)
            if inst.terminal:
                return st.DONE
            now = time.time()
            if kind == "terminate":
                ev = _event(now, executionTerminated=pb.ExecutionTerminatedEvent(input=_sv(text), recurse=recursive))
            elif kind == "suspend":
                reason = payload.value if payload is not None and payload.value else None
                ev = _event(now, executionSuspended=pb.ExecutionSuspendedEvent(input=_sv(reason)))
            else:
                reason = payload.value if payload is not None and payload.value else None
                ev = _event(now, executionResumed=pb.ExecutionResumedEvent(input=_sv(reason)))
            ops: list[st.Op] = []
            self._deliver(ops, iid, ev)
            return self.store.submit(ops)

    def purge(self, iid: str, recursive: bool) -> tuple[int, st.Ticket]:
        """Delete a finished instance (and its finished children when recursive)."""
        if not iid:
            raise _invalid("instance ID must not be empty")
        with self._lock:
            self._check_open()
            inst = self._instances.get(iid)
            if inst is None:
                raise _not_found("purge")
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

    def list_instance_ids(self, start_after: str, page_size: int) -> tuple[list[str], str | None]:
        with self._lock:
            ids = sorted(i for i in self._instances if i > start_after)
        if page_size and len(ids) > page_size:
            return ids[:page_size], ids[page_size - 1]
        return ids, None

    def history(self, iid: str) -> list[Any]:
        """Stored history of an instance (from memory while running, from disk once finished)."""
        with self._lock:
            inst = self._instances.get(iid)
            if inst is None:
                raise _not_found("history")
            if inst.history is not None:
                return list(inst.history)
            barrier = self.store.barrier()
        barrier.wait()
        return [pb.HistoryEvent.FromString(b) for b in self.store.read_history(iid)]

    @property
    def worker_count(self) -> int:
        with self._lock:
            return len(self._streams)

    # == worker streams ============================================================================

    def open_stream(self, peer: str) -> Stream:
        with self._lock:
            self._check_open()
            stream = Stream(next(self._stream_ids), peer)
            self._streams[stream.stream_id] = stream
            log.info("worker stream %d connected from %s (%d connected)", stream.stream_id, peer, len(self._streams))
            return stream

    def close_stream(self, stream: Stream) -> None:
        """Forget a disconnected worker and give its unfinished work items to others."""
        with self._lock:
            if not stream.active:
                return
            stream.active = False
            self._streams.pop(stream.stream_id, None)
            leases = list(stream.leases.values())
            stream.leases.clear()
            for lease in leases:
                self._release(lease)
            log.info(
                "worker stream %d disconnected; %d unfinished work items will be redelivered (%d connected)",
                stream.stream_id,
                len(leases),
                len(self._streams),
            )
            self._work.notify_all()
            for cond, _ in self._watchers.values():
                cond.notify_all()  # waits bounded by "while workers are connected" re-check

    def next_work_item(self, stream: Stream) -> Any | None:
        """Block until a work item is ready for this stream; None once the stream has closed."""
        with self._lock:
            while True:
                if not stream.active or self._closed:
                    if self._ready:
                        self._work.notify()  # pass the wake-up on to a live stream
                    return None
                item = self._pop_ready(stream)
                if item is not None:
                    if self._ready:
                        self._work.notify()
                    return item
                self._work.wait()

    def _pop_ready(self, stream: Stream) -> Any | None:
        now = time.time()
        while self._ready:
            kind, iid, task_id = self._ready.popleft()
            inst = self._instances.get(iid)
            if inst is None:
                continue
            if kind == "o":
                inst.queued = False
                if not self._orchestration_ready(inst, now):
                    continue
                item = self._orchestration_item(inst, stream, now)
            else:
                act = inst.activities.get(task_id)
                if act is None:
                    continue
                act.queued = False
                if act.lease is not None or inst.terminal:
                    continue
                item = self._activity_item(inst, act, stream)
            if item is not None:
                return item
        return None

    def _orchestration_ready(self, inst: Instance, now: float) -> bool:
        if inst.terminal or inst.lease is not None or not inst.inbox:
            return False
        if inst.not_before is not None and inst.not_before > now:
            return any(ev.HasField("executionTerminated") for _, ev in inst.inbox)
        return True

    def _new_token(self) -> str:
        return f"{self._boot}-{next(self._token_seq)}"

    def _orchestration_item(self, inst: Instance, stream: Stream, now: float) -> Any | None:
        assert inst.history is not None
        new_events = [_event(now, workflowStarted=pb.WorkflowStartedEvent())]
        new_events.extend(ev for _, ev in inst.inbox)
        token = self._new_token()
        request = pb.WorkflowRequest(
            instanceId=inst.instance_id,
            executionId=_sv(inst.execution_id),
            pastEvents=inst.history,
            newEvents=new_events,
        )
        item = pb.WorkItem(workflowRequest=request, completionToken=token)
        size = item.ByteSize()
        if size > self.max_message_bytes:
            log.error("instance %s: work item of %d bytes exceeds the message limit", inst.instance_id, size)
            ops: list[st.Op] = []
            details = pb.TaskFailureDetails(
                errorType="PayloadSizeExceeded",
                errorMessage=(
                    f"the workflow's history is {size} bytes, over the engine's gRPC message limit of "
                    f"{self.max_message_bytes} bytes; the work item cannot be sent to a worker"
                ),
                isNonRetriable=True,
            )
            inst.history.extend(new_events)
            for ev in new_events:
                self._history_op(ops, inst, ev)
            self._clear_inbox(ops, inst)
            self._append_history(
                ops,
                inst,
                _event(
                    now, executionCompleted=pb.ExecutionCompletedEvent(workflowStatus=FAILED, failureDetails=details)
                ),
            )
            inst.failure = details.SerializeToString()
            self._set_status(ops, inst, FAILED, now)
            self._finish(ops, inst, now, terminate_children=False)
            ops.append(st.op_upsert_instance(inst.row()))
            self.store.submit(ops)
            return None
        lease = Lease(token, stream, "orchestration", inst.instance_id, 0, [s for s, _ in inst.inbox], new_events)
        inst.lease = lease
        stream.leases[token] = lease
        self._leases[token] = lease
        return item

    def _activity_item(self, inst: Instance, act: Activity, stream: Stream) -> Any | None:
        scheduled = act.event.taskScheduled
        token = self._new_token()
        request = pb.ActivityRequest(
            name=scheduled.name,
            input=scheduled.input if scheduled.HasField("input") else None,
            workflowInstance=pb.WorkflowInstance(instanceId=inst.instance_id, executionId=_sv(act.execution_id)),
            taskId=act.task_id,
            taskExecutionId=scheduled.taskExecutionId,
            parentTraceContext=scheduled.parentTraceContext if scheduled.HasField("parentTraceContext") else None,
        )
        if scheduled.HasField("version"):
            request.version.CopyFrom(scheduled.version)
        item = pb.WorkItem(activityRequest=request, completionToken=token)
        if item.ByteSize() > self.max_message_bytes:
            ops: list[st.Op] = []
            details = pb.TaskFailureDetails(
                errorType="PayloadSizeExceeded",
                errorMessage=(
                    f"activity input exceeds the engine's gRPC message limit of {self.max_message_bytes} bytes"
                ),
                isNonRetriable=True,
            )
            self._complete_activity_locked(ops, inst, act, None, details)
            self.store.submit(ops)
            return None
        lease = Lease(token, stream, "activity", inst.instance_id, act.task_id)
        act.lease = lease
        stream.leases[token] = lease
        self._leases[token] = lease
        return item

    def _release(self, lease: Lease) -> None:
        """Return a leased work item to the ready queue (its worker went away)."""
        self._leases.pop(lease.token, None)
        inst = self._instances.get(lease.instance_id)
        if inst is None:
            return
        if lease.kind == "orchestration":
            if inst.lease is lease:
                inst.lease = None
                self._maybe_enqueue(inst)
        else:
            act = inst.activities.get(lease.task_id)
            if act is not None and act.lease is lease:
                act.lease = None
                self._enqueue_activity(act)

    def _take_lease(self, token: str, kind: str, iid: str, task_id: int = 0) -> Lease:
        lease = self._leases.get(token) if token else None
        if lease is None and not token:
            inst = self._instances.get(iid)
            if inst is not None and kind == "orchestration":
                lease = inst.lease
            elif inst is not None and task_id in inst.activities:
                lease = inst.activities[task_id].lease
        if lease is None or lease.kind != kind or lease.instance_id != iid or lease.task_id != task_id:
            what = f"{iid}/{task_id}" if kind == "activity" else iid
            raise EngineError(
                grpc.StatusCode.UNKNOWN,
                f"unknown instance ID/task ID combo: {what}: this work item is not (or no longer) leased "
                "to the caller, it was completed or given to another worker; the result is refused",
            )
        self._leases.pop(lease.token, None)
        lease.stream.leases.pop(lease.token, None)
        return lease

    # == completions ===============================================================================

    def complete_activity(self, res: Any) -> st.Ticket:
        """Record an activity's result as a TaskCompleted/TaskFailed event in its instance's inbox."""
        with self._lock:
            self._check_open()
            lease = self._take_lease(res.completionToken, "activity", res.instanceId, res.taskId)
            inst = self._instances[lease.instance_id]
            act = inst.activities[lease.task_id]
            act.lease = None
            ops: list[st.Op] = []
            failure = res.failureDetails if res.HasField("failureDetails") else None
            result = res.result if res.HasField("result") else None
            self._complete_activity_locked(ops, inst, act, result, failure)
            return self.store.submit(ops)

    def _complete_activity_locked(
        self, ops: list[st.Op], inst: Instance, act: Activity, result: Any | None, failure: Any | None
    ) -> None:
        del inst.activities[act.task_id]
        ops.append(st.op_activity_delete(inst.instance_id, act.task_id))
        exec_id = act.event.taskScheduled.taskExecutionId
        now = time.time()
        if failure is not None:
            ev = _event(
                now,
                taskFailed=pb.TaskFailedEvent(
                    taskScheduledId=act.task_id, failureDetails=failure, taskExecutionId=exec_id
                ),
            )
        else:
            ev = _event(
                now,
                taskCompleted=pb.TaskCompletedEvent(
                    taskScheduledId=act.task_id, result=result, taskExecutionId=exec_id
                ),
            )
        if act.execution_id == inst.execution_id:
            self._deliver(ops, inst.instance_id, ev)

    def complete_orchestration(self, res: Any) -> st.Ticket:
        """Apply a worker's orchestration result: commit the delivered events, then the actions."""
        actions = list(res.actions)
        self._validate_actions(actions)
        with self._lock:
            self._check_open()
            lease = self._take_lease(res.completionToken, "orchestration", res.instanceId)
            inst = self._instances[lease.instance_id]
            inst.lease = None
            assert inst.history is not None
            now = time.time()
            ops: list[st.Op] = []
            # 1. the delivered events move from the inbox into history
            delivered = set(lease.inbox_seqs)
            remaining = [(s, e) for s, e in inst.inbox if s not in delivered]
            for seq in lease.inbox_seqs:
                ops.append(st.op_inbox_delete(inst.instance_id, seq))
            inst.inbox = remaining
            if res.HasField("version") and lease.new_events:
                lease.new_events[0].workflowStarted.version.CopyFrom(res.version)
            terminate_recurse = False
            for ev in lease.new_events:
                self._append_history(ops, inst, ev)
                if ev.HasField("executionTerminated") and ev.executionTerminated.recurse:
                    terminate_recurse = True
            inst.custom_status = res.customStatus.value if res.HasField("customStatus") else None
            # 2. the actions
            status = self._status_from(inst.history)
            for action in actions:
                if action.HasField("completeWorkflow") and (action.completeWorkflow.workflowStatus == CONTINUED_AS_NEW):
                    self._continue_as_new(ops, inst, action.completeWorkflow, now)
                    status = RUNNING
                    break
                status = self._apply_action(ops, inst, action, now, status)
            self._set_status(ops, inst, status, now)
            if inst.terminal:
                self._finish(ops, inst, now, terminate_children=terminate_recurse)
            else:
                self._maybe_enqueue(inst)
            ops.append(st.op_upsert_instance(inst.row()))
            return self.store.submit(ops)

    def _validate_actions(self, actions: Iterable[Any]) -> None:
        for action in actions:
            kind = action.WhichOneof("workflowActionType")
            if kind is None:
                raise _invalid(f"action {action.id} has no type")
            if kind == "scheduleTask" and not action.scheduleTask.name:
                raise _invalid(f"action {action.id}: activity name must not be empty")
            if kind == "createChildWorkflow" and not action.createChildWorkflow.name:
                raise _invalid(f"action {action.id}: child workflow name must not be empty")
            if kind == "sendEvent" and not action.sendEvent.instance.instanceId:
                raise _invalid(f"action {action.id}: target instance ID must not be empty")
            if kind == "createDetachedWorkflow" and not action.createDetachedWorkflow.name:
                raise _invalid(f"action {action.id}: workflow name must not be empty")

    def _apply_action(self, ops: list[st.Op], inst: Instance, action: Any, now: float, status: int) -> int:
        iid = inst.instance_id
        kind = action.WhichOneof("workflowActionType")
        router = action.router if action.HasField("router") else None
        if kind == "scheduleTask":
            a = action.scheduleTask
            ev = _event(
                now,
                action.id,
                taskScheduled=pb.TaskScheduledEvent(
                    name=a.name,
                    version=a.version if a.HasField("version") else None,
                    input=a.input if a.HasField("input") else None,
                    taskExecutionId=a.taskExecutionId,
                    historyPropagationScope=a.historyPropagationScope,
                ),
                router=router,
            )
            self._append_history(ops, inst, ev)
            act = Activity(iid, action.id, inst.execution_id, ev)
            inst.activities[action.id] = act
            ops.append(st.op_activity_add(iid, action.id, inst.execution_id, ev.SerializeToString()))
            self._enqueue_activity(act)
        elif kind == "createTimer":
            t = action.createTimer
            created = pb.TimerCreatedEvent(fireAt=t.fireAt, name=t.name)
            origin = t.WhichOneof("origin")
            if origin is not None:
                getattr(created, origin).CopyFrom(getattr(t, origin))
            self._append_history(ops, inst, _event(now, action.id, timerCreated=created, router=router))
            fire_at = to_epoch(t.fireAt)
            if fire_at < _NEVER:
                fired = _event(now, timerFired=pb.TimerFiredEvent(fireAt=t.fireAt, timerId=action.id))
                inst.timers[action.id] = fire_at
                ops.append(st.op_timer_add(iid, action.id, inst.execution_id, fire_at, fired.SerializeToString()))
                self._push_heap(fire_at, "timer", iid, action.id, inst.execution_id)
        elif kind == "createChildWorkflow":
            c = action.createChildWorkflow
            child_id = c.instanceId or f"{iid}:{action.id:04x}"
            self._append_history(
                ops,
                inst,
                _event(
                    now,
                    action.id,
                    childWorkflowInstanceCreated=pb.ChildWorkflowInstanceCreatedEvent(
                        instanceId=child_id,
                        name=c.name,
                        version=c.version if c.HasField("version") else None,
                        input=c.input if c.HasField("input") else None,
                    ),
                    router=router,
                ),
            )
            started = pb.ExecutionStartedEvent(
                name=c.name,
                version=c.version if c.HasField("version") else None,
                input=c.input if c.HasField("input") else None,
                workflowInstance=pb.WorkflowInstance(instanceId=child_id, executionId=_sv(uuid.uuid4().hex)),
                parentInstance=pb.ParentInstanceInfo(
                    taskScheduledId=action.id,
                    name=_sv(inst.name),
                    workflowInstance=pb.WorkflowInstance(instanceId=iid, executionId=_sv(inst.execution_id)),
                ),
            )
            taken = self._id_taken(child_id)
            if taken:
                details = pb.TaskFailureDetails(errorType="WorkflowInstanceAlreadyExists", errorMessage=taken)
                failed = _event(
                    now,
                    childWorkflowInstanceFailed=pb.ChildWorkflowInstanceFailedEvent(
                        taskScheduledId=action.id, failureDetails=details
                    ),
                )
                self._deliver(ops, iid, failed)
            else:
                self._forget_finished(ops, child_id)  # a retried child runs again under its ID, as on daprd
                self._create_instance(ops, started, iid, None)
        elif kind == "sendEvent":
            s = action.sendEvent
            data = s.data if s.HasField("data") else None
            self._append_history(
                ops,
                inst,
                _event(
                    now,
                    action.id,
                    eventSent=pb.EventSentEvent(instanceId=s.instance.instanceId, name=s.name, input=data),
                    router=router,
                ),
            )
            self._deliver(
                ops, s.instance.instanceId, _event(now, eventRaised=pb.EventRaisedEvent(name=s.name, input=data))
            )
        elif kind == "terminateWorkflow":
            t = action.terminateWorkflow
            reason = t.reason if t.HasField("reason") else None
            self._deliver(
                ops,
                t.instanceId,
                _event(now, executionTerminated=pb.ExecutionTerminatedEvent(input=reason, recurse=t.recurse)),
            )
        elif kind == "completeWorkflow":
            c = action.completeWorkflow
            if status in TERMINAL_STATUSES:
                return status
            completed = pb.ExecutionCompletedEvent(
                workflowStatus=c.workflowStatus,
                result=c.result if c.HasField("result") else None,
                failureDetails=c.failureDetails if c.HasField("failureDetails") else None,
            )
            self._append_history(ops, inst, _event(now, action.id, executionCompleted=completed, router=router))
            inst.output = c.result.value if c.HasField("result") else None
            inst.failure = c.failureDetails.SerializeToString() if c.HasField("failureDetails") else None
            return int(c.workflowStatus)
        elif kind == "workflowVersionNotAvailable":
            self._append_history(
                ops,
                inst,
                _event(
                    now,
                    executionStalled=pb.ExecutionStalledEvent(
                        reason=pb.VERSION_NOT_AVAILABLE, description="workflow version not available on the worker"
                    ),
                ),
            )
            return STALLED
        elif kind == "createDetachedWorkflow":
            d = action.createDetachedWorkflow
            target = d.instanceId or uuid.uuid4().hex
            self._append_history(
                ops,
                inst,
                _event(
                    now,
                    action.id,
                    detachedWorkflowInstanceCreated=pb.DetachedWorkflowInstanceCreatedEvent(instanceId=target),
                ),
            )
            if target not in self._instances:
                started = pb.ExecutionStartedEvent(
                    name=d.name,
                    version=d.version if d.HasField("version") else None,
                    input=d.input if d.HasField("input") else None,
                    workflowInstance=pb.WorkflowInstance(instanceId=target, executionId=_sv(uuid.uuid4().hex)),
                )
                nb = to_epoch(d.scheduledStartTimestamp) if d.HasField("scheduledStartTimestamp") else None
                self._create_instance(ops, started, None, nb)
        return status

    def _continue_as_new(self, ops: list[st.Op], inst: Instance, action: Any, now: float) -> None:
        """Reset history to a fresh start with the new input, keeping unprocessed events."""
        assert inst.history is not None
        old_start = next((e for e in inst.history if e.HasField("executionStarted")), None)
        started = pb.ExecutionStartedEvent()
        if old_start is not None:
            started.CopyFrom(old_start.executionStarted)
        started.ClearField("input")
        started.ClearField("scheduledStartTimestamp")
        if action.HasField("result"):
            started.input.CopyFrom(action.result)
        inst.execution_id = uuid.uuid4().hex
        started.workflowInstance.executionId.value = inst.execution_id
        inst.history = []
        inst.event_count = 0
        ops.append(st.op_history_clear(inst.instance_id))
        self._drop_pending_work(ops, inst)
        carried = [_event(now, executionStarted=started), *action.carryoverEvents]
        front = [(next(self._inbox_seq), ev) for ev in carried]
        for seq, ev in front:
            ops.append(st.op_inbox_add(inst.instance_id, seq, ev.SerializeToString()))
        # keep inbox order = arrival order: carried events first, then what arrived meanwhile
        rest = inst.inbox
        for seq, _ in rest:
            ops.append(st.op_inbox_delete(inst.instance_id, seq))
        inst.inbox = front
        for _, ev in rest:
            seq = next(self._inbox_seq)
            inst.inbox.append((seq, ev))
            ops.append(st.op_inbox_add(inst.instance_id, seq, ev.SerializeToString()))
        inst.input = action.result.value if action.HasField("result") else None
        inst.output = None
        inst.failure = None

    def _finish(self, ops: list[st.Op], inst: Instance, now: float, *, terminate_children: bool) -> None:
        """An instance reached a terminal state: drop pending work, tell the parent, stop children."""
        inst.completed_at = now
        self._clear_inbox(ops, inst)
        self._drop_pending_work(ops, inst)
        task_id = self._parent_task_id(inst)
        inst.history = None  # kept on disk; finished histories are read back on demand
        if inst.parent_id:
            parent = self._instances.get(inst.parent_id)
            if parent is not None and task_id is not None:
                if inst.status == COMPLETED:
                    ev = _event(
                        now,
                        childWorkflowInstanceCompleted=pb.ChildWorkflowInstanceCompletedEvent(
                            taskScheduledId=task_id, result=_sv(inst.output)
                        ),
                    )
                else:
                    details = pb.TaskFailureDetails()
                    if inst.failure:
                        details.ParseFromString(inst.failure)
                    ev = _event(
                        now,
                        childWorkflowInstanceFailed=pb.ChildWorkflowInstanceFailedEvent(
                            taskScheduledId=task_id, failureDetails=details
                        ),
                    )
                self._deliver(ops, parent.instance_id, ev)
        if terminate_children and inst.status == TERMINATED:
            for child_id in sorted(self._children.get(inst.instance_id, ())):
                child = self._instances.get(child_id)
                if child is not None and not child.terminal:
                    self._deliver(
                        ops,
                        child_id,
                        _event(
                            now,
                            executionTerminated=pb.ExecutionTerminatedEvent(input=_sv(inst.output), recurse=True),
                        ),
                    )

    @staticmethod
    def _parent_task_id(inst: Instance) -> int | None:
        for ev in inst.history or ():
            if ev.HasField("executionStarted"):
                started = ev.executionStarted
                return int(started.parentInstance.taskScheduledId) if started.HasField("parentInstance") else None
        return None

    def _drop_pending_work(self, ops: list[st.Op], inst: Instance) -> None:
        for act in inst.activities.values():
            if act.lease is not None:
                self._leases.pop(act.lease.token, None)
                act.lease.stream.leases.pop(act.lease.token, None)
        inst.activities.clear()
        inst.timers.clear()
        ops.append(st.op_activities_clear(inst.instance_id))
        ops.append(st.op_timers_clear(inst.instance_id))

    def _clear_inbox(self, ops: list[st.Op], inst: Instance) -> None:
        if inst.inbox:
            inst.inbox = []
            ops.append(st.op_inbox_clear(inst.instance_id))

    # == internals =================================================================================

    def _id_taken(self, iid: str) -> str | None:
        """Why `iid` cannot be (re)used, in daprd's words, or None when it can.

        daprd (1.18) reuses the ID of a finished instance once every descendant has finished too: a running
        descendant could still deliver events from the old execution into the new one.
        """
        existing = self._instances.get(iid)
        if existing is None:
            return None
        if not existing.terminal:
            return f"an active workflow with ID '{iid}' already exists"
        for child in self._descendants(iid):
            if not self._instances[child].terminal:
                return (
                    f"cannot recreate workflow with ID '{iid}': child workflow '{child}': "
                    "orchestration has not yet completed"
                )
        return None

    def _descendants(self, iid: str) -> list[str]:
        found: list[str] = []
        frontier = [iid]
        while frontier:
            for child in sorted(self._children.get(frontier.pop(), ())):
                if child in self._instances and child not in found:
                    found.append(child)
                    frontier.append(child)
        return found

    def _forget_finished(self, ops: list[st.Op], iid: str) -> None:
        """Drop a finished instance whose ID is being reused; its children become roots of their own."""
        old = self._instances.pop(iid, None)
        if old is None:
            return
        ops.extend(st.op_delete_instance(iid))
        if old.parent_id and old.parent_id in self._children:
            self._children[old.parent_id].discard(iid)
        for child_id in self._children.pop(iid, ()):
            child = self._instances.get(child_id)
            if child is not None:
                child.parent_id = None
                ops.append(st.op_upsert_instance(child.row()))

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(grpc.StatusCode.UNAVAILABLE, "the engine is shutting down")

    def _create_instance(self, ops: list[st.Op], started: Any, parent_id: str | None, not_before: float | None) -> None:
        now = time.time()
        iid = started.workflowInstance.instanceId
        inst = Instance(
            instance_id=iid,
            name=started.name,
            status=PENDING,
            execution_id=started.workflowInstance.executionId.value,
            created_at=now,
            updated_at=now,
            not_before=not_before,
            input=started.input.value if started.HasField("input") else None,
            parent_id=parent_id,
        )
        self._instances[iid] = inst
        if parent_id:
            self._children.setdefault(parent_id, set()).add(iid)
        ops.append(st.op_upsert_instance(inst.row()))
        if not_before is not None and not_before > now:
            self._push_heap(not_before, "start", iid, 0, inst.execution_id)
        self._deliver(ops, iid, _event(now, executionStarted=started))

    def _deliver(self, ops: list[st.Op], iid: str, ev: Any) -> None:
        """Append an event to an instance's inbox; finished or unknown instances drop it."""
        inst = self._instances.get(iid)
        if inst is None or inst.terminal:
            log.debug(
                "dropping %s for %s instance %s", ev.WhichOneof("eventType"), "finished" if inst else "unknown", iid
            )
            return
        seq = next(self._inbox_seq)
        inst.inbox.append((seq, ev))
        ops.append(st.op_inbox_add(iid, seq, ev.SerializeToString()))
        self._maybe_enqueue(inst)

    def _append_history(self, ops: list[st.Op], inst: Instance, ev: Any) -> None:
        assert inst.history is not None
        inst.history.append(ev)
        self._history_op(ops, inst, ev)

    def _history_op(self, ops: list[st.Op], inst: Instance, ev: Any) -> None:
        ops.append(st.op_history_append(inst.instance_id, inst.event_count, ev.SerializeToString()))
        inst.event_count += 1

    @staticmethod
    def _status_from(history: list[Any]) -> int:
        status = PENDING
        for ev in history:
            kind = ev.WhichOneof("eventType")
            if kind == "executionStarted":
                status = RUNNING
            elif kind == "executionCompleted":
                return int(ev.executionCompleted.workflowStatus)
            elif kind == "executionSuspended" and status in (RUNNING, SUSPENDED):
                status = SUSPENDED
            elif kind == "executionResumed" and status in (RUNNING, SUSPENDED):
                status = RUNNING
            elif kind == "executionStalled":
                status = STALLED
            elif kind == "workflowStarted" and status == STALLED:
                status = RUNNING
        return status

    def _set_status(self, ops: list[st.Op], inst: Instance, status: int, now: float) -> None:
        inst.status = status
        inst.updated_at = now
        if status != PENDING:
            inst.not_before = None
        self._notify_watchers(inst.instance_id)

    def _maybe_enqueue(self, inst: Instance) -> None:
        if not inst.queued and self._orchestration_ready(inst, time.time()):
            inst.queued = True
            self._ready.append(("o", inst.instance_id, 0))
            self._work.notify()

    def _enqueue_activity(self, act: Activity) -> None:
        if not act.queued and act.lease is None:
            act.queued = True
            self._ready.append(("a", act.instance_id, act.task_id))
            self._work.notify()

    def _push_heap(self, when: float, kind: str, iid: str, timer_id: int, execution_id: str) -> None:
        entry = (when, next(self._heap_seq), kind, iid, timer_id, execution_id)
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._sched.notify()

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
                ev = _event(now, timerFired=pb.TimerFiredEvent(fireAt=timestamp(fire_at), timerId=timer_id))
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

    def _notify_watchers(self, iid: str) -> None:
        entry = self._watchers.get(iid)
        if entry is not None:
            entry[0].notify_all()

    def _state_message(self, inst: Instance, with_payloads: bool) -> Any:
        state = pb.WorkflowState(
            instanceId=inst.instance_id,
            name=inst.name,
            workflowStatus=inst.status,
            createdTimestamp=timestamp(inst.created_at),
            lastUpdatedTimestamp=timestamp(inst.updated_at),
            executionId=_sv(inst.execution_id),
        )
        if inst.completed_at is not None:
            state.completedTimestamp.CopyFrom(timestamp(inst.completed_at))
        if inst.not_before is not None:
            state.scheduledStartTimestamp.CopyFrom(timestamp(inst.not_before))
        if inst.parent_id:
            state.parentInstanceId.value = inst.parent_id
        if with_payloads:
            if inst.input is not None:
                state.input.value = inst.input
            if inst.output is not None:
                state.output.value = inst.output
            if inst.custom_status is not None:
                state.customStatus.value = inst.custom_status
            if inst.failure:
                state.failureDetails.ParseFromString(inst.failure)
        return state
