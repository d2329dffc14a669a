"""Pure: a saga's concurrency key as rendered from its task, the keeper's instance ID, and the limit that applies.

Resolved once, when the saga starts, and recorded in its workflow input (as the gate and onFailure are): a
policy changed later never changes a running saga, and a replay takes the path it took.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from steadfast.api.concurrency import PLACEHOLDER, Concurrency
from steadfast.api.policy import SteadfastPolicySpec
from steadfast.api.saga import Task
from steadfast.concurrency.records import SagaConcurrency


def render_key(template: str, task: Task) -> str:
    """`template` with each $(task.<field>) replaced by the task's field (an unset field renders empty)."""
    values = task.model_dump(mode="json", by_alias=True)
    return PLACEHOLDER.sub(lambda m: str(values.get(m.group(1)) or ""), template)


def keeper_id(namespace: str, key: str) -> str:
    """The keeper's instance ID: one per namespace and key, the same in every replica and after every restart
    (a digest: keys may hold any character, instance IDs may not)."""
    digest = hashlib.sha256(f"{namespace}\x00{key}".encode()).hexdigest()[:32]
    return f"steadfast-semaphore-{namespace}-{digest}"


def resolve(
    own: Concurrency | None,
    task: Task,
    namespace: str,
    created: str,
    namespace_labels: Mapping[str, str],
    policies: Sequence[tuple[str, SteadfastPolicySpec]],
) -> SagaConcurrency | None:
    """The saga's concurrency: its key rendered, and the lowest of its own limit and those of the policies'
    `concurrency` rules selecting its namespace whose key (a glob) matches. None: no key, or no limit anywhere."""
    if own is None:
        return None
    key = render_key(own.key, task)
    labels = dict(namespace_labels)
    matching = [
        (f"{name}/{rule.name}", rule.limit)
        for name, policy in policies
        for rule in policy.concurrency
        if rule.namespace_selector.matches(labels) and fnmatchcase(key, rule.key)
    ]
    limits = [limit for _, limit in matching] + ([own.limit] if own.limit is not None else [])
    if not limits:
        return None
    limit = min(limits)
    rules = [name for name, rule_limit in matching if rule_limit == limit and (own.limit is None or limit < own.limit)]
    return SagaConcurrency(key=key, limit=limit, keeper=keeper_id(namespace, key), created=created, rules=rules)
