"""The SagaSchedule workflow: one scheduled time per run, then `continue_as_new` with what it carries.

Each run computes the next scheduled time from the last one it handled (`since`, carried) and the engine's
clock, waits for it with a durable timer (racing a `spec_changed` event: an edit or suspend applies at once), and
on waking takes the LATEST scheduled time at or before now: within the starting deadline it asks the activity for
that one run (the earlier ones it jumped over are counted as missed), past it the time is missed too. So an
operator down across several scheduled times catches up once, and the run's name, fixed by its scheduled time,
makes a replay, a retried activity or a second replica land on the same run.

Nothing here reads a clock but the context's, and the history of a run holds one timer and one or two
activities, whatever the schedule's age. As in the monitor, a run ends after an activity's result, never right
after its timer fired (see workflows.monitor).
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime, timedelta
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, when_any
from dapr.ext.workflow import RetryPolicy as EngineRetry
from dapr.ext.workflow._durabletask.task import TaskFailedError
from pydantic import field_serializer

from steadfast.api.common import Condition
from steadfast.api.duration import parse_duration
from steadfast.api.schedule import SagaScheduleSpec, SagaScheduleStatus, run_name
from steadfast.conditions import State, conditions
from steadfast.records import Actor, Record, WorkflowInput, compact
from steadfast.schedules.cron import CronError, parse
from steadfast.schedules.records import FIRE, LOOK, FireRequest, FireResult, LookRequest
from steadfast.workflows.common import Reporter, second, stamp, utc

NAME = "steadfast.sagaschedule"
SPEC_CHANGED = "spec_changed"
# Missed times are counted one by one up to this many per wake (a 1 s schedule after a day down: 86,400).
MAX_COUNTED = 10_000
# How often a schedule with active runs looks whether they finished, between two scheduled times (a list call).
LOOK_EVERY = 30
FIRE_RETRY = EngineRetry(
    first_retry_interval=timedelta(seconds=1),
    max_number_of_attempts=6,
    backoff_coefficient=2,
    max_retry_interval=timedelta(seconds=30),
)


class ScheduleState(Record):
    """What one run hands the next."""

    since: datetime | None = None  # the last scheduled time handled (or when the schedule started/resumed)
    last_schedule_time: datetime | None = None
    last_successful_time: datetime | None = None
    active: list[str] = []
    runs_created: int = 0
    missed_runs: int = 0
    skipped_runs: int = 0
    last_problem: str | None = None
    refused: bool = False  # the last due run was refused (no creator, or RBAC): needs a person
    continued_as_new: int = 0
    seq: int = 0
    shown_next: datetime | None = None
    shown_generation: int = 0
    conditions: list[Condition] = []


class ScheduleInput(WorkflowInput[SagaScheduleSpec]):
    state: ScheduleState | None = None
    # While runs are active and the next time is further off, look at them this often (status.active): in the
    # input, not read from a clock or the environment, so a replay takes the same path.
    look_every: int = LOOK_EVERY


class SpecChange(Record):
    """The `spec_changed` event: the edited spec, its generation and who edited it (the runs' creator from then)."""

    spec: SagaScheduleSpec
    generation: int | None = None
    actor: Actor | None = None

    @field_serializer("spec")
    def _spec(self, spec: SagaScheduleSpec) -> Any:
        return compact(spec)


def schedule_workflow(ctx: DaprWorkflowContext, inp: dict[str, Any]) -> Generator[Any, Any, None]:
    given = ScheduleInput.model_validate(inp)
    spec = given.spec
    state = given.state or ScheduleState()
    reporter = Reporter(ctx, given, seq=state.seq)
    changed = ctx.wait_for_external_event(SPEC_CHANGED)
    now = utc(ctx.current_utc_datetime)
    if state.since is None:
        state.since = now  # times before the schedule existed are not owed

    if spec.suspend:
        yield from _report(reporter, state, None, "ready", "Suspended", "no runs while spec.suspend is true")
        data = yield changed
        state.since = max(utc(state.since), utc(ctx.current_utc_datetime))  # times while suspended are not owed
        _continue(ctx, given, state, data)
        return

    try:
        cron = parse(spec.schedule, spec.time_zone)
        due = cron.next_after(utc(state.since))
    except CronError as exc:  # admission refuses these; a time zone the operator's tz database lacks gets here
        yield from _report(reporter, state, None, "stalled", "InvalidSchedule", f"spec.schedule: {exc}")
        _continue(ctx, given, state, (yield changed))
        return

    if due > now:
        if state.shown_next != second(due) or state.shown_generation != given.generation:
            yield from _report(reporter, state, due, "ready", "Scheduled", f"next run at {stamp(due)}")
        wake = due
        if state.active and given.look_every > 0:  # look at the active runs before then (status.active)
            wake = min(due, now + timedelta(seconds=given.look_every))
        timer = ctx.create_timer(wake.replace(tzinfo=None))  # the SDK works in naive UTC
        winner = yield when_any([timer, changed])
        if winner is changed:
            if utc(ctx.current_utc_datetime) < due:  # nothing was owed yet: a new schedule counts from now
                state.since = max(utc(state.since), utc(ctx.current_utc_datetime))
            _continue(ctx, given, state, changed.get_result())
            return
        now = utc(ctx.current_utc_datetime)
        if now < due:
            yield from _look(reporter, state, due)
            _continue(ctx, given, state, changed.get_result() if changed.is_complete else None)
            return

    latest = cron.latest_at_or_before(now)
    if latest <= utc(state.since):  # woken early (not expected of a durable timer): nothing is due yet
        yield from _report(reporter, state, due, *_health(state))  # end after an activity, not the timer
        _continue(ctx, given, state, changed.get_result() if changed.is_complete else None)
        return
    jumped = cron.count_between(utc(state.since), latest, MAX_COUNTED)
    if jumped:
        state.missed_runs += jumped
        reporter.event("RunMissed", f"{jumped} scheduled time(s) before {stamp(latest)} got no run (caught up once)")
    state.since = latest
    was_refused = state.last_problem if state.refused else None  # said once, not at every scheduled time
    state.refused = False
    deadline = parse_duration(spec.starting_deadline) if spec.starting_deadline else None
    if deadline is not None and now - latest > deadline:
        state.missed_runs += 1
        state.last_problem = f"the run for {stamp(latest)} could not start within startingDeadline"
        reporter.event("RunMissed", f"{state.last_problem} ({spec.starting_deadline})", warning=True)
    elif given.actor is None:
        _refuse(
            reporter,
            state,
            "no creator recorded by Steadfast's admission webhook: runs are created only as the schedule's creator",
            was_refused,
        )
    else:
        yield from _fire(reporter, spec, state, given.actor, latest, was_refused)
    nxt = cron.next_after(latest)
    yield from _report(reporter, state, nxt, *_health(state))
    _continue(ctx, given, state, changed.get_result() if changed.is_complete else None)


def _look(reporter: Reporter, state: ScheduleState, due: datetime) -> Generator[Any, Any, None]:
    """Between two scheduled times: which runs are still active, and the last success; reported if changed."""
    try:
        raw = yield reporter.ctx.call_activity(
            LOOK, input=LookRequest(ref=reporter.ref).wire(), retry_policy=FIRE_RETRY
        )
    except TaskFailedError:
        return  # the next look or scheduled time tries again
    result = FireResult.model_validate(raw or {})
    last = result.last_successful or state.last_successful_time
    if result.active == state.active and last == state.last_successful_time:
        return
    state.active = result.active
    state.last_successful_time = last
    yield from _report(reporter, state, due, *_health(state))


def _refuse(reporter: Reporter, state: ScheduleState, problem: str, was: str | None) -> None:
    """Record a refused run; the Warning Event only when the reason is new (a refused schedule every second
    would otherwise post an Event every second)."""
    state.last_problem = problem
    state.refused = True
    if problem != was:
        reporter.event("RunRefused", problem, warning=True)


def _fire(
    reporter: Reporter,
    spec: SagaScheduleSpec,
    state: ScheduleState,
    actor: Actor,
    scheduled: datetime,
    was_refused: str | None,
) -> Generator[Any, Any, None]:
    """Ask the activity for the run of `scheduled`, and record what became of it."""
    ref = reporter.ref
    name = run_name(ref.name, scheduled)
    request = FireRequest(
        ref=ref,
        actor=actor,
        scheduled=scheduled,
        run=name,
        policy=spec.concurrency_policy,
        template=compact(spec.saga_template),
        successful_limit=spec.successful_runs_history_limit,
        failed_limit=spec.failed_runs_history_limit,
    )
    try:
        raw = yield reporter.ctx.call_activity(FIRE, input=request.wire(), retry_policy=FIRE_RETRY)
    except TaskFailedError as exc:
        state.last_problem = f"the run for {stamp(scheduled)} could not be created: {exc}"
        reporter.event("RunFailed", state.last_problem, warning=True)
        return
    result = FireResult.model_validate(raw or {})
    state.last_schedule_time = scheduled if result.created else state.last_schedule_time
    state.active = result.active
    state.last_successful_time = result.last_successful or state.last_successful_time
    if result.replaced:
        reporter.event("RunReplaced", f"deleted active run(s) {', '.join(result.replaced)} (Replace)")
    if result.skipped:
        state.skipped_runs += 1
        state.last_problem = f"skipped the run for {stamp(scheduled)}: run(s) still active (Forbid)"
        reporter.event("RunSkipped", f"{state.last_problem}: {', '.join(result.active)}")
    elif result.problem:
        _refuse(reporter, state, result.problem, was_refused)
    else:
        state.runs_created += 1
        state.last_problem = None
        reporter.event("RunCreated", f"created run {name} for {stamp(scheduled)}")


def _health(state: ScheduleState) -> tuple[State, str, str]:
    if state.refused:
        return "stalled", "RunRefused", state.last_problem or "the last run was refused"
    return "ready", "Scheduled", state.last_problem or "runs are created on schedule"


def _report(
    reporter: Reporter, state: ScheduleState, nxt: datetime | None, health: State, reason: str, message: str
) -> Generator[Any, Any, None]:
    state.conditions = conditions(
        health,
        reason=reason,
        message=message,
        generation=reporter.generation,
        now=reporter.now,
        previous=state.conditions,
    )
    status = SagaScheduleStatus(
        last_schedule_time=second(state.last_schedule_time) if state.last_schedule_time else None,
        next_schedule_time=second(nxt) if nxt else None,
        last_successful_time=second(state.last_successful_time) if state.last_successful_time else None,
        active=state.active,
        active_count=len(state.active),
        runs_created=state.runs_created,
        missed_runs=state.missed_runs,
        skipped_runs=state.skipped_runs,
        last_problem=state.last_problem,
        observed_generation=reporter.generation,
        workflow_instance_id=reporter.ctx.instance_id,
        conditions=state.conditions,
    )
    yield reporter.report(status)
    state.seq = reporter.seq
    state.shown_next = second(nxt) if nxt else None
    state.shown_generation = reporter.generation


def _continue(ctx: DaprWorkflowContext, given: ScheduleInput, state: ScheduleState, change: Any) -> None:
    """Hand the state to a fresh run; a changed spec (its generation, its editor) replaces the old one."""
    state.continued_as_new += 1
    nxt = given.model_copy(update={"state": state})
    if isinstance(change, dict) and change.get("spec") is not None:
        edited = SpecChange.model_validate(change)
        generation = edited.generation if edited.generation is not None else given.generation
        if generation >= given.generation:  # a resent older change (the operator's catch-up) is ignored
            nxt = nxt.model_copy(
                update={"spec": edited.spec, "generation": generation, "actor": edited.actor or given.actor}
            )
    ctx.continue_as_new(nxt.wire(), save_events=True)
