"""Retention: which ends may be removed and when, how a resource's retention is resolved, what the sweeper does."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from steadfast import metrics, runner
from steadfast.api.approval import ApprovalPhase, ApprovalRequestSpec
from steadfast.api.kinds import APPROVAL_REQUEST, TASK_SAGA
from steadfast.api.policy import SteadfastPolicySpec
from steadfast.api.retention import Retention
from steadfast.api.saga import SagaPhase, TaskSagaSpec
from steadfast.api.schema import unchanged
from steadfast.retention.policy import effective_retention, from_policies
from steadfast.retention.rules import REMOVABLE, Outcome, outcome_of, retained_until
from steadfast.retention.sweeper import Scope, Sweeper

SAGA, REQUEST = TASK_SAGA.kind, APPROVAL_REQUEST.kind
ENDED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("phase", "outcome"),
    [
        (SagaPhase.SUCCEEDED, Outcome.SUCCEEDED),
        (SagaPhase.COMPENSATED, Outcome.FAILED),
        (SagaPhase.FAILED, Outcome.FAILED),
        (SagaPhase.REJECTED, Outcome.FAILED),
    ],
)
def test_a_saga_that_ended_needing_nobody_is_removable(phase: SagaPhase, outcome: Outcome) -> None:
    assert outcome_of(SAGA, phase.value) == outcome


@pytest.mark.parametrize(
    "phase",
    [
        SagaPhase.PENDING,
        SagaPhase.AWAITING_APPROVAL,
        SagaPhase.QUEUED,
        SagaPhase.RUNNING,
        SagaPhase.PAUSED,
        SagaPhase.COMPENSATING,
        SagaPhase.COMPENSATION_FAILED,
    ],
)
def test_an_unfinished_saga_or_one_waiting_for_a_person_never_is(phase: SagaPhase) -> None:
    assert outcome_of(SAGA, phase.value) is None
    assert phase.value not in REMOVABLE[SAGA]


def test_every_saga_phase_is_either_removable_or_named_as_kept() -> None:
    kept = {"Pending", "AwaitingApproval", "Queued", "Running", "Paused", "Compensating", "CompensationFailed"}
    assert {p.value for p in SagaPhase} == set(REMOVABLE[SAGA]) | kept


@pytest.mark.parametrize(
    ("phase", "has_action", "outcome"),
    [
        (ApprovalPhase.COMPLETED, True, Outcome.SUCCEEDED),
        (ApprovalPhase.APPROVED, False, Outcome.SUCCEEDED),
        (ApprovalPhase.APPROVED, True, None),  # its action is still to run
        (ApprovalPhase.EXECUTING, True, None),
        (ApprovalPhase.ACTION_FAILED, True, None),  # waits for a person's Retry
        (ApprovalPhase.PENDING, False, None),
        (ApprovalPhase.REJECTED, False, Outcome.FAILED),
        (ApprovalPhase.TIMED_OUT, False, Outcome.FAILED),
    ],
)
def test_approval_request_outcomes(phase: ApprovalPhase, has_action: bool, outcome: Outcome | None) -> None:
    assert outcome_of(REQUEST, phase.value, has_action=has_action) == outcome


def test_a_health_monitor_is_never_removed() -> None:
    assert outcome_of("HealthMonitor", "Healthy") is None


def test_retained_until_is_the_end_plus_the_outcomes_retention() -> None:
    keep = Retention(succeeded="1h", failed="168h")
    assert retained_until(keep, Outcome.SUCCEEDED, ENDED) == ENDED + timedelta(hours=1)
    assert retained_until(keep, Outcome.FAILED, ENDED) == ENDED + timedelta(days=7)
    only = Retention(succeeded="2s")
    assert retained_until(only, Outcome.FAILED, ENDED) is None  # kept: nothing says how long
    assert retained_until(None, Outcome.SUCCEEDED, ENDED) is None
    assert retained_until(keep, None, ENDED) is None


@pytest.mark.parametrize("value", ["forever", "-1s", "8761h", "1d"])
def test_a_retention_is_a_duration_of_at_most_a_year(value: str) -> None:
    with pytest.raises(ValidationError, match=r"retention\.succeeded"):
        Retention(succeeded=value)


def test_zero_means_at_once() -> None:
    assert retained_until(Retention(failed="0s"), Outcome.FAILED, ENDED) == ENDED


def test_a_sagas_retention_is_fixed_at_creation() -> None:
    """The spec's immutability rule covers it (only spec.repair may change)."""
    rules = [r["rule"] for r in TaskSagaSpec.model_json_schema()["x-kubernetes-validations"]]
    assert any(unchanged("retention", optional=True) in r and unchanged("task", optional=False) in r for r in rules)
    rules = [r["rule"] for r in ApprovalRequestSpec.model_json_schema()["x-kubernetes-validations"]]
    assert any(unchanged("retention", optional=True) in r for r in rules)


def _policy(*rules: dict[str, Any]) -> SteadfastPolicySpec:
    return SteadfastPolicySpec.model_validate({"retention": list(rules)})


PROD = {"tier": "prod"}
POLICIES = [
    ("org", _policy({"name": "all", "succeeded": "24h", "failed": "720h"})),
    ("prod", _policy({"name": "prod", "namespaceSelector": {"matchLabels": PROD}, "succeeded": "1h"})),
]


def test_the_shortest_rule_selecting_a_namespace_applies_outcome_by_outcome() -> None:
    assert from_policies(PROD, POLICIES) == Retention(succeeded="1h", failed="720h")
    assert from_policies({}, POLICIES) == Retention(succeeded="24h", failed="720h")
    assert from_policies({}, []) == Retention()


def test_the_resources_own_field_wins_then_the_policy_then_the_operators_default() -> None:
    admins, chart = Retention(failed="720h"), Retention(succeeded="24h", failed="168h")
    own = Retention(succeeded="2s")
    assert effective_retention(own, admins, chart) == Retention(succeeded="2s", failed="720h")
    assert effective_retention(None, admins, chart) == Retention(succeeded="24h", failed="720h")
    assert effective_retention(None, Retention(), chart) == chart
    assert effective_retention(None, Retention(), None) is None  # kept until someone deletes it


def test_policy_rules_are_unique_and_checked() -> None:
    with pytest.raises(ValidationError, match="repeated: a"):
        _policy({"name": "a", "failed": "1h"}, {"name": "a", "failed": "2h"})
    with pytest.raises(ValidationError, match="failed must be a duration"):
        _policy({"name": "a", "failed": "soon"})


def _args(**given: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"retain_succeeded": None, "retain_failed": None, **given})


def test_the_operators_default_comes_from_its_flags() -> None:
    assert runner._retention_default(_args()) is None
    assert runner._retention_default(_args(retain_failed="168h")) == Retention(failed="168h")
    with pytest.raises(SystemExit, match="--retain-succeeded"):
        runner._retention_default(_args(retain_succeeded="1 hour"))


# ---- the sweeper, against a fake API (what it lists, what it deletes, and how) ---------------------------


def _item(kind: str, name: str, phase: str, until: datetime | None, **extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if until is not None:
        status["retainedUntil"] = until.isoformat().replace("+00:00", "Z")
    meta = {"namespace": extra.pop("namespace", "team-a"), "name": name, "uid": f"uid-{name}", "resourceVersion": "7"}
    meta.update(extra.pop("meta", {}))
    return {"kind": kind, "metadata": meta, "status": status, "spec": extra.pop("spec", {})}


class FakeApi:
    def __init__(self, items: list[dict[str, Any]], conflict: set[str] | None = None) -> None:
        self.items = items
        self.conflict = conflict or set()
        self.lists: list[tuple[str, str | None, str]] = []
        self.deleted: list[tuple[str, str, client.V1DeleteOptions]] = []

    def _select(self, plural: str, namespace: str | None, selector: str) -> dict[str, Any]:
        self.lists.append((plural, namespace, selector))
        phase = selector.removeprefix("status.phase=")
        kind = {"tasksagas": SAGA, "approvalrequests": REQUEST}[plural]
        found = [
            i
            for i in self.items
            if i["kind"] == kind and i["status"]["phase"] == phase and namespace in (None, i["metadata"]["namespace"])
        ]
        return {"items": found, "metadata": {}}

    def list_cluster_custom_object(self, group: str, version: str, plural: str, **kw: Any) -> dict[str, Any]:
        return self._select(plural, None, kw["field_selector"])

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, **kw: Any
    ) -> dict[str, Any]:
        return self._select(plural, namespace, kw["field_selector"])

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: client.V1DeleteOptions
    ) -> None:
        if name in self.conflict:
            raise ApiException(status=409, reason="Conflict")
        self.deleted.append((plural, f"{namespace}/{name}", body))


NOW = ENDED + timedelta(hours=2)


def _sweeper(api: FakeApi, scope: Scope | None = None) -> Sweeper:
    sweeper = Sweeper(client.ApiClient(), scope=scope, clock=lambda: NOW)
    sweeper.api = api
    return sweeper


def test_the_sweeper_deletes_what_is_due_with_a_precondition_and_keeps_the_rest() -> None:
    past, later = NOW - timedelta(seconds=1), NOW + timedelta(hours=1)
    api = FakeApi(
        [
            _item(SAGA, "done", "Succeeded", past),
            _item(SAGA, "undone", "Compensated", past),
            _item(SAGA, "not-yet", "Succeeded", later),
            _item(SAGA, "forever", "Failed", None),
            _item(SAGA, "going", "Succeeded", past, meta={"deletionTimestamp": "2026-01-01T00:00:00Z"}),
            _item(SAGA, "broken", "CompensationFailed", past),  # never listed, never removed
            _item(REQUEST, "approved", "Approved", past),
            _item(REQUEST, "acting", "Approved", past, spec={"action": {"http": {"url": "http://x"}}}),
            _item(REQUEST, "open", "Pending", past),
        ]
    )
    before = metrics.RETENTION_REMOVALS.labels(SAGA, "failed")._value.get()
    removed = _sweeper(api).sweep()
    assert sorted(f.name for f in removed) == ["approved", "done", "undone"]
    assert sorted(d[1] for d in api.deleted) == ["team-a/approved", "team-a/done", "team-a/undone"]
    options = api.deleted[0][2]
    assert options.preconditions.uid.startswith("uid-") and options.preconditions.resource_version == "7"
    assert {s for _, _, s in api.lists} == {f"status.phase={p}" for p in REMOVABLE[SAGA] + REMOVABLE[REQUEST]}
    assert metrics.RETENTION_REMOVALS.labels(SAGA, "failed")._value.get() == before + 1
    assert metrics.RETAINED.labels(SAGA)._value.get() == 2  # not-yet and forever
    assert metrics.RETAINED.labels(REQUEST)._value.get() == 0


def test_a_resource_changed_since_the_list_is_left_for_the_next_sweep() -> None:
    api = FakeApi([_item(SAGA, "raced", "Succeeded", NOW)], conflict={"raced"})
    assert _sweeper(api).sweep() == []


def test_the_sweeper_stays_in_the_operators_namespaces() -> None:
    items = [_item(SAGA, "a", "Succeeded", NOW, namespace="team-a"), _item(SAGA, "b", "Succeeded", NOW, namespace="x")]
    api = FakeApi(items)
    assert [f.name for f in _sweeper(api, Scope(["team-a"])).sweep()] == ["a"]
    assert {ns for _, ns, _ in api.lists} == {"team-a"}  # listed in the namespace, not across the cluster
    api = FakeApi(items)
    assert [f.name for f in _sweeper(api, Scope(["team-*"])).sweep()] == ["a"]
    assert {ns for _, ns, _ in api.lists} == {None}
