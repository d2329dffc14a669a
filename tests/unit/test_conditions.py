"""Status conditions (Ready/Reconciling/Stalled) as kstatus reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from steadfast.api.common import Condition
from steadfast.conditions import conditions


def wire(conds: list[Condition]) -> list[dict[str, Any]]:
    """The conditions as the API server stores them."""
    return [c.to_wire() for c in conds]


def test_conditions_keep_transition_time_while_unchanged() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    first = wire(conditions("progressing", reason="Running", message="", generation=1, now=t0))
    later = wire(
        conditions(
            "progressing",
            reason="Running",
            message="step 2",
            generation=1,
            now=t0 + timedelta(minutes=1),
            previous=first,
        )
    )
    done = wire(
        conditions("ready", reason="Succeeded", message="", generation=1, now=t0 + timedelta(minutes=2), previous=later)
    )
    by_type = {c["type"]: c for c in done}
    assert {c["type"]: c["status"] for c in done} == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    assert later[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]
    assert by_type["Ready"]["lastTransitionTime"] == "2026-01-01T00:02:00Z"
    assert by_type["Stalled"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"  # was False, still False
