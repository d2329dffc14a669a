"""The HealthMonitor workflow: one sleep and one check per run, then `continue_as_new` with the carried state.

A `while True` loop would grow the instance's history for as long as the monitor lives (months); each
run here holds a sleep, one check and one report, and hands the counters to the next run. The sleep
races a `spec_changed` event, so an edited spec (a shorter interval, a new target, suspend) applies at
once instead of after the old interval.

A run ends after an activity's result, not straight after its timer fired: daprd 1.18 keeps a fired
timer in memory only, and when its worker vanishes while the next run starts (an operator restart) it
saves that run with an inbox entry it never wrote; the instance then cannot load again."""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, when_any
from pydantic import field_serializer

from steadfast.api.common import Condition
from steadfast.api.duration import parse_duration
from steadfast.api.monitor import HealthMonitorSpec, HealthMonitorStatus, MonitorPhase
from steadfast.conditions import State, conditions
from steadfast.records import Actor, Record, WorkflowInput, compact
from steadfast.workflows.common import Reporter, run_action, second, utc

NAME = "steadfast.healthmonitor"
SPEC_CHANGED = "spec_changed"


class MonitorState(Record):
    """What one run hands the next: the seed's fields plus what status needs to survive a new run.

    Field names are those of the first release's carried dict, so a monitor started by it continues.
    """

    job_id: str
    is_healthy: bool | None = None
    check_count: int = 0
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    alerts_sent: int = 0
    continued_as_new: int = 0
    last_error: str | None = None
    failed_condition: str | None = None
    last_check_time: datetime | None = None  # whole seconds, as status shows it
    last_check_at: datetime | None = None  # exact, for the next due time
    last_transition_time: datetime | None = None
    seq: int = 0  # the last status snapshot's number, so a new run's snapshots are newer
    shown_next: datetime | None = None  # the nextCheckTime status shows, so a run does not report it twice
    conditions: list[Condition] = []


class MonitorInput(WorkflowInput[HealthMonitorSpec]):
    state: MonitorState | None = None


class SpecChange(Record):
    """The `spec_changed` event: the edited spec and its generation."""

    spec: HealthMonitorSpec
    generation: int | None = None
    actor: Actor | None = None  # who last edited the spec (admission restamps it): checks act as them

    @field_serializer("spec")
    def _spec(self, spec: HealthMonitorSpec) -> Any:
        return compact(spec)


_CONDITION_STATE: dict[MonitorPhase, State] = {
    MonitorPhase.HEALTHY: "ready",
    MonitorPhase.SUSPENDED: "ready",
    MonitorPhase.UNHEALTHY: "progressing",
    MonitorPhase.UNKNOWN: "progressing",
}


def _phase(spec: HealthMonitorSpec, state: MonitorState) -> MonitorPhase:
    if spec.suspend:
        return MonitorPhase.SUSPENDED
    if state.is_healthy is None:
        return MonitorPhase.UNKNOWN
    return MonitorPhase.HEALTHY if state.is_healthy else MonitorPhase.UNHEALTHY


def _status(
    reporter: Reporter, spec: HealthMonitorSpec, state: MonitorState, next_check: datetime | None
) -> HealthMonitorStatus:
    phase = _phase(spec, state)
    message = {
        MonitorPhase.HEALTHY: "target is healthy",
        MonitorPhase.SUSPENDED: "checks are suspended",
        MonitorPhase.UNHEALTHY: f"target is unhealthy: {state.last_error or ''}",
        MonitorPhase.UNKNOWN: "waiting for the first verdict",
    }[phase]
    state.conditions = conditions(
        _CONDITION_STATE[phase],
        reason=phase.value,
        message=message,
        generation=reporter.generation,
        now=reporter.now,
        previous=state.conditions,
    )
    return HealthMonitorStatus(
        phase=phase,
        healthy=state.is_healthy,
        check_count=state.check_count,
        consecutive_failures=state.consecutive_failures,
        consecutive_successes=state.consecutive_successes,
        last_check_time=state.last_check_time,
        next_check_time=second(next_check) if next_check else None,
        last_transition_time=state.last_transition_time,
        last_error=state.last_error,
        failed_condition=state.failed_condition,
        alerts_sent=state.alerts_sent,
        continued_as_new=state.continued_as_new,
        observed_generation=reporter.generation,
        workflow_instance_id=reporter.ctx.instance_id,
        conditions=state.conditions,
    )


def _check(reporter: Reporter, spec: HealthMonitorSpec, state: MonitorState) -> Generator[Any, Any, None]:
    """One check, its counters and, on a transition, the alert."""
    number = state.check_count + 1
    outcome, _ = yield from run_action(
        reporter,
        spec.target,
        key_parts=("check", str(number)),
        retry=None,
        timeout=None,
        snapshot=lambda attempt: None,
        variables={"monitor": _variables(reporter, state, number)},
        conditions=spec.conditions,
        wait=False,  # a Kubernetes target is judged as it is now
    )
    state.failed_condition = outcome.failed_condition
    state.check_count = number
    state.last_check_time = second(reporter.now)
    state.last_check_at = utc(reporter.now)
    was = state.is_healthy
    if outcome.ok:
        state.consecutive_successes += 1
        state.consecutive_failures = 0
        state.last_error = None
        if was is not True and state.consecutive_successes >= spec.success_threshold:
            state.is_healthy = True
    else:
        state.consecutive_failures += 1
        state.consecutive_successes = 0
        state.last_error = outcome.message
        if was is not False and state.consecutive_failures >= spec.failure_threshold:
            state.is_healthy = False
    now_state = state.is_healthy
    if now_state == was:
        return
    state.last_transition_time = second(reporter.now)
    if now_state is False:
        yield from _alert(reporter, spec, state, "unhealthy", warning=True)
    elif was is False:
        yield from _alert(reporter, spec, state, "healthy", warning=False)
    else:
        reporter.event("Healthy", "first check: target is healthy")


def _variables(reporter: Reporter, state: MonitorState, number: int) -> dict[str, Any]:
    """What the monitor's placeholders see as `monitor`."""
    return {
        "name": reporter.ref.name,
        "namespace": reporter.ref.namespace,
        "checkCount": number,
        "healthy": state.is_healthy,
        "consecutiveFailures": state.consecutive_failures,
    }


def _alert(
    reporter: Reporter, spec: HealthMonitorSpec, state: MonitorState, new: str, *, warning: bool
) -> Generator[Any, Any, None]:
    severity = spec.alert.severity.value if spec.alert else "warning"
    if warning:
        reporter.event(
            "Unhealthy",
            f"target became unhealthy after {state.consecutive_failures} failed check(s): {state.last_error}",
            warning=True,
        )
    else:
        reporter.event("Recovered", f"target is healthy again after {state.consecutive_successes} check(s)")
    alert = spec.alert
    if alert is None or alert.webhook is None or (not warning and not alert.send_on_recovery):
        return
    body = {
        "monitor": reporter.ref.name,
        "namespace": reporter.ref.namespace,
        "state": new,
        "severity": severity,
        "lastError": state.last_error,
        "checkCount": state.check_count,
    }
    webhook = alert.webhook.model_copy(deep=True)
    if webhook.http is not None and webhook.http.body is None:
        webhook.http = webhook.http.model_copy(update={"body": body})
    outcome, _ = yield from run_action(
        reporter,
        webhook,
        key_parts=("alert", str(state.check_count), new),
        retry=None,
        timeout=None,
        snapshot=lambda attempt: None,
        variables={
            "monitor": _variables(reporter, state, state.check_count),
            "alert": {"state": new, "severity": severity, "lastError": state.last_error},
        },
    )
    if outcome.ok:
        state.alerts_sent += 1
    else:
        reporter.event("AlertFailed", f"alert webhook failed: {outcome.message}", warning=True)


def monitor_workflow(ctx: DaprWorkflowContext, inp: dict[str, Any]) -> Generator[Any, Any, None]:
    given = MonitorInput.model_validate(inp)
    spec = given.spec
    state = given.state or MonitorState(job_id=ctx.instance_id)
    reporter = Reporter(ctx, given, seq=state.seq)
    changed = ctx.wait_for_external_event(SPEC_CHANGED)

    if spec.suspend:
        yield from _report(reporter, spec, state, None)
        data = yield changed
        _continue(ctx, given, state, data)
        return

    now = utc(ctx.current_utc_datetime)
    due = _due(spec, state, now)
    if due > now:
        # Waits out the interval (or what a spec change left of it), then checks in the same run: a run
        # ends right after an activity's result, never right after its timer fired (see the module note).
        if state.shown_next != second(due):
            yield from _report(reporter, spec, state, due)
        timer = ctx.create_timer(due.replace(tzinfo=None))  # the SDK works in naive UTC
        winner = yield when_any([timer, changed])
        if winner is changed:
            _continue(ctx, given, state, changed.get_result())
            return
    yield from _check(reporter, spec, state)
    yield from _report(reporter, spec, state, _due(spec, state, utc(ctx.current_utc_datetime)))
    # A spec change that arrived during the check is in hand already; a new run would not hear it again.
    _continue(ctx, given, state, changed.get_result() if changed.is_complete else None)


def _due(spec: HealthMonitorSpec, state: MonitorState, now: datetime) -> datetime:
    """The next check: one interval (healthy or unhealthy, as the last verdict says) after the last."""
    if state.last_check_at is None:
        return now
    interval = spec.healthy_interval if state.is_healthy is not False else spec.unhealthy_interval
    return utc(state.last_check_at) + parse_duration(interval)


def _report(
    reporter: Reporter, spec: HealthMonitorSpec, state: MonitorState, due: datetime | None
) -> Generator[Any, Any, None]:
    yield reporter.report(_status(reporter, spec, state, due))
    state.seq = reporter.seq
    state.shown_next = second(due) if due else None


def _continue(ctx: DaprWorkflowContext, given: MonitorInput, state: MonitorState, change: Any) -> None:
    """Hand the counters to a fresh run; a changed spec (and its generation) replaces the old one."""
    state.continued_as_new += 1
    nxt = given.model_copy(update={"state": state})
    if isinstance(change, dict) and change.get("spec") is not None:
        edited = SpecChange.model_validate(change)
        generation = edited.generation if edited.generation is not None else given.generation
        nxt = nxt.model_copy(
            update={"spec": edited.spec, "generation": generation, "actor": edited.actor or given.actor}
        )
    ctx.continue_as_new(nxt.wire(), save_events=True)
