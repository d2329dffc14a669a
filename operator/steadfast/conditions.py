"""kstatus conditions (Ready, Reconciling, Stalled) as Flux, Argo CD and `kubectl wait` read them.

Pure and clock-free (the time is passed in), so workflow code can compute them deterministically.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"


def conditions(
    state: str,
    *,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
    previous: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Ready/Reconciling/Stalled as kstatus reads them, for `state` in progressing, ready, stalled.

    Pure and clock-free (`now` is passed in), so workflows can call it deterministically;
    lastTransitionTime moves only when a condition's status changes.
    """
    wanted = {
        "progressing": {READY: "False", RECONCILING: "True", STALLED: "False"},
        "ready": {READY: "True", RECONCILING: "False", STALLED: "False"},
        "stalled": {READY: "False", RECONCILING: "False", STALLED: "True"},
    }[state]
    before = {c.get("type"): c for c in previous or []}
    aware = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    stamp = aware.strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    for type_, status in wanted.items():
        old = before.get(type_)
        changed = old is None or old.get("status") != status
        cond: dict[str, Any] = {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message[:32768],
            "lastTransitionTime": stamp if changed or not old else old.get("lastTransitionTime", stamp),
        }
        if generation is not None:
            cond["observedGeneration"] = generation
        out.append(cond)
    return out
