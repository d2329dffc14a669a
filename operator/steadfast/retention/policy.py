"""A resource's retention, resolved once when it starts: its own spec.retention, else the admins' default for
its namespace (SteadfastPolicy `retention` rules), else the operator's (--retain-succeeded/--retain-failed).

Each outcome is resolved on its own (a saga that sets only `succeeded` still takes the namespace's `failed`).
The result is recorded in the workflow input, as the approval gate and onFailure are: a policy changed later
does not change what a running resource's status will say.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from steadfast.api.duration import parse_duration
from steadfast.api.policy import SteadfastPolicySpec
from steadfast.api.retention import Retention


def _shortest(values: Sequence[str]) -> str | None:
    return min(values, key=parse_duration) if values else None


def from_policies(
    namespace_labels: Mapping[str, str], policies: Sequence[tuple[str, SteadfastPolicySpec]]
) -> Retention:
    """The admins' default for a namespace: of the rules selecting it, the shortest of each outcome."""
    labels = dict(namespace_labels)
    rules = [r for _, policy in policies for r in policy.retention if r.namespace_selector.matches(labels)]
    return Retention(
        succeeded=_shortest([r.succeeded for r in rules if r.succeeded is not None]),
        failed=_shortest([r.failed for r in rules if r.failed is not None]),
    )


def effective_retention(own: Retention | None, *fallbacks: Retention | None) -> Retention | None:
    """Outcome by outcome, the first that is set: the resource's own, then each fallback in order (the policies',
    the operator's). None when nothing is set anywhere: kept until someone deletes it."""
    layers = [r for r in (own, *fallbacks) if r is not None]
    found = Retention(
        succeeded=next((r.succeeded for r in layers if r.succeeded is not None), None),
        failed=next((r.failed for r in layers if r.failed is not None), None),
    )
    return None if found.is_empty() else found
