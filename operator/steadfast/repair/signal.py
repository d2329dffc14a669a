"""A change of spec.repair, as the event its resource's workflow receives: the decider is the one admission
sealed (a decision typed where admission did not run arrives with no user, and the workflow refuses it)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from steadfast import seals
from steadfast.api.kinds import REPAIR_SEAL
from steadfast.api.repair import Repair
from steadfast.repair.rules import REPAIR_EVENT, RepairEvent

log = logging.getLogger(__name__)

FIELD = "spec.repair"
EVENT = REPAIR_EVENT


def payload(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `repair` event for the current spec.repair; None when there is none (or it cannot be read)."""
    meta = body.get("metadata") or {}
    raw = (body.get("spec") or {}).get("repair")
    if not raw:
        return None
    try:
        repair = Repair.model_validate(raw)
    except ValidationError:
        return None  # the schema and admission refuse it; nothing to tell the workflow
    user: str | None = None
    try:
        user = seals.verify_repair(body, (meta.get("annotations") or {}).get(REPAIR_SEAL)).user
    except seals.SealError as exc:
        log.warning(
            "repair decision on %s/%s has no valid seal: %s (are the admission webhooks running for it?)",
            meta.get("namespace"),
            meta.get("name"),
            exc,
        )
    event = RepairEvent(
        action=repair.action,
        step=repair.step,
        reason=repair.reason,
        user=user,
        generation=int(meta.get("generation") or 1),
    )
    return event.wire()
