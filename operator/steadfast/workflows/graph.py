"""A saga whose steps declare dependsOn: ready steps run at once; compensations in reverse dependency order.

Steps start, in spec order, once every step they depend on has succeeded (or was skipped by a person), at
most `spec.parallelism` at a time. When one fails, no new step starts; the steps in flight finish and their
results are recorded (a success among them is undone too). Then, with onFailure Pause, the saga pauses at the
failed step (Retry runs it again, Skip lets its dependents run, Compensate undoes); else it compensates.

A completed step's compensation starts once the compensations of every completed step that depends on it,
directly or through other completed steps, have finished (succeeded or failed: the others still run, as in
order); independent ones run at once. Deleting the saga stops its steps as it stops one (the attempts in flight
finish, no retry starts, a Kubernetes wait stops) and compensates the same way.

Chosen by the spec (steadfast.api.saga.TaskSagaSpec.is_graph), so sagas in order never take this path.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from steadfast.api.repair import RepairAction
from steadfast.api.saga import (
    CompensationPhase,
    CompensationStatus,
    SagaPhase,
    Step,
    StepPhase,
    dependencies,
)
from steadfast.repair.rules import RepairEvent
from steadfast.workflows.lanes import LaneReporter, Lanes

if TYPE_CHECKING:
    from steadfast.workflows.saga import _Saga

Pause = Callable[["_Saga", Step, Any], Generator[Any, Any, RepairEvent | str]]
DELETED = "the TaskSaga was deleted while running"
_DONE = (StepPhase.SUCCEEDED, StepPhase.SKIPPED)


def run_steps(saga: _Saga, cancel: Any, *, pause: Pause | None) -> Generator[Any, Any, tuple[str | None, list[Step]]]:
    """Run the steps as their dependencies allow: (the error that stops the saga or None, the steps to undo in
    the order they completed)."""
    spec = saga.spec
    needs = dependencies(spec)
    records = {r.name: r for r in saga.state.steps}
    limit = spec.parallelism or len(spec.steps)
    lanes = Lanes(saga.reporter, cancel)
    done: list[Step] = []
    failed: list[Step] = []  # failed steps not yet acted on, in the order they ended
    by_name = {s.name: s for s in spec.steps}

    def start(step: Step) -> list[tuple[str, Any]]:
        record = records[step.name]

        def lane(stop: Any, reporter: LaneReporter) -> Generator[Any, Any, bool]:
            return (
                yield from saga.run(
                    step, record, compensation=False, cancel=stop, earlier=record.attempts, reporter=reporter
                )
            )

        return lanes.start(step.name, lane)

    def ended(results: list[tuple[str, Any]]) -> None:
        for name, ok in results:
            (done if ok else failed).append(by_name[name])

    stale = False  # a step ended and no snapshot has shown it yet
    while True:
        if not failed and not cancel.is_complete:
            for step in spec.steps:
                if len(lanes) >= limit:
                    break
                ready = all(records[d].phase in _DONE for d in needs[step.name])
                if ready and records[step.name].phase == StepPhase.PENDING and step.name not in lanes:
                    stale = False  # the new step's first snapshot shows it
                    ended(start(step))
        if lanes:
            if stale:
                yield saga.reporter.report(saga.status())
            ended((yield from lanes.wait()))
            stale = True
            continue
        if failed:
            step = failed.pop(0)
            record = records[step.name]
            failure = f"step {step.name} failed: {record.message or ''}"
            decided: RepairEvent | str = DELETED if cancel.is_complete else failure
            if pause is not None and not cancel.is_complete:
                decided = yield from pause(saga, step, cancel)
            if isinstance(decided, RepairEvent) and decided.action == RepairAction.RETRY:
                saga.phase = SagaPhase.RUNNING
                ended(start(step))
                continue
            if step.compensation is None and step.name in saga.undo:
                done.append(step)  # its apply happened (its wait failed): undo that too
            if isinstance(decided, RepairEvent) and decided.action == RepairAction.SKIP:
                saga.phase = SagaPhase.RUNNING
                record.phase = StepPhase.SKIPPED
                record.message = f"skipped by {decided.user}: {decided.reason} (it had failed: {record.message})"
                yield saga.reporter.report(saga.status())
                continue
            for other in failed:  # siblings that failed as well: an apply of theirs that happened is undone too
                if other.compensation is None and other.name in saga.undo:
                    done.append(other)
            if isinstance(decided, RepairEvent):
                return f"{failure}; compensating on {decided.user}'s decision", done
            return decided, done
        if cancel.is_complete and any(r.phase not in _DONE for r in records.values()):
            return DELETED, done
        return None, done


def blockers(saga: _Saga, to_undo: list[Step]) -> dict[str, set[str]]:
    """For each step to undo, the steps to undo whose compensation must finish first: those that depend on it,
    directly or through other completed steps."""
    needs = dependencies(saga.spec)
    completed = {r.name for r in saga.state.steps if r.phase in _DONE} | {s.name for s in to_undo}
    dependents: dict[str, set[str]] = {name: set() for name in needs}
    for name, deps in needs.items():
        for dep in deps:
            dependents[dep].add(name)
    undoing = {s.name for s in to_undo}
    out: dict[str, set[str]] = {}
    for step in to_undo:
        found: set[str] = set()
        todo = [d for d in dependents[step.name] if d in completed]
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                todo.extend(d for d in dependents[name] if d in completed)
        out[step.name] = found & undoing
    return out


def compensate(saga: _Saga, to_undo: list[Step]) -> Generator[Any, Any, int]:
    """Undo `to_undo` in reverse dependency order, independent ones at once: how many compensations failed."""
    waits = blockers(saga, to_undo)
    limit = saga.spec.parallelism or len(saga.spec.steps)
    lanes = Lanes(saga.reporter)  # compensations always finish: a deletion does not stop them
    left = list(to_undo)  # newest first: among ready ones, the later completed starts first
    finished: set[str] = set()
    failed = 0

    def start(step: Step) -> list[tuple[str, Any]]:
        undo = CompensationStatus(step=step.name, phase=CompensationPhase.RUNNING)
        saga.state.compensations.append(undo)

        def lane(_stop: Any, reporter: LaneReporter) -> Generator[Any, Any, bool]:
            return (yield from saga.run(step, undo, compensation=True, reporter=reporter))

        return lanes.start(step.name, lane)

    stale = False
    while left or lanes:
        for step in list(left):
            if len(lanes) >= limit:
                break
            if waits[step.name] <= finished:
                stale = False
                left.remove(step)
                for name, ok in start(step):
                    finished.add(name)
                    failed += 0 if ok else 1
        if not lanes:
            continue
        if stale:
            yield saga.reporter.report(saga.status())
        for name, ok in (yield from lanes.wait()):
            finished.add(name)
            failed += 0 if ok else 1
        stale = True
    return failed
