"""Deterministic building blocks shared by the workflows: status snapshots and retried actions.

Everything here runs inside workflow code, so it uses only the context's clock and its inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, when_any
from dapr.ext.workflow._durabletask.task import TaskFailedError

from steadfast.api.action import Action
from steadfast.api.common import StatusBase
from steadfast.api.duration import parse_duration
from steadfast.api.saga import RetryPolicy
from steadfast.records import (
    EXECUTE,
    REPORT,
    ActionRequest,
    Actor,
    EventSpec,
    ObjectRef,
    Outcome,
    StatusReport,
    WorkflowInput,
    idempotency_key,
)

Step = Generator[Any, Any, Any]

# Raised on a running instance when the operator resumes it: a Kubernetes action waiting on the shared watches
# (kept in memory) registers again. A waiting workflow also re-arms on its own every REARM_EVERY.
REARM_EVENT = "steadfast.rearm"
REARM_EVERY = timedelta(minutes=10)
# Workflow versioning (`ctx.is_patched`): instances that reached a retry before this release replay without it.
# And a re-arm that arrived between two waits is acted on by the next wait (instances that passed one replay as
# they ran).
REARM_BETWEEN_WAITS = "steadfast.rearm-between-waits"
INTERRUPT_RETRIES = "steadfast.interrupt-retries"


def utc(moment: datetime) -> datetime:
    """The SDK's clock is naive UTC; make it explicit so it compares and formats correctly."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def second(moment: datetime) -> datetime:
    """A status timestamp: UTC, whole seconds (what metav1.Time keeps)."""
    return utc(moment).replace(microsecond=0)


def stamp(moment: datetime) -> str:
    """A timestamp as messages show it."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reporter:
    """Numbers the snapshots of one workflow run so that an older one never overwrites a newer one."""

    def __init__(self, ctx: DaprWorkflowContext, inp: WorkflowInput[Any], seq: int = 0) -> None:
        self.ctx = ctx
        self.ref: ObjectRef = inp.ref
        self.generation: int = inp.generation
        self.actor: Actor | None = inp.actor
        self.seq = seq
        # The run's start as the engine recorded it (the same on every replay): orders its snapshots after any
        # of an earlier run of the same instance (a monitor's continue-as-new, a workflow started afresh).
        self.run = int(utc(ctx.current_utc_datetime).timestamp() * 1000)
        self.pending_events: list[EventSpec] = []
        self._rearm: Any = None
        self._rearm_taken: Any = None  # the last re-arm waiter a wait acted on

    def rearm(self) -> Any:
        """The run's one waiter for REARM_EVENT (a new one once it fired). The SDK hands an event to the oldest
        waiter of its name, so a waiter per wait would leave the next wait deaf behind an earlier one's."""
        if self._rearm is None or self._rearm.is_complete:
            self._rearm = self.ctx.wait_for_external_event(REARM_EVENT)
        return self._rearm

    def missed_rearm(self) -> Any:
        """The re-arm waiter if it fired while no wait was active (between two waiting steps) and no wait acted
        on it yet: the registration it asks for may have been lost with the last process, so the next wait
        re-registers at once rather than after REARM_EVERY."""
        if self._rearm is not None and self._rearm.is_complete and self._rearm is not self._rearm_taken:
            return self._rearm
        return None

    def took_rearm(self, waiter: Any) -> None:
        self._rearm_taken = waiter

    @property
    def now(self) -> datetime:
        return self.ctx.current_utc_datetime

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        """Queue an Event; it goes out with the next status write. The key makes redelivery harmless."""
        key = f"{self.ctx.instance_id}/{self.seq}/{len(self.pending_events)}/{reason}"
        self.pending_events.append(EventSpec(reason, message, "Warning" if warning else "Normal", key))

    def envelope(self, status: StatusBase, *, wait: bool = False) -> StatusReport:
        self.seq += 1
        out = StatusReport(
            ref=self.ref, status=status.to_patch(), seq=self.seq, run=self.run, events=self.pending_events, wait=wait
        )
        self.pending_events = []
        return out

    def report(self, status: StatusBase, *, wait: bool = False) -> Any:
        return self.ctx.call_activity(REPORT, input=self.envelope(status, wait=wait).wire())


def backoff(policy: RetryPolicy, attempt: int) -> timedelta:
    """The wait after failed attempt number `attempt` (1-based), as the SDK's RetryPolicy computes it."""
    first = parse_duration(policy.initial_interval).total_seconds()
    longest = parse_duration(policy.max_interval).total_seconds()
    return timedelta(seconds=min(first * policy.backoff_coefficient ** (attempt - 1), longest))


def run_action(
    reporter: Reporter,
    action: Action,
    *,
    key_parts: tuple[str, ...],
    retry: RetryPolicy | None,
    timeout: str | None,
    snapshot: Callable[[int], StatusBase | None],
    variables: dict[str, Any] | None = None,
    outputs: dict[str, str] | None = None,
    conditions: list[str] | None = None,
    wait: bool = True,
    undo: dict[str, Any] | None = None,
    waiting: Callable[[Outcome], StatusBase | None] | None = None,
    interrupt: Any = None,
) -> Generator[Any, Any, tuple[Outcome, int]]:
    """Run `action` with retries and an overall time limit; returns the last outcome and attempts made.

    Retries live here rather than in the SDK's RetryPolicy so the workflow knows each attempt's number and
    can show it in status; the backoff is the same formula. `snapshot(attempt)` is the status to write
    as the attempt starts. `variables` (from the input and recorded results, so a replay renders the same
    request) feed its placeholders; `outputs` and `conditions` are evaluated over the response.

    `interrupt` (a deleted saga's cancel event) ends the action early: a waiting Kubernetes action stops
    waiting, and no further attempt starts once it has fired (the backoff between attempts races it). The
    attempt in flight finishes; the caller undoes its effect if it succeeded.
    """
    ctx = reporter.ctx
    # Patched in: instances of an earlier release that already passed this point replay as they ran.
    interruptible = interrupt is not None and ctx.is_patched(INTERRUPT_RETRIES)
    policy = retry or RetryPolicy(max_attempts=1)
    started = ctx.current_utc_datetime
    deadline = started + parse_duration(timeout) if timeout else None
    key = idempotency_key(reporter.ref.uid, *key_parts)
    attempt = 0
    while True:
        attempt += 1
        remaining = (deadline - ctx.current_utc_datetime).total_seconds() if deadline else None
        if action.kubernetes is not None and wait:  # a waiting action's time: its own timeout, within the step's
            waits = parse_duration(action.kubernetes.timeout).total_seconds()
            remaining = waits if remaining is None else min(remaining, waits)
        status = snapshot(attempt)
        request = ActionRequest(
            ref=reporter.ref,
            action=action.to_wire(),
            key=key,
            timeout=remaining,
            what="/".join(key_parts),
            category=key_parts[-1] if key_parts[-1] in ("action", "compensation") else key_parts[0],
            report=reporter.envelope(status) if status is not None else None,
            variables=variables or {},
            outputs=outputs or {},
            conditions=conditions or [],
            actor=reporter.actor,
            undo=undo,
            instance_id=ctx.instance_id,
            wait_event=f"steadfast.object.{key}.{attempt}" if wait and action.kubernetes is not None else "",
        )
        try:
            outcome = Outcome.from_dict((yield ctx.call_activity(EXECUTE, input=request.wire())) or {})
            if outcome.pending:
                shown = waiting(outcome) if waiting is not None else None
                if shown is not None:
                    yield reporter.report(shown)
                outcome = yield from _await_object(reporter, action, request, outcome, interrupt)
        except TaskFailedError as exc:
            outcome = Outcome(False, message=f"the action could not run: {exc}")
        if outcome.ok or attempt >= policy.max_attempts:
            return outcome, attempt
        stopped = Outcome(False, outcome.status_code, f"{outcome.message} (deleted: no further attempt)")
        if interruptible and interrupt.is_complete:
            return stopped, attempt
        pause = backoff(policy, attempt)
        if deadline is not None and ctx.current_utc_datetime + pause >= deadline:
            return Outcome(False, outcome.status_code, f"{outcome.message} (time limit {timeout} reached)"), attempt
        timer = ctx.create_timer(ctx.current_utc_datetime + pause)
        if not interruptible:
            yield timer
        elif (yield when_any([timer, interrupt])) is interrupt:
            return stopped, attempt


def _await_object(
    reporter: Reporter, action: Action, request: ActionRequest, first: Outcome, interrupt: Any
) -> Generator[Any, Any, Outcome]:
    """Wait for a Kubernetes action's decision (the shared watch's event) until its timeout.

    The waiters are made once (the re-arm one once per run, by the reporter): the SDK hands an event to the
    oldest waiter of its name, so a waiter made afresh in each round would lose events to the earlier ones.
    """
    ctx = reporter.ctx
    watched = action.kubernetes
    assert watched is not None
    limit = parse_duration(watched.timeout)
    if request.timeout is not None:
        limit = min(limit, timedelta(seconds=max(request.timeout, 0)))
    deadline = ctx.current_utc_datetime + limit
    decided = ctx.wait_for_external_event(request.wait_event)
    missed = reporter.missed_rearm()
    # Patched in: an instance of an earlier release that got a re-arm between waits replays without acting on it.
    rearm = missed if missed is not None and ctx.is_patched(REARM_BETWEEN_WAITS) else reporter.rearm()
    while True:
        timer = ctx.create_timer(min(deadline, ctx.current_utc_datetime + REARM_EVERY))
        winner = yield when_any([decided, rearm, timer, *([interrupt] if interrupt is not None else [])])
        if winner is interrupt:
            said = first.message.split(": waiting for ", 1)[0]
            return Outcome(False, first.status_code, f"{said}: stopped waiting (deleted)", undo=first.undo)
        if winner is decided:
            return replace(Outcome.from_dict(decided.get_result() or {}), undo=first.undo)
        if winner is timer and ctx.current_utc_datetime >= deadline:
            shown = f"{watched.success_when} did not hold within {watched.timeout}"
            said = first.message.split(": waiting for ", 1)[0]
            return Outcome(False, first.status_code, f"{said}: {shown}", failed_condition=shown, undo=first.undo)
        if winner is rearm:
            reporter.took_rearm(rearm)
            rearm = reporter.rearm()
        left = (deadline - ctx.current_utc_datetime).total_seconds()
        again = request.model_copy(update={"rearm": True, "report": None, "timeout": left})
        outcome = Outcome.from_dict((yield ctx.call_activity(EXECUTE, input=again.wire())) or {})
        if not outcome.pending:
            return replace(outcome, undo=first.undo)
