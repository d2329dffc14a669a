"""Several workflow generators run at once in one workflow: the steps of a graph saga that are in flight.

Each lane is a generator of the kind the saga runs for one step (it yields the SDK's tasks). `Lanes.wait`
yields one `when_any` over every lane's pending task and advances the lanes whose task completed, in the
order they started: a replay sees the same history, so it advances the same lanes in the same order.

The SDK lets a pending task belong to one pending `when_any` only, so lanes cannot share the saga's
`cancel` waiter or the run's re-arm waiter (steadfast.workflows.common). Each lane gets its own stand-ins,
completed here when the real waiter fires: `stop` (its step's interrupt) and the re-arm of its LaneReporter.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from dapr.ext.workflow import when_any
from dapr.ext.workflow._durabletask.task import CompletableTask, Task

from steadfast.records import EventSpec
from steadfast.workflows.common import Reporter


def _stand_in() -> CompletableTask[Any]:
    """A task the workflow code completes itself (deterministically: when a real waiter completed)."""
    return CompletableTask()  # type: ignore[no-untyped-call]  # the SDK's constructor has no hints


class LaneReporter(Reporter):
    """The run's reporter as one lane sees it: the same snapshot numbering and queued Events, its own re-arm
    stand-in (completed by `Lanes` when the run's re-arm event arrives)."""

    def __init__(self, shared: Reporter) -> None:  # no super().__init__: the numbering lives in `shared`
        self.shared = shared
        self.ctx = shared.ctx
        self.ref = shared.ref
        self.actor = shared.actor
        self.run = shared.run
        self._rearm = None
        self._rearm_taken = None

    @property  # shared with the run's reporter
    def generation(self) -> int:
        return self.shared.generation

    @generation.setter
    def generation(self, value: int) -> None:
        self.shared.generation = value

    @property
    def seq(self) -> int:
        return self.shared.seq

    @seq.setter
    def seq(self, value: int) -> None:
        self.shared.seq = value

    @property
    def pending_events(self) -> list[EventSpec]:
        return self.shared.pending_events

    @pending_events.setter
    def pending_events(self, value: list[EventSpec]) -> None:
        self.shared.pending_events = value

    def rearm(self) -> Any:
        if self._rearm is None or self._rearm.is_complete:
            self._rearm = _stand_in()
        return self._rearm

    def fire_rearm(self) -> None:
        """The run's re-arm event arrived: this lane's waiter fires (one made fired if none is pending)."""
        if self._rearm is None or self._rearm.is_complete:
            self._rearm = _stand_in()
        self._rearm.complete(None)


Lane = Callable[[Any, LaneReporter], Generator[Any, Any, Any]]


@dataclass
class _Running:
    gen: Generator[Any, Any, Any]
    stop: CompletableTask[Any]
    reporter: LaneReporter
    task: Task[Any] | None = None
    result: Any = None
    ended: bool = False


class Lanes:
    """Generators in flight, by key; `cancel` (the saga's waiter, or None) stops them as it would one step."""

    def __init__(self, reporter: Reporter, cancel: Any = None) -> None:
        self.reporter = reporter
        self.cancel = cancel
        self.live: dict[str, _Running] = {}

    def __len__(self) -> int:
        return len(self.live)

    def __contains__(self, key: object) -> bool:
        return key in self.live

    def start(self, key: str, lane: Lane) -> list[tuple[str, Any]]:
        """Start `lane(stop, reporter)` and run it to its first pending task; [(key, result)] if it ended at once."""
        stop = _stand_in()
        reporter = LaneReporter(self.reporter)
        running = _Running(lane(stop, reporter), stop, reporter)
        if self.cancel is not None and self.cancel.is_complete:
            stop.complete(None)
        self._advance(running, None)
        if running.ended:
            return [(key, running.result)]
        self.live[key] = running
        return []

    def wait(self) -> Generator[Any, Any, list[tuple[str, Any]]]:
        """Wait until at least one lane ends: [(key, what it returned)], in the order the lanes started."""
        ended: list[tuple[str, Any]] = []
        while not ended and self.live:
            tasks: list[Any] = [r.task for r in self.live.values()]
            cancel = self.cancel if self.cancel is not None and not self.cancel.is_complete else None
            rearm = self.reporter.rearm()
            yield when_any([*tasks, *([cancel] if cancel is not None else []), rearm])
            if cancel is not None and cancel.is_complete:
                for running in self.live.values():
                    if not running.stop.is_complete:
                        running.stop.complete(None)
            if rearm.is_complete:
                self.reporter.took_rearm(rearm)
                for running in self.live.values():
                    running.reporter.fire_rearm()
            for key, running in list(self.live.items()):
                if running.task is not None and running.task.is_complete:
                    self._advance(running, running.task)
                if running.ended:
                    del self.live[key]
                    ended.append((key, running.result))
        return ended

    @staticmethod
    def _advance(running: _Running, done: Task[Any] | None) -> None:
        """Feed `done`'s result (or failure) to the lane, and on until it yields a task still pending or ends."""
        while True:
            try:
                if done is None:
                    nxt = next(running.gen)
                elif done.is_failed:
                    nxt = running.gen.throw(done.get_exception())
                else:
                    nxt = running.gen.send(done.get_result())
            except StopIteration as end:
                running.ended, running.result, running.task = True, end.value, None
                return
            if not nxt.is_complete:
                running.task = nxt
                return
            done = nxt
