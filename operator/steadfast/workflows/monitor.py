"""The HealthMonitor workflow: one check per run, then `continue_as_new` with the carried state.

A `while True` loop would grow the instance's history for as long as the monitor lives (months); each
run here holds one check, one report and one sleep, and hands the counters to the next run. The sleep
races a `spec_changed` event, so an edited spec (a shorter interval, a new target, suspend) applies at
once instead of after the old interval.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, when_any

from steadfast.api.duration import parse_duration
from steadfast.api.monitor import HealthMonitorSpec, MonitorPhase
from steadfast.conditions import conditions
from steadfast.workflows.common import Reporter, run_action, stamp, utc

NAME = "steadfast.healthmonitor"
SPEC_CHANGED = "spec_changed"


def _parse_time(text: str | None) -> datetime | None:
    return utc(datetime.fromisoformat(text)) if text else None


def initial_state(job_id: str) -> dict[str, Any]:
    """The carried state: the seed's fields plus what status needs to survive a new run."""
    return {
        "job_id": job_id,
        "is_healthy": None,
        "check_count": 0,
        "consecutive_failures": 0,
        "consecutive_successes": 0,
        "alerts_sent": 0,
        "continued_as_new": 0,
        "last_error": None,
        "last_check_time": None,
        "last_check_at": None,
        "last_transition_time": None,
        "seq": 0,
        "conditions": [],
    }


def _phase(spec: HealthMonitorSpec, state: dict[str, Any]) -> MonitorPhase:
    if spec.suspend:
        return MonitorPhase.SUSPENDED
    if state["is_healthy"] is None:
        return MonitorPhase.UNKNOWN
    return MonitorPhase.HEALTHY if state["is_healthy"] else MonitorPhase.UNHEALTHY


def _status(
    reporter: Reporter, spec: HealthMonitorSpec, state: dict[str, Any], next_check: datetime | None
) -> dict[str, Any]:
    phase = _phase(spec, state)
    cond_state = {
        MonitorPhase.HEALTHY: "ready",
        MonitorPhase.SUSPENDED: "ready",
        MonitorPhase.UNHEALTHY: "progressing",
        MonitorPhase.UNKNOWN: "progressing",
    }[phase]
    message = {
        MonitorPhase.HEALTHY: "target is healthy",
        MonitorPhase.SUSPENDED: "checks are suspended",
        MonitorPhase.UNHEALTHY: f"target is unhealthy: {state['last_error'] or ''}",
        MonitorPhase.UNKNOWN: "waiting for the first verdict",
    }[phase]
    state["conditions"] = conditions(
        cond_state,
        reason=phase.value,
        message=message,
        generation=reporter.generation,
        now=reporter.now,
        previous=state["conditions"],
    )
    return {
        "phase": phase.value,
        "healthy": state["is_healthy"],
        "checkCount": state["check_count"],
        "consecutiveFailures": state["consecutive_failures"],
        "consecutiveSuccesses": state["consecutive_successes"],
        "lastCheckTime": state["last_check_time"],
        "nextCheckTime": stamp(next_check) if next_check else None,
        "lastTransitionTime": state["last_transition_time"],
        "lastError": state["last_error"],
        "alertsSent": state["alerts_sent"],
        "continuedAsNew": state["continued_as_new"],
        "observedGeneration": reporter.generation,
        "workflowInstanceId": reporter.ctx.instance_id,
        "conditions": state["conditions"],
    }


def _check(reporter: Reporter, spec: HealthMonitorSpec, state: dict[str, Any]) -> Generator[Any, Any, None]:
    """One check, its counters and, on a transition, the alert."""
    number = state["check_count"] + 1
    outcome, _ = yield from run_action(
        reporter, spec.target, key_parts=("check", str(number)), retry=None, timeout=None, snapshot=lambda attempt: None
    )
    state["check_count"] = number
    state["last_check_time"] = stamp(reporter.now)
    state["last_check_at"] = utc(reporter.now).isoformat()  # exact, for the next due time
    was = state["is_healthy"]
    if outcome.ok:
        state["consecutive_successes"] += 1
        state["consecutive_failures"] = 0
        state["last_error"] = None
        if was is not True and state["consecutive_successes"] >= spec.success_threshold:
            state["is_healthy"] = True
    else:
        state["consecutive_failures"] += 1
        state["consecutive_successes"] = 0
        state["last_error"] = outcome.message
        if was is not False and state["consecutive_failures"] >= spec.failure_threshold:
            state["is_healthy"] = False
    now_state = state["is_healthy"]
    if now_state == was:
        return
    state["last_transition_time"] = stamp(reporter.now)
    if now_state is False:
        yield from _alert(reporter, spec, state, "unhealthy", warning=True)
    elif was is False:
        yield from _alert(reporter, spec, state, "healthy", warning=False)
    else:
        reporter.event("Healthy", "first check: target is healthy")


def _alert(
    reporter: Reporter, spec: HealthMonitorSpec, state: dict[str, Any], new: str, *, warning: bool
) -> Generator[Any, Any, None]:
    severity = spec.alert.severity.value if spec.alert else "warning"
    if warning:
        reporter.event(
            "Unhealthy",
            f"target became unhealthy after {state['consecutive_failures']} failed check(s): {state['last_error']}",
            warning=True,
        )
    else:
        reporter.event("Recovered", f"target is healthy again after {state['consecutive_successes']} check(s)")
    alert = spec.alert
    if alert is None or alert.webhook is None or (not warning and not alert.send_on_recovery):
        return
    body = {
        "monitor": reporter.ref["name"],
        "namespace": reporter.ref["namespace"],
        "state": new,
        "severity": severity,
        "lastError": state["last_error"],
        "checkCount": state["check_count"],
    }
    webhook = alert.webhook.model_copy(deep=True)
    if webhook.http is not None:
        webhook.http = webhook.http.model_copy(update={"body": body})
    outcome, _ = yield from run_action(
        reporter,
        webhook,
        key_parts=("alert", str(state["check_count"]), new),
        retry=None,
        timeout=None,
        snapshot=lambda attempt: None,
    )
    if outcome.ok:
        state["alerts_sent"] += 1
    else:
        reporter.event("AlertFailed", f"alert webhook failed: {outcome.message}", warning=True)


def monitor_workflow(ctx: DaprWorkflowContext, inp: dict[str, Any]) -> Generator[Any, Any, None]:
    spec = HealthMonitorSpec.model_validate(inp["spec"])
    state: dict[str, Any] = inp.get("state") or initial_state(ctx.instance_id)
    reporter = Reporter(ctx, inp, seq=int(state["seq"]))
    changed = ctx.wait_for_external_event(SPEC_CHANGED)

    if not spec.suspend:
        last = _parse_time(state.get("last_check_at"))
        interval = parse_duration(
            spec.healthy_interval if state["is_healthy"] is not False else spec.unhealthy_interval
        )
        now = utc(ctx.current_utc_datetime)
        due = last + interval if last else now
        if due > now:
            # A run that starts early (a spec change cut the sleep short) waits out what is left first.
            yield from _sleep(ctx, reporter, spec, state, due, changed, inp)
            return
        yield from _check(reporter, spec, state)
        interval = parse_duration(
            spec.healthy_interval if state["is_healthy"] is not False else spec.unhealthy_interval
        )
        due = utc(ctx.current_utc_datetime) + interval
        yield from _sleep(ctx, reporter, spec, state, due, changed, inp)
        return

    state["seq"] = reporter.seq
    yield reporter.report(_status(reporter, spec, state, None))
    state["seq"] = reporter.seq
    data = yield changed
    _continue(ctx, inp, state, data)


def _sleep(
    ctx: DaprWorkflowContext,
    reporter: Reporter,
    spec: HealthMonitorSpec,
    state: dict[str, Any],
    due: datetime,
    changed: Any,
    inp: dict[str, Any],
) -> Generator[Any, Any, None]:
    yield reporter.report(_status(reporter, spec, state, due))
    state["seq"] = reporter.seq
    timer = ctx.create_timer(due.replace(tzinfo=None))  # the SDK works in naive UTC
    winner = yield when_any([timer, changed])
    _continue(ctx, inp, state, changed.get_result() if winner is changed else None)


def _continue(ctx: DaprWorkflowContext, inp: dict[str, Any], state: dict[str, Any], change: Any) -> None:
    """Hand the counters to a fresh run; a changed spec (and its generation) replaces the old one."""
    state["continued_as_new"] += 1
    nxt = {**inp, "state": state}
    if isinstance(change, dict) and change.get("spec") is not None:
        nxt["spec"] = change["spec"]
        nxt["generation"] = change.get("generation", inp.get("generation"))
    ctx.continue_as_new(nxt, save_events=True)
