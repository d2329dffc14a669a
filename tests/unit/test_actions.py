"""Actions: the idempotency key every request carries."""

from __future__ import annotations

from steadfast.actions import idempotency_key


def test_idempotency_key_is_stable_and_distinct() -> None:
    key = idempotency_key("uid-1", "step-a", "action")
    assert key == idempotency_key("uid-1", "step-a", "action")
    assert key != idempotency_key("uid-1", "step-a", "compensation")
    assert key != idempotency_key("uid-2", "step-a", "action")
