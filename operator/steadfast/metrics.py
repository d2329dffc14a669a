"""Prometheus metrics of the operator.

Counted where side effects happen (the status writer and activities), never in workflow code, which
replays. Outcome counters follow the Events the writer posts: an Event has a deterministic name, so a
redelivered transition is not counted twice.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

TRANSITIONS = Counter(
    "steadfast_transitions_total", "Transitions announced by an Event, by kind and reason "
    "(e.g. TaskSaga/Succeeded, TaskSaga/Compensated, HealthMonitor/Unhealthy, ApprovalRequest/Approved).",
    ["kind", "reason"], registry=REGISTRY)
SAGAS = Counter("steadfast_sagas_total", "Sagas by outcome: started, succeeded, compensated, compensation_failed, "
                "failed, rejected.", ["outcome"], registry=REGISTRY)
ACTION_SECONDS = Histogram(
    "steadfast_action_duration_seconds", "Duration of one attempt of an action (step, compensation, check, alert, "
    "notify, approval action).", ["kind", "what", "outcome"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
MONITORS = Gauge("steadfast_monitors", "HealthMonitors by phase, as last reported.", ["phase"], registry=REGISTRY)
ALERTS = Counter("steadfast_alerts_sent_total", "Monitor alerts (webhook calls that succeeded).", registry=REGISTRY)
APPROVALS = Gauge("steadfast_approvals", "ApprovalRequests by phase, as last reported.", ["phase"], registry=REGISTRY)
DECISION_SECONDS = Histogram(
    "steadfast_approval_decision_seconds", "Time from an ApprovalRequest opening to its decision or timeout.",
    ["outcome"], registry=REGISTRY, buckets=(1, 10, 60, 300, 1800, 3600, 4 * 3600, 24 * 3600, 72 * 3600))
STATUS_WRITES = Counter("steadfast_status_writes_total", "Status subresource patches sent.", registry=REGISTRY)
STATUS_SUBMITS = Counter("steadfast_status_snapshots_total", "Status snapshots submitted (before coalescing).",
                         registry=REGISTRY)
API_ERRORS = Counter("steadfast_api_errors_total", "Kubernetes API calls that failed, by operation and code.",
                     ["operation", "code"], registry=REGISTRY)

_SAGA_OUTCOMES = {"Started": "started", "Succeeded": "succeeded", "Compensated": "compensated",
                  "CompensationFailed": "compensation_failed", "Failed": "failed", "Rejected": "rejected"}

_lock = threading.Lock()
_phases: dict[str, dict[str, str]] = {"HealthMonitor": {}, "ApprovalRequest": {}}
_GAUGES = {"HealthMonitor": MONITORS, "ApprovalRequest": APPROVALS}


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
        if value is not None:
            known[key] = value
        counts: dict[str, int] = {}
        for current in known.values():
            counts[current] = counts.get(current, 0) + 1
        for name in {old, value, *counts} - {None}:
            gauge.labels(name).set(counts.get(str(name), 0))


def serve(address: str) -> None:
    """Serve /metrics on `host:port` (e.g. 0.0.0.0:9090) in a background thread."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0", registry=REGISTRY)
