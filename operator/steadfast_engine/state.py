"""What the engine's parts share: the instance records, the one lock and the state it guards.

The engine is split by concern (:mod:`.dispatch` hands work to workers, :mod:`.history` applies
their results, :mod:`.core` is the facade clients call), but it is one state machine: every part
reads and changes the same instances under the same lock, and queues each change to the store in
the same critical section. :class:`EngineState` is that common ground; the parts are layered on it.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

import grpc

from . import store as st
from .protos import TERMINAL_STATUSES, pb, timestamp, wrappers_pb2


class EngineError(Exception):
    """A request the engine refuses; carries the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> EngineError:
    return EngineError(grpc.StatusCode.INVALID_ARGUMENT, message)


def sv(text: str | None) -> Any:
    return wrappers_pb2.StringValue(value=text) if text is not None else None


def event(now: float, event_id: int = -1, **kind: Any) -> Any:
    return pb.HistoryEvent(eventId=event_id, timestamp=timestamp(now), **kind)


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
    stall_held: bool = False  # stalled by its worker: not dispatched again until a worker connects

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in st.INSTANCE_COLUMNS}


class EngineState:
    """The state every part of the engine reads and changes, all of it guarded by ``_lock``.

    Besides the data it holds the two wake-ups more than one part raises: a due time for the timer
    thread (:meth:`_push_heap`) and a status change for waiting clients (:meth:`_notify_watchers`).
    """

    def __init__(self, store: st.Store, max_message_bytes: int) -> None:
        self.store = store
        self.max_message_bytes = max_message_bytes
        self._lock = threading.Lock()
        self._sched = threading.Condition(self._lock)  # the timer thread waits here
        self._watchers: dict[str, tuple[threading.Condition, int]] = {}
        self._instances: dict[str, Instance] = {}
        self._children: dict[str, set[str]] = {}
        self._heap: list[tuple[float, int, str, str, int, str]] = []
        self._heap_seq = itertools.count()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(grpc.StatusCode.UNAVAILABLE, "the engine is shutting down")

    def _push_heap(self, when: float, kind: str, iid: str, timer_id: int, execution_id: str) -> None:
        entry = (when, next(self._heap_seq), kind, iid, timer_id, execution_id)
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._sched.notify()

    def _notify_watchers(self, iid: str) -> None:
        entry = self._watchers.get(iid)
        if entry is not None:
            entry[0].notify_all()
