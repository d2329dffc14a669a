"""The chart's Grafana dashboard cannot drift from the operator's metrics, and the approval decision latency.

Every metric a dashboard query names must be one `steadfast.metrics` registers (with the sample suffixes its type
has: `_total` for counters, `_bucket`/`_sum`/`_count` for histograms), and every label it groups or filters by
must be one of that metric's labels or one Prometheus adds to every target.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steadfast import metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "charts" / "steadfast" / "files" / "grafana-dashboard.json"
# Labels Prometheus attaches to every scraped sample (the ServiceMonitor's target labels), and histograms' `le`.
TARGET_LABELS = {"namespace", "job", "pod", "instance", "service", "container", "endpoint", "node"}
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created")}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def registered() -> dict[str, tuple[str, set[str]]]:
    """Sample name -> (family name, label names) of every collector in steadfast.metrics' registry."""
    labels_of: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        # The wrappers keep their label names in `_labelnames`; the registry's families carry none until observed.
        if hasattr(value, "_labelnames") and hasattr(value, "_name"):
            labels_of[value._name] = set(value._labelnames)
    out: dict[str, tuple[str, set[str]]] = {}
    for family in metrics.REGISTRY.collect():
        assert family.name in labels_of, f"{family.name} is registered but not a module-level collector"
        for suffix in SUFFIXES[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            out[family.name + suffix] = (family.name, labels_of[family.name] | extra)
    return out


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels") or [])


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = [
        (panel["title"], target["expr"])
        for panel in panels(dashboard()["panels"])
        for target in panel.get("targets") or []
    ]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append((f"${variable['name']}", query["query"] if isinstance(query, dict) else query))
    return found


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bsteadfast_[a-z_]+\b", expr))


def test_registry_is_what_the_module_defines() -> None:
    names = registered()
    for family in (
        "steadfast_sagas",
        "steadfast_action_duration_seconds",
        "steadfast_monitors",
        "steadfast_alerts_sent",
        "steadfast_approvals",
        "steadfast_approval_decision_seconds",
        "steadfast_status_writes",
        "steadfast_status_snapshots",
        "steadfast_api_errors",
        "steadfast_transitions",
    ):
        assert any(f == family for f, _ in names.values()), family


def test_every_dashboard_metric_exists() -> None:
    names = registered()
    used = {name for _, expr in queries() for name in metric_names(expr)}
    assert used, "the dashboard queries no steadfast metric"
    unknown = {(where, name) for where, expr in queries() for name in metric_names(expr) if name not in names}
    assert not unknown, f"dashboard queries name metrics steadfast.metrics does not define: {sorted(unknown)}"


def test_every_dashboard_label_exists() -> None:
    names = registered()
    problems = []
    for where, expr in queries():
        allowed = set(TARGET_LABELS)
        for name in metric_names(expr):
            allowed |= names[name][1]
        grouped = {
            label.strip()
            for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
            for label in clause.split(",")
            if label.strip()
        }
        matched = {
            m
            for selector in re.findall(r"\{([^}]*)\}", expr)
            for m in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", selector)
        }
        label_values = set(re.findall(r"label_values\([^,]*,\s*(\w+)\)", expr))
        for label in (grouped | matched | label_values) - PROMQL_WORDS:
            if label not in allowed:
                problems.append((where, label))
    assert not problems, f"dashboard queries use labels the metrics do not have: {problems}"


def test_dashboard_covers_what_operators_watch() -> None:
    """The panels the chart promises (values.yaml metrics.dashboard): each one is there and queries its metric."""
    by_title = {p["title"]: " ".join(t["expr"] for t in p.get("targets") or []) for p in panels(dashboard()["panels"])}
    expected = {
        "Sagas by outcome": "steadfast_sagas_total",
        "Step duration p50 / p95": "steadfast_action_duration_seconds_bucket",
        "Compensation duration p50 / p95": "steadfast_action_duration_seconds_bucket",
        "Monitors by phase": "steadfast_monitors",
        "Alerts sent": "steadfast_alerts_sent_total",
        "Approvals by phase": "steadfast_approvals",
        "Decision latency p50 / p95": "steadfast_approval_decision_seconds_bucket",
        "Status writes vs snapshots": "steadfast_status_writes_total",
        "API errors": "steadfast_api_errors_total",
    }
    for title, metric in expected.items():
        assert metric in by_title.get(title, ""), title
    for title in ("Step duration p50 / p95", "Compensation duration p50 / p95", "Decision latency p50 / p95"):
        assert "histogram_quantile(0.5," in by_title[title] and "histogram_quantile(0.95," in by_title[title]
    assert "steadfast_status_snapshots_total" in by_title["Status writes vs snapshots"]
    ids = [p["id"] for p in panels(dashboard()["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert dashboard()["uid"] == "steadfast-operator"
    datasource = {p["datasource"]["uid"] for p in panels(dashboard()["panels"]) if p["type"] != "row"}
    assert datasource == {"${datasource}"}, "panels must use the dashboard's data source variable"


# ---- steadfast_approval_decision_seconds ---------------------------------------------------------


def approval_status(
    phase: str, decided: str | None, opened: str = "2026-01-01T10:00:00Z", changed: str = "2026-01-01T10:05:00Z"
) -> dict[str, Any]:
    """A status as the approval workflow writes it: the conditions that did not change keep the opening time."""
    return {
        "phase": phase,
        "decidedAt": decided,
        "expiresAt": "2026-01-04T10:00:00Z",
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": changed},
            {"type": "Reconciling", "status": "False", "lastTransitionTime": changed},
            {"type": "Stalled", "status": "False", "lastTransitionTime": opened},
        ],
    }


@pytest.mark.parametrize(
    ("phase", "outcome"),
    [
        ("Approved", "approved"),
        ("Completed", "approved"),
        ("ActionFailed", "approved"),
        ("Rejected", "rejected"),
        ("TimedOut", "timed_out"),
    ],
)
def test_decision_latency_from_a_snapshot(phase: str, outcome: str) -> None:
    assert metrics.decision_latency(approval_status(phase, "2026-01-01T10:05:00Z")) == (outcome, 300.0)


def test_no_decision_latency_while_pending_or_incomplete() -> None:
    assert metrics.decision_latency(approval_status("Pending", None)) is None
    assert metrics.decision_latency(approval_status("Approved", None)) is None
    assert metrics.decision_latency({"phase": "Rejected", "decidedAt": "2026-01-01T10:05:00Z"}) is None
    assert metrics.decision_latency(approval_status("Failed", "2026-01-01T10:05:00Z")) is None


def _count(outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value("steadfast_approval_decision_seconds_count", {"outcome": outcome})
    return value or 0.0


def test_decision_is_observed_once_per_request() -> None:
    key = "approvalrequests/ns/unit-decision/uid-1"
    before = _count("rejected")
    metrics.phase("ApprovalRequest", key, "Pending")
    metrics.decision("ApprovalRequest", key, approval_status("Pending", None))
    decided = approval_status("Rejected", "2026-01-01T10:00:42Z")
    metrics.decision("ApprovalRequest", key, decided)
    metrics.decision("ApprovalRequest", key, decided)  # a redelivered or later snapshot of the same decision
    metrics.decision("TaskSaga", "tasksagas/ns/x/uid-2", decided)  # other kinds are not approvals
    assert _count("rejected") == before + 1
    total = metrics.REGISTRY.get_sample_value("steadfast_approval_decision_seconds_sum", {"outcome": "rejected"})
    assert total is not None and total >= 42
    metrics.phase("ApprovalRequest", key, None)  # deleted: forgotten, and its gauge entry with it
    assert metrics.REGISTRY.get_sample_value("steadfast_approvals", {"phase": "Pending"}) == 0
