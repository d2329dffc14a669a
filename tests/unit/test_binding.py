"""The binding of a resource to its workflow instance: the instance ID."""

from __future__ import annotations

from steadfast.api.kinds import TASK_SAGA
from steadfast.binding import instance_id


def test_instance_id_is_deterministic_and_safe() -> None:
    one = instance_id(TASK_SAGA, "team-a", "onboard.42", "0f6a-uid")
    assert one == instance_id(TASK_SAGA, "team-a", "onboard.42", "0f6a-uid")
    assert one != instance_id(TASK_SAGA, "team-a", "onboard.42", "other-uid")
    assert all(c.isalnum() or c in "-_" for c in one)
