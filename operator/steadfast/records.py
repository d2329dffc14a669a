"""Plain records that cross the line between workflow code and activities.

Nothing here does I/O or imports a client, so deterministic workflow code may use all of it (an import
contract in pyproject.toml keeps kopf and the Kubernetes client out of the workflows).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

# The activities every kind's workflow calls (registered by steadfast.workflows.activities).
EXECUTE = "steadfast.execute_action"
REPORT = "steadfast.report_status"


def idempotency_key(uid: str, *parts: str) -> str:
    """Stable across retries and restarts: derived only from the resource UID and what is being done."""
    digest = hashlib.sha256("/".join((uid, *parts)).encode()).hexdigest()
    return f"sf-{digest[:40]}"


@dataclass(frozen=True)
class Outcome:
    """What one attempt of an action did; plain data so it can be a workflow activity's result."""

    ok: bool
    status_code: int | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "statusCode": self.status_code, "message": self.message}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        return cls(bool(data.get("ok")), data.get("statusCode"), str(data.get("message") or ""))


@dataclass(frozen=True)
class EventSpec:
    """A Kubernetes Event about a transition; `key` makes a redelivered transition the same Event."""

    reason: str
    message: str
    type: str = "Normal"  # or Warning
    key: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "type": self.type, "key": self.key}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> EventSpec:
        return cls(data["reason"], data["message"], data.get("type", "Normal"), data.get("key", ""))
