"""SteadfastPolicy: which sagas a rule gates, and the gate a saga ends up with (its spec cannot weaken it)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from steadfast.api.policy import SteadfastPolicySpec
from steadfast.api.saga import TaskSagaSpec
from steadfast.approval.policy import effective_gate

STEP = {"name": "a", "action": {"http": {"url": "http://x.svc/a"}}}


def saga(priority: str | None = "high", approval: dict[str, Any] | None = None) -> TaskSagaSpec:
    spec: dict[str, Any] = {"task": {"id": "t", "priority": priority}, "steps": [STEP]}
    if approval is not None:
        spec["approval"] = approval
    return TaskSagaSpec.model_validate(spec)


def policy(*rules: dict[str, Any]) -> SteadfastPolicySpec:
    return SteadfastPolicySpec.model_validate({"approvals": list(rules)})


MANAGERS = {
    "name": "high-needs-manager",
    "match": {"priorities": ["high", "critical"], "namespaceSelector": {"matchLabels": {"tier": "prod"}}},
    "approvers": {"groups": ["managers"], "required": 1},
    "timeout": "24h",
}
PROD = {"tier": "prod"}


def test_a_saga_without_a_gate_is_gated_by_a_matching_rule() -> None:
    gate = effective_gate(saga(), {}, PROD, [("org", policy(MANAGERS))])
    assert gate is not None
    assert gate.approvers.groups == ["managers"] and gate.timeout == "24h"
    assert gate.rules == ["org/high-needs-manager"]
    assert "required by SteadfastPolicy org/high-needs-manager" in gate.describe()


@pytest.mark.parametrize(
    ("priority", "namespace_labels"),
    [("low", PROD), ("high", {"tier": "dev"}), ("high", {}), (None, PROD)],
)
def test_rules_gate_only_what_they_match(priority: str | None, namespace_labels: dict[str, str]) -> None:
    assert effective_gate(saga(priority), {}, namespace_labels, [("org", policy(MANAGERS))]) is None


def test_the_spec_cannot_name_its_own_approvers_or_loosen_the_rule() -> None:
    friendly = {"required": True, "approvers": {"users": ["friend"]}, "timeout": "720h"}
    gate = effective_gate(saga(approval=friendly), {}, PROD, [("org", policy(MANAGERS))])
    assert gate is not None
    assert gate.approvers.users == [] and gate.approvers.groups == ["managers"]
    assert gate.timeout == "24h"  # the shorter of the two


def test_the_spec_may_ask_for_more() -> None:
    stricter = {"required": True, "approvers": {"users": ["x", "y", "z"], "required": 3}, "timeout": "1h"}
    gate = effective_gate(saga(approval=stricter), {}, PROD, [("org", policy(MANAGERS))])
    assert gate is not None and gate.approvers.required == 3 and gate.timeout == "1h"


def test_without_a_matching_rule_the_spec_gate_applies_as_before() -> None:
    own = {"priorities": ["high"], "approvers": {"users": ["alice"]}, "timeout": "2h"}
    gate = effective_gate(saga(approval=own), {}, {}, [("org", policy(MANAGERS))])
    assert gate is not None and gate.approvers.users == ["alice"] and gate.rules == []


def test_several_rules_the_highest_quorum_decides_who() -> None:
    two_leads = {"name": "two-leads", "approvers": {"groups": ["leads"], "required": 2}, "timeout": "72h"}
    labelled = {
        **MANAGERS,
        "name": "labelled",
        "match": {"labelSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["payments"]}]}},
    }
    gate = effective_gate(
        saga(), {"team": "payments"}, PROD, [("b", policy(two_leads)), ("a", policy(labelled, MANAGERS))]
    )
    assert gate is not None
    assert gate.rules == ["a/labelled", "a/high-needs-manager", "b/two-leads"]
    assert gate.approvers.groups == ["leads"] and gate.approvers.required == 2
    assert gate.timeout == "24h"


def test_policy_rule_names_are_unique() -> None:
    with pytest.raises(ValueError, match="rule names must be unique"):
        policy(MANAGERS, MANAGERS)


@pytest.mark.parametrize("priority", ["High", "HIGH", "Critical"])
def test_priorities_match_without_case(priority: str) -> None:
    gate = effective_gate(saga(priority), {}, PROD, [("org", policy(MANAGERS))])
    assert gate is not None and gate.rules == ["org/high-needs-manager"]


@pytest.mark.parametrize(
    "priority", [" high", "high ", "\u04bbigh", "\uff48\uff49\uff47\uff48", "hi\u200bgh", "high\n"]
)
def test_a_priority_that_could_slip_past_a_rule_is_refused(priority: str) -> None:
    """Spaces, a Cyrillic look-alike, full-width letters, a zero-width space: refused, not an unmatched priority."""
    with pytest.raises(ValidationError, match="pattern"):
        saga(priority)


@pytest.mark.parametrize("operator", ["NotIn", "DoesNotExist"])
def test_negative_operators_on_saga_labels_are_refused(operator: str) -> None:
    """The author writes the saga's labels: a rule 'every saga except those labelled x' is escaped by adding x."""
    rule = {**MANAGERS, "match": {"labelSelector": {"matchExpressions": [{"key": "exempt", "operator": operator}]}}}
    with pytest.raises(ValidationError, match="pattern"):
        policy(rule)
    # On namespace labels, which a namespace's editors cannot write, they stay allowed.
    rule = {**MANAGERS, "match": {"namespaceSelector": {"matchExpressions": [{"key": "exempt", "operator": operator}]}}}
    assert policy(rule).approvals[0].match.namespace_selector.match_expressions[0].operator == operator
