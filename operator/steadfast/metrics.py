"""Prometheus metrics of the operator.

Counted where side effects happen (the status writer and activities), never in workflow code, which
replays. Outcome counters follow the Events the writer posts: an Event has a deterministic name, so a
redelivered transition is not counted twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

TRANSITIONS = Counter(
    "steadfast_transitions_total",
    "Transitions announced by an Event, by kind and reason "
    "(e.g. TaskSaga/Succeeded, TaskSaga/Compensated, HealthMonitor/Unhealthy, ApprovalRequest/Approved).",
    ["kind", "reason"],
    registry=REGISTRY,
)
SAGAS = Counter(
    "steadfast_sagas_total",
    "Sagas by outcome: started, succeeded, compensated, compensation_failed, failed, rejected.",
    ["outcome"],
    registry=REGISTRY,
)
ACTION_SECONDS = Histogram(
    "steadfast_action_duration_seconds",
    "Duration of one attempt of an action (step, compensation, check, alert, notify, approval action).",
    ["kind", "what", "outcome"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MONITORS = Gauge("steadfast_monitors", "HealthMonitors by phase, as last reported.", ["phase"], registry=REGISTRY)
ALERTS = Counter("steadfast_alerts_sent_total", "Monitor alerts (webhook calls that succeeded).", registry=REGISTRY)
APPROVALS = Gauge("steadfast_approvals", "ApprovalRequests by phase, as last reported.", ["phase"], registry=REGISTRY)
# Paused (a step failed, a person decides) and CompensationFailed (a person repairs) are what to alert on.
SAGA_PHASES = Gauge("steadfast_tasksagas", "TaskSagas by phase, as last reported.", ["phase"], registry=REGISTRY)
DECISION_SECONDS = Histogram(
    "steadfast_approval_decision_seconds",
    "Time from an ApprovalRequest opening to its decision or timeout.",
    ["outcome"],
    registry=REGISTRY,
    buckets=(1, 10, 60, 300, 1800, 3600, 4 * 3600, 24 * 3600, 72 * 3600),
)
WORKER_RECONNECTS = Counter(
    "steadfast_worker_reconnects_total",
    "Workflow worker reconnects after the engine stopped routing work to it.",
    registry=REGISTRY,
)
OBJECT_WATCHES = Gauge(
    "steadfast_object_watches",
    "Shared watches open for waiting Kubernetes actions (one per resource and namespace).",
    registry=REGISTRY,
)
OBJECT_WAITS = Gauge("steadfast_object_waits", "Kubernetes actions waiting for their successWhen.", registry=REGISTRY)
OBJECT_REQUESTS = Counter(
    "steadfast_object_requests_total",
    "API server requests made for Kubernetes actions and their watches.",
    ["verb"],
    registry=REGISTRY,
)
STATUS_WRITES = Counter("steadfast_status_writes_total", "Status subresource patches sent.", registry=REGISTRY)
STATUS_SUBMITS = Counter(
    "steadfast_status_snapshots_total", "Status snapshots submitted (before coalescing).", registry=REGISTRY
)
STATUS_STALE = Counter(
    "steadfast_status_stale_total",
    "Status snapshots not written because the object already held a newer one (another replica wrote it).",
    registry=REGISTRY,
)
API_ERRORS = Counter(
    "steadfast_api_errors_total",
    "Kubernetes API calls that failed, by operation and code.",
    ["operation", "code"],
    registry=REGISTRY,
)

RETAINED = Gauge(
    "steadfast_retained_resources",
    "Finished TaskSagas and ApprovalRequests still kept (due later, or kept for good), by kind, as the last "
    "retention sweep counted them.",
    ["kind"],
    registry=REGISTRY,
)
RETENTION_REMOVALS = Counter(
    "steadfast_retention_removals_total",
    "Finished resources the retention sweeper deleted, by kind and outcome (succeeded, failed).",
    ["kind", "outcome"],
    registry=REGISTRY,
)

SHARE_WAIT_SECONDS = Histogram(
    "steadfast_share_wait_seconds",
    "Time work waited for its namespace's share of a pool (actions: action threads; expressions: sandbox "
    "children) before it started; 0 when it started at once.",
    ["pool"],
    registry=REGISTRY,
    buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
SHARE_WAITED = Counter(
    "steadfast_share_waited_seconds_total",
    "Seconds the work of a namespace waited for its share of a pool (only namespaces that had to wait appear).",
    ["pool", "namespace"],
    registry=REGISTRY,
)
SHARE_IN_USE = Gauge("steadfast_share_in_use", "Places of a pool in use.", ["pool"], registry=REGISTRY)
SHARE_WAITING = Gauge(
    "steadfast_share_waiting", "Work waiting for its namespace's share of a pool.", ["pool"], registry=REGISTRY
)


def share_observer(pool: str) -> Callable[[str, float], None]:
    """What a `shares.Shares` calls at each admission: the wait, by pool, and by namespace when it waited."""
    histogram = SHARE_WAIT_SECONDS.labels(pool)

    def observe(namespace: str, seconds: float) -> None:
        histogram.observe(seconds)
        if seconds >= 0.001:
            SHARE_WAITED.labels(pool, namespace or "-").inc(seconds)

    return observe


def watch_shares(pool: str, in_use: Callable[[], float], waiting: Callable[[], float]) -> None:
    """Export a pool's places in use and its waiters, read at each scrape."""
    SHARE_IN_USE.labels(pool).set_function(in_use)
    SHARE_WAITING.labels(pool).set_function(waiting)


_SAGA_OUTCOMES = {
    "Started": "started",
    "Succeeded": "succeeded",
    "Compensated": "compensated",
    "CompensationFailed": "compensation_failed",
    "Failed": "failed",
    "Rejected": "rejected",
}

# ApprovalRequest phases -> the decision they record (Executing and later follow an approval).
_DECISIONS = {
    "Approved": "approved",
    "Executing": "approved",
    "Completed": "approved",
    "ActionFailed": "approved",
    "Rejected": "rejected",
    "TimedOut": "timed_out",
}

_lock = threading.Lock()
_phases: dict[str, dict[str, str]] = {"HealthMonitor": {}, "ApprovalRequest": {}, "TaskSaga": {}}
_decided: set[str] = set()
_GAUGES = {"HealthMonitor": MONITORS, "ApprovalRequest": APPROVALS, "TaskSaga": SAGA_PHASES}


def transition(kind: str, reason: str) -> None:
    TRANSITIONS.labels(kind, reason).inc()
    if kind == "TaskSaga" and reason in _SAGA_OUTCOMES:
        SAGAS.labels(_SAGA_OUTCOMES[reason]).inc()


def phase(kind: str, key: str, value: str | None) -> None:
    """Track the current phase of a long-lived resource; None forgets it (deleted)."""
    gauge = _GAUGES.get(kind)
    if gauge is None:
        return
    with _lock:
        known = _phases[kind]
        old = known.pop(key, None)
        if value is None:
            _decided.discard(key)
        else:
            known[key] = value
        counts: dict[str, int] = {}
        for current in known.values():
            counts[current] = counts.get(current, 0) + 1
        for name in {old, value, *counts} - {None}:
            gauge.labels(name).set(counts.get(str(name), 0))


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def decision_latency(status: dict[str, Any]) -> tuple[str, float] | None:
    """(outcome, seconds from opening to decision) of a decided ApprovalRequest status snapshot, else None.

    The snapshot has no open time of its own (ApprovalRequestStatus has decidedAt and expiresAt, not openedAt,
    nor the spec's timeout). It carries it in its kstatus conditions, though: the workflow stamps all three on
    its first report (when it opened the request) and moves a condition's lastTransitionTime only when that
    condition's status changes, and every decided state keeps at least one condition as it was at opening
    (Stalled=False once approved, Ready=False once rejected or timed out). So the earliest lastTransitionTime
    is the opening, to the second.
    """
    outcome = _DECISIONS.get(str(status.get("phase")))
    decided = _moment(status.get("decidedAt"))
    opened = [m for c in status.get("conditions") or [] if (m := _moment(c.get("lastTransitionTime"))) is not None]
    if outcome is None or decided is None or not opened:
        return None
    return outcome, max(0.0, (decided - min(opened)).total_seconds())


def decision(kind: str, key: str, status: dict[str, Any]) -> None:
    """Observe an ApprovalRequest's decision latency once, on the first written snapshot that records it.

    Later snapshots of the same request (Executing, Completed, a redelivered write) carry the same decidedAt
    and are not counted again; forgetting the resource (phase(..., None)) forgets that it was counted.
    """
    if kind != "ApprovalRequest":
        return
    found = decision_latency(status)
    if found is None:
        return
    with _lock:
        if key in _decided:
            return
        _decided.add(key)
    DECISION_SECONDS.labels(found[0]).observe(found[1])


def serve(address: str) -> None:
    """Serve /metrics on `host:port` (e.g. 0.0.0.0:9090) in a background thread."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0", registry=REGISTRY)
