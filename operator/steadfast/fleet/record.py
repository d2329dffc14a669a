"""The fleet view's record of one resource: what `steadfast list -o json` prints, with stable field names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from steadfast.api.kinds import APPROVAL_REQUEST, HEALTH_MONITOR, TASK_SAGA, Kind
from steadfast.fleet.phases import NEEDS_PERSON, PAUSED


class FleetRecord(BaseModel):
    """One Steadfast resource as the fleet view shows it (camelCase in JSON, like the resources themselves)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    kind: str = Field(description="TaskSaga, ApprovalRequest or HealthMonitor.")
    namespace: str
    name: str
    phase: str | None = Field(None, description="status.phase; None before the operator first wrote it.")
    created_at: datetime | None = Field(None, description="metadata.creationTimestamp.")
    age_seconds: int | None = Field(None, description="Seconds since creation when listed.")
    needs_person: bool = Field(description="Only a person can move it on (a decision, a repair, a look).")
    waiting_for: str | None = Field(None, description="What it waits for, when it waits for a person.")
    approvers: list[str] = Field(default_factory=list, description="Who may decide (ApprovalRequest only).")
    detail: str = Field("", description="The step, error, title or condition that explains the phase.")


def _created(meta: dict[str, Any]) -> datetime | None:
    text = meta.get("creationTimestamp")
    return datetime.fromisoformat(text) if text else None


def _approvers(spec: dict[str, Any]) -> list[str]:
    approvers = spec.get("approvers") or {}
    return [*approvers.get("users", []), *(f"group:{g}" for g in approvers.get("groups", []))]


def _saga(phase: str | None, status: dict[str, Any]) -> tuple[str | None, str]:
    if phase == "AwaitingApproval":
        return f"approval of ApprovalRequest {status.get('approvalRequest') or '?'}", ""
    if phase == PAUSED:
        pause = status.get("pause") or {}
        step = pause.get("step") or status.get("currentStep") or "?"
        record: dict[str, Any] = next((s for s in status.get("steps") or [] if s.get("name") == step), {})
        until = f"; compensates at {pause['expiresAt']}" if pause.get("expiresAt") else ""
        return "repair: Retry, Skip or Compensate", f"step {step} failed: {record.get('message') or '?'}{until}"
    if phase == "CompensationFailed":
        failed: list[dict[str, Any]] = [c for c in status.get("compensations") or [] if c.get("phase") == "Failed"]
        what = "; ".join(f"{c.get('step')}: {c.get('message') or '?'}" for c in failed)
        return "repair: Retry or Resolve", f"compensation failed: {what or (status.get('result') or {}).get('error')}"
    return None, str(status.get("currentStep") or (status.get("result") or {}).get("error") or "")


def _approval(phase: str | None, spec: dict[str, Any], status: dict[str, Any]) -> tuple[str | None, str]:
    title = (spec.get("subject") or {}).get("title", "")
    if phase == "Pending":
        approved = sum(1 for a in status.get("approvals") or [] if a.get("approved"))
        required = (spec.get("approvers") or {}).get("required", 1)
        who = ", ".join(_approvers(spec)) or "?"
        expires = f", expires {status['expiresAt']}" if status.get("expiresAt") else ""
        return f"decision by {who} ({approved}/{required})", f"{title}{expires}"
    if phase == "ActionFailed":
        return None, f"{title}: action failed: {(status.get('actionResult') or {}).get('error') or '?'}"
    return None, f"{title}: {status.get('reason') or status.get('approver') or ''}".rstrip(": ")


def _monitor(phase: str | None, status: dict[str, Any]) -> tuple[str | None, str]:
    why = str(status.get("failedCondition") or status.get("lastError") or "")
    if phase == "Unhealthy":
        since = status.get("lastTransitionTime")
        return f"a look: unhealthy since {since}" if since else "a look: unhealthy", why
    return None, why if phase != "Healthy" else f"checks={status.get('checkCount', 0)}"


def from_object(kind: Kind, obj: dict[str, Any], now: datetime | None = None) -> FleetRecord:
    """The record of `obj` (a resource of `kind` as the API server returns it) as seen at `now`."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    phase = status.get("phase") or None
    created = _created(meta)
    if kind is TASK_SAGA:
        waiting, detail = _saga(phase, status)
    elif kind is APPROVAL_REQUEST:
        waiting, detail = _approval(phase, spec, status)
    elif kind is HEALTH_MONITOR:
        waiting, detail = _monitor(phase, status)
    else:  # pragma: no cover - the fleet lists only the kinds above
        waiting, detail = None, ""
    age = int(((now or datetime.now(UTC)) - created).total_seconds()) if created else None
    return FleetRecord(
        kind=kind.kind,
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        phase=phase,
        created_at=created,
        age_seconds=age,
        needs_person=phase in NEEDS_PERSON[kind],
        waiting_for=waiting,
        approvers=_approvers(spec) if kind is APPROVAL_REQUEST else [],
        detail=detail,
    )
