"""The gate a TaskSaga gets: its own `spec.approval` and every SteadfastPolicy rule that matches it.

Pure: the binding reads the policies and the namespace's labels when the saga starts and records the
result in the workflow's input, so a later policy change touches only sagas not yet started, and an
operator restart finds the same gate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from steadfast.api.approval import Approvers
from steadfast.api.duration import parse_duration
from steadfast.api.policy import ApprovalRule, SteadfastPolicySpec, same_priority
from steadfast.api.saga import TaskSagaSpec
from steadfast.records import Record


class EffectiveGate(Record):
    """Who must approve a saga, for how long, and which policy rules said so (empty: its own spec)."""

    approvers: Approvers
    timeout: str
    rules: list[str] = []  # "policy/rule", in name order

    def describe(self) -> str:
        who = ", ".join([*self.approvers.users, *(f"group {g}" for g in self.approvers.groups)])
        where = f"SteadfastPolicy {', '.join(self.rules)}" if self.rules else "its spec.approval"
        return f"{self.approvers.required} approval(s) from {who} within {self.timeout}, required by {where}"


def matching(
    spec: TaskSagaSpec,
    labels: Mapping[str, str],
    namespace_labels: Mapping[str, str],
    policies: Iterable[tuple[str, SteadfastPolicySpec]],
) -> list[tuple[str, ApprovalRule]]:
    """The rules that gate this saga, as ("policy/rule", rule), in name order."""
    found: list[tuple[str, ApprovalRule]] = []
    for name, policy in sorted(policies, key=lambda p: p[0]):
        for rule in policy.approvals:
            match = rule.match
            priority = spec.task.priority
            if match.priorities and not (priority and any(same_priority(priority, p) for p in match.priorities)):
                continue
            if match.namespace_selector.matches(dict(namespace_labels)) and match.label_selector.matches(dict(labels)):
                found.append((f"{name}/{rule.name}", rule))
    return found


def effective_gate(
    spec: TaskSagaSpec,
    labels: Mapping[str, str],
    namespace_labels: Mapping[str, str],
    policies: Iterable[tuple[str, SteadfastPolicySpec]],
) -> EffectiveGate | None:
    """The saga's gate, or None when neither its spec nor a policy gates it.

    With matching rules, the approvers are those of the strictest rule (the highest quorum; the first by name
    on a tie); the quorum is the highest and the timeout the shortest of the rules and of the saga's own gate.
    The saga's approvers never count: its author could otherwise name a friend.
    """
    own = spec.approval if spec.needs_approval() else None
    rules = matching(spec, labels, namespace_labels, policies)
    if not rules:
        return EffectiveGate(approvers=own.approvers, timeout=own.timeout) if own else None
    strictest = rules[0][1]
    for _, rule in rules[1:]:  # in name order: the first of the highest quorum wins
        if rule.approvers.required > strictest.approvers.required:
            strictest = rule
    approvers = strictest.approvers
    required = max([r.approvers.required for _, r in rules] + ([own.approvers.required] if own else []))
    if not approvers.groups:
        required = min(required, len(approvers.users))
    timeouts = [r.timeout for _, r in rules] + ([own.timeout] if own else [])
    timeout = min(timeouts, key=parse_duration)
    return EffectiveGate(
        approvers=approvers.model_copy(update={"required": required}),
        timeout=timeout,
        rules=[name for name, _ in rules],
    )
