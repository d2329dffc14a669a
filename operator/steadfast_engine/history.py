"""History application: a worker's results become history, inbox messages, timers and new instances.

An orchestration result moves the delivered inbox events into history, then applies the worker's
actions in order: activities to schedule, timers, child and detached instances, events to send,
completion, continue-as-new. A finished instance drops its pending work and tells its parent. Every
change is queued to the store as ops in the same critical section that makes it in memory.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

from . import store as st
from . import versioning
from .dispatch import Dispatch
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
    to_epoch,
)
from .state import Activity, Instance, event, invalid, sv

log = logging.getLogger("steadfast.engine")

# Timers at or beyond this are "never" (the SDK's indefinite-wait sentinel is 9999-12-31).
_NEVER = 253402300799.0 - 86400 * 365


class HistoryApplication(Dispatch):
    """Applies workers' results to instances; the dispatch layer below hands out the work."""

    def __init__(self, store: st.Store, max_message_bytes: int) -> None:
        super().__init__(store, max_message_bytes)
        self._inbox_seq = itertools.count(1)

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
            ev = event(
                now,
                taskFailed=pb.TaskFailedEvent(
                    taskScheduledId=act.task_id, failureDetails=failure, taskExecutionId=exec_id
                ),
            )
        else:
            ev = event(
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
            if res.HasField("version") and lease.new_events:
                versioning.record(lease.new_events[0], res.version)
            stalled = versioning.stall(inst.history, lease.new_events, actions)
            if stalled is not None:
                self._stall(ops, inst, stalled, now)
                return self.store.submit(ops)
            for seq in lease.inbox_seqs:
                ops.append(st.op_inbox_delete(inst.instance_id, seq))
            inst.inbox = remaining
            versioning.compact(inst.history, lease.new_events)
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

    def _stall(self, ops: list[st.Op], inst: Instance, why: tuple[int, str], now: float) -> None:
        """The worker's code is older than the history: keep the turn's events for later, record why, hold.

        As daprd does, the refused turn leaves no trace but one ``executionStalled`` event (not repeated while
        the reason stays the same), and the instance is not dispatched again until a worker connects.
        """
        assert inst.history is not None
        reason, description = why
        last = inst.history[-1] if inst.history else None
        if last is None or not last.HasField("executionStalled") or last.executionStalled.description != description:
            stalled = pb.ExecutionStalledEvent(reason=reason, description=description)
            self._append_history(ops, inst, event(now, executionStalled=stalled))
        inst.stall_held = True
        self._set_status(ops, inst, STALLED, now)
        ops.append(st.op_upsert_instance(inst.row()))
        log.warning("instance %s stalled: %s", inst.instance_id, description)

    def _validate_actions(self, actions: Iterable[Any]) -> None:
        for action in actions:
            kind = action.WhichOneof("workflowActionType")
            if kind is None:
                raise invalid(f"action {action.id} has no type")
            if kind == "scheduleTask" and not action.scheduleTask.name:
                raise invalid(f"action {action.id}: activity name must not be empty")
            if kind == "createChildWorkflow" and not action.createChildWorkflow.name:
                raise invalid(f"action {action.id}: child workflow name must not be empty")
            if kind == "sendEvent" and not action.sendEvent.instance.instanceId:
                raise invalid(f"action {action.id}: target instance ID must not be empty")
            if kind == "createDetachedWorkflow" and not action.createDetachedWorkflow.name:
                raise invalid(f"action {action.id}: workflow name must not be empty")

    def _apply_action(self, ops: list[st.Op], inst: Instance, action: Any, now: float, status: int) -> int:
        iid = inst.instance_id
        kind = action.WhichOneof("workflowActionType")
        router = action.router if action.HasField("router") else None
        if kind == "scheduleTask":
            a = action.scheduleTask
            ev = event(
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
            self._append_history(ops, inst, event(now, action.id, timerCreated=created, router=router))
            fire_at = to_epoch(t.fireAt)
            if fire_at < _NEVER:
                fired = event(now, timerFired=pb.TimerFiredEvent(fireAt=t.fireAt, timerId=action.id))
                inst.timers[action.id] = fire_at
                ops.append(st.op_timer_add(iid, action.id, inst.execution_id, fire_at, fired.SerializeToString()))
                self._push_heap(fire_at, "timer", iid, action.id, inst.execution_id)
        elif kind == "createChildWorkflow":
            c = action.createChildWorkflow
            child_id = c.instanceId or f"{iid}:{action.id:04x}"
            self._append_history(
                ops,
                inst,
                event(
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
                workflowInstance=pb.WorkflowInstance(instanceId=child_id, executionId=sv(uuid.uuid4().hex)),
                parentInstance=pb.ParentInstanceInfo(
                    taskScheduledId=action.id,
                    name=sv(inst.name),
                    workflowInstance=pb.WorkflowInstance(instanceId=iid, executionId=sv(inst.execution_id)),
                ),
            )
            taken = self._id_taken(child_id)
            if taken:
                details = pb.TaskFailureDetails(errorType="WorkflowInstanceAlreadyExists", errorMessage=taken)
                failed = event(
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
                event(
                    now,
                    action.id,
                    eventSent=pb.EventSentEvent(instanceId=s.instance.instanceId, name=s.name, input=data),
                    router=router,
                ),
            )
            self._deliver(
                ops, s.instance.instanceId, event(now, eventRaised=pb.EventRaisedEvent(name=s.name, input=data))
            )
        elif kind == "terminateWorkflow":
            t = action.terminateWorkflow
            reason = t.reason if t.HasField("reason") else None
            self._deliver(
                ops,
                t.instanceId,
                event(now, executionTerminated=pb.ExecutionTerminatedEvent(input=reason, recurse=t.recurse)),
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
            self._append_history(ops, inst, event(now, action.id, executionCompleted=completed, router=router))
            inst.output = c.result.value if c.HasField("result") else None
            inst.failure = c.failureDetails.SerializeToString() if c.HasField("failureDetails") else None
            return int(c.workflowStatus)
        elif kind == "createDetachedWorkflow":
            d = action.createDetachedWorkflow
            target = d.instanceId or uuid.uuid4().hex
            self._append_history(
                ops,
                inst,
                event(
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
                    workflowInstance=pb.WorkflowInstance(instanceId=target, executionId=sv(uuid.uuid4().hex)),
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
        carried = [event(now, executionStarted=started), *action.carryoverEvents]
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

    # == finishing =================================================================================

    def _fail_undeliverable(
        self, ops: list[st.Op], inst: Instance, new_events: list[Any], details: Any, now: float
    ) -> None:
        """Commit the events of a work item no worker can receive, then fail the instance with ``details``."""
        assert inst.history is not None
        inst.history.extend(new_events)
        for ev in new_events:
            self._history_op(ops, inst, ev)
        self._clear_inbox(ops, inst)
        self._append_history(
            ops,
            inst,
            event(now, executionCompleted=pb.ExecutionCompletedEvent(workflowStatus=FAILED, failureDetails=details)),
        )
        inst.failure = details.SerializeToString()
        self._set_status(ops, inst, FAILED, now)
        self._finish(ops, inst, now, terminate_children=False)
        ops.append(st.op_upsert_instance(inst.row()))

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
                    ev = event(
                        now,
                        childWorkflowInstanceCompleted=pb.ChildWorkflowInstanceCompletedEvent(
                            taskScheduledId=task_id, result=sv(inst.output)
                        ),
                    )
                else:
                    details = pb.TaskFailureDetails()
                    if inst.failure:
                        details.ParseFromString(inst.failure)
                    ev = event(
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
                        event(
                            now,
                            executionTerminated=pb.ExecutionTerminatedEvent(input=sv(inst.output), recurse=True),
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
        """Forget activities and timers; revoking a lease makes a late result from its worker refused."""
        for act in inst.activities.values():
            if act.lease is not None:
                self._revoke(act.lease)
        inst.activities.clear()
        inst.timers.clear()
        ops.append(st.op_activities_clear(inst.instance_id))
        ops.append(st.op_timers_clear(inst.instance_id))

    def _clear_inbox(self, ops: list[st.Op], inst: Instance) -> None:
        if inst.inbox:
            inst.inbox = []
            ops.append(st.op_inbox_clear(inst.instance_id))

    # == instances and inboxes =====================================================================

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
        self._deliver(ops, iid, event(now, executionStarted=started))

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

    # == history and status ========================================================================

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
