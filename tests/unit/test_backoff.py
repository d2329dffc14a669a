"""Retry backoff: the waits between attempts follow the retry policy."""

from __future__ import annotations

from steadfast.api.saga import RetryPolicy
from steadfast.workflows.common import backoff


def test_backoff_matches_the_retry_policy() -> None:
    policy = RetryPolicy(max_attempts=5, initial_interval="1s", backoff_coefficient=2, max_interval="5s")
    assert [backoff(policy, n).total_seconds() for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
