"""kstatus conditions (Ready, Reconciling, Stalled) as Flux, Argo CD and `kubectl wait` read them.

Pure and clock-free (the time is passed in), so workflow code can compute them deterministically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from steadfast.api.common import Condition, ConditionStatus, ConditionType

State = Literal["progressing", "ready", "stalled"]

_T, _F = ConditionStatus.TRUE, ConditionStatus.FALSE
_WANTED: dict[str, dict[ConditionType, ConditionStatus]] = {
    "progressing": {ConditionType.READY: _F, ConditionType.RECONCILING: _T, ConditionType.STALLED: _F},
    "ready": {ConditionType.READY: _T, ConditionType.RECONCILING: _F, ConditionType.STALLED: _F},
    "stalled": {ConditionType.READY: _F, ConditionType.RECONCILING: _F, ConditionType.STALLED: _T},
}


def _parse(previous: Sequence[Condition | Mapping[str, Any]] | None) -> dict[str, Condition]:
    """The conditions already set, by type; entries that are not conditions (hand-edited status) are dropped."""
    out: dict[str, Condition] = {}
    for item in previous or ():
        try:
            cond = item if isinstance(item, Condition) else Condition.model_validate(item)
        except ValueError:
            continue
        out[cond.type] = cond
    return out


def conditions(
    state: State,
    *,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
    previous: Sequence[Condition | Mapping[str, Any]] | None = None,
) -> list[Condition]:
    """Ready/Reconciling/Stalled as kstatus reads them, for `state` in progressing, ready, stalled.

    lastTransitionTime moves only when a condition's status changes.
    """
    before = _parse(previous)
    moment = (now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)).replace(microsecond=0)
    out = []
    for type_, status in _WANTED[state].items():
        old = before.get(type_.value)
        changed = old is None or old.status != status
        out.append(
            Condition(
                type=type_.value,
                status=status,
                reason=reason,
                message=message[:32768],
                last_transition_time=moment if changed or old is None else old.last_transition_time or moment,
                observed_generation=generation,
            )
        )
    return out
