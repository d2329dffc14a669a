"""What a saga does when a step fails: its own spec.onFailure, else the admins' default for its namespace.

Resolved once, when the saga starts, and recorded in its workflow input (as the approval gate is): a policy
changed later never changes a running saga, and a replay takes the path it took.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from steadfast.api.duration import parse_duration
from steadfast.api.policy import SteadfastPolicySpec
from steadfast.api.repair import FailureAction, OnFailure
from steadfast.api.saga import TaskSagaSpec


def effective_on_failure(
    spec: TaskSagaSpec, namespace_labels: Mapping[str, str], policies: Sequence[tuple[str, SteadfastPolicySpec]]
) -> OnFailure | None:
    """The saga's own setting; else, of the policies' `failure` rules selecting its namespace, Pause if any says
    so (with the shortest pauseTimeout among those), else Compensate; None when nothing applies."""
    if spec.on_failure is not None:
        return spec.on_failure
    labels = dict(namespace_labels)
    rules = [r for _, policy in policies for r in policy.failure if r.namespace_selector.matches(labels)]
    pausing = [r for r in rules if r.action == FailureAction.PAUSE]
    if pausing:
        shortest = min(pausing, key=lambda r: parse_duration(r.pause_timeout))
        return OnFailure(action=FailureAction.PAUSE, pause_timeout=shortest.pause_timeout)
    return OnFailure(action=FailureAction.COMPENSATE) if rules else None
