"""Which kinds the operator runs, each as its binding, workflow function and any kind-specific handlers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf

from steadfast.api.approval import ApprovalPhase
from steadfast.api.kinds import APPROVAL_REQUEST, HEALTH_MONITOR, TASK_SAGA
from steadfast.api.monitor import HealthMonitorSpec
from steadfast.api.saga import OnDelete, SagaPhase
from steadfast.approval import handlers as approval_handlers
from steadfast.approval import rules as approval_rules
from steadfast.approval import workflow as approval
from steadfast.binding import Binding, Bindings, Signal
from steadfast.workflows import monitor, saga


@dataclass(frozen=True)
class Setup:
    binding: Binding
    workflow_fn: Callable[..., Any]
    register_extra: Callable[[Bindings, kopf.OperatorRegistry], None] = lambda bindings, registry: None


def _saga_stop_event(spec: Any) -> str | None:
    return None if (spec or {}).get("onDelete") == OnDelete.ABANDON.value else saga.CANCEL_EVENT


SAGA = Setup(
    binding=Binding(
        kind=TASK_SAGA,
        workflow=saga.NAME,
        stop_event=_saga_stop_event,
        terminal_phases=frozenset(p.value for p in SagaPhase if p.terminal),
    ),
    workflow_fn=saga.saga_workflow,
)


def _monitor_spec(body: dict[str, Any]) -> dict[str, Any] | None:
    """The new spec for a running monitor; an invalid one is left to the schema (it cannot get here)."""
    try:
        spec = HealthMonitorSpec.model_validate(body.get("spec") or {})
    except ValueError:
        return None
    return {"spec": spec.to_wire(), "generation": int(body["metadata"].get("generation") or 1)}


MONITOR = Setup(
    binding=Binding(
        kind=HEALTH_MONITOR,
        workflow=monitor.NAME,
        initial_status={"phase": "Unknown"},
        signals=(Signal("spec", monitor.SPEC_CHANGED, _monitor_spec, catch_up=True),),
    ),
    workflow_fn=monitor.monitor_workflow,
)

# ApprovalRequest: decisions arrive as spec.decision changes (the approver recorded by admission); its
# extra handlers create a gated TaskSaga's request and carry the outcome back to the saga.
_APPROVAL_BINDING = Binding(
    kind=APPROVAL_REQUEST,
    workflow=approval.NAME,
    extra_input=approval_rules.extra_input,
    terminal_phases=frozenset(p.value for p in ApprovalPhase if p.terminal),
)
APPROVAL = Setup(
    binding=_APPROVAL_BINDING,
    workflow_fn=approval.approval_workflow,
    register_extra=lambda bindings, registry: approval_handlers.register_handlers(
        bindings, registry, _APPROVAL_BINDING, SAGA.binding
    ),
)

BINDINGS: tuple[Setup, ...] = (SAGA, MONITOR, APPROVAL)
