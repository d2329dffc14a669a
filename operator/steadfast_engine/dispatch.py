"""Dispatch: worker streams, the ready queue and leases, i.e. handing work items out to workers.

A work item (an orchestration step or an activity call) is leased to one stream under a completion
token; the result is accepted only with that token (:meth:`Dispatch._take_lease`). A stream that
disconnects gives its leases back to the ready queue, so another worker redelivers the work.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from typing import Any

import grpc

from . import store as st
from .protos import pb
from .state import Activity, EngineError, EngineState, Instance, Lease, Stream, event, sv

log = logging.getLogger("steadfast.engine")


class Dispatch(EngineState, ABC):
    """Queues ready work and leases it to worker streams.

    A work item too large to send cannot reach any worker, so it fails instead; recording that
    failure is history application, which the layer above provides through the abstract hooks.
    """

    def __init__(self, store: st.Store, max_message_bytes: int) -> None:
        super().__init__(store, max_message_bytes)
        self._work = threading.Condition(self._lock)  # worker streams wait here
        self._joined = threading.Condition(self._lock)  # calls waiting for a worker to connect wait here
        self._ready: deque[tuple[str, str, int]] = deque()
        self._streams: dict[int, Stream] = {}
        self._stream_ids = itertools.count(1)
        self._leases: dict[str, Lease] = {}
        self._boot = uuid.uuid4().hex[:8]
        self._token_seq = itertools.count(1)

    @abstractmethod
    def _fail_undeliverable(
        self, ops: list[st.Op], inst: Instance, new_events: list[Any], details: Any, now: float
    ) -> None:
        """Record ``new_events`` as delivered and fail the instance with ``details``."""

    @abstractmethod
    def _complete_activity_locked(
        self, ops: list[st.Op], inst: Instance, act: Activity, result: Any | None, failure: Any | None
    ) -> None:
        """Turn an activity's result or failure into an event for its instance."""

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
            self._joined.notify_all()
            self._release_stalls()
            log.info("worker stream %d connected from %s (%d connected)", stream.stream_id, peer, len(self._streams))
            return stream

    def _release_stalls(self) -> None:
        """A worker connected: stalled instances try their held events again (its code may be newer).

        daprd holds a stalled workflow actor until the actor is deactivated (as when the worker that stalled it
        disconnects) and then runs its inbox again; a new worker connection is the local engine's equivalent.
        """
        for inst in self._instances.values():
            if inst.stall_held:
                inst.stall_held = False
                self._maybe_enqueue(inst)

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

    # == the ready queue ===========================================================================

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

    def _orchestration_ready(self, inst: Instance, now: float) -> bool:
        if inst.terminal or inst.lease is not None or inst.stall_held or not inst.inbox:
            return False
        if inst.not_before is not None and inst.not_before > now:
            return any(ev.HasField("executionTerminated") for _, ev in inst.inbox)
        return True

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

    # == work items and leases =====================================================================

    def _new_token(self) -> str:
        return f"{self._boot}-{next(self._token_seq)}"

    def _orchestration_item(self, inst: Instance, stream: Stream, now: float) -> Any | None:
        assert inst.history is not None
        new_events = [event(now, workflowStarted=pb.WorkflowStartedEvent())]
        new_events.extend(ev for _, ev in inst.inbox)
        token = self._new_token()
        request = pb.WorkflowRequest(
            instanceId=inst.instance_id,
            executionId=sv(inst.execution_id),
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
            self._fail_undeliverable(ops, inst, new_events, details, now)
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
            workflowInstance=pb.WorkflowInstance(instanceId=inst.instance_id, executionId=sv(act.execution_id)),
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
        """The lease a result comes back under; refused unless the caller still holds it."""
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
        self._revoke(lease)
        return lease

    def _revoke(self, lease: Lease) -> None:
        """Forget a lease: its token is refused from now on and its stream no longer holds it."""
        self._leases.pop(lease.token, None)
        lease.stream.leases.pop(lease.token, None)
