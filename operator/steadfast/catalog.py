"""The kinds the operator runs: one `Binding` each (workflow, signals, stop, extra handlers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from steadfast.api.approval import ApprovalPhase
from steadfast.api.kinds import APPROVAL_REQUEST, HEALTH_MONITOR, SAGA_SCHEDULE, TASK_SAGA
from steadfast.api.monitor import HealthMonitorSpec
from steadfast.api.saga import OnDelete, SagaPhase
from steadfast.api.schedule import SagaScheduleSpec
from steadfast.approval import handlers as approval_handlers
from steadfast.approval import rules as approval_rules
from steadfast.approval import workflow as approval
from steadfast.binding import Binding, Signal
from steadfast.kube import api_client
from steadfast.policies import PolicyReader
from steadfast.records import Actor, ObjectRef
from steadfast.repair import signal as repair_signal
from steadfast.schedules import workflow as schedule
from steadfast.templates.reader import TemplateReader
from steadfast.workflows import monitor, saga
from steadfast.workflows.common import REARM_EVENT


def _saga_stop_event(spec: Any) -> str | None:
    return None if (spec or {}).get("onDelete") == OnDelete.ABANDON.value else saga.CANCEL_EVENT


POLICIES = PolicyReader(api_client)
TEMPLATES = TemplateReader(api_client)


def _saga_input(ref: ObjectRef, generation: int, spec: Any, body: Mapping[str, Any]) -> saga.SagaInput:
    """The saga's input with its gate, its failure behaviour, its retention and its concurrency key and limit
    resolved now, from its spec, the policies and the operator's defaults (see approval.policy, repair.policy,
    retention.policy, concurrency.rules). A saga made from a template starts with the template's definition as
    it is now (steadfast.templates): the input pins it, and the policies apply to it as to inline steps."""
    template = None
    if spec.template is not None:
        spec, template = TEMPLATES.render_for(spec, ref.namespace)
    gate, on_failure, retention, concurrency = POLICIES.for_saga(spec, body)
    return saga.SagaInput(
        ref=ref,
        generation=generation,
        spec=spec,
        template=template,
        gate=gate,
        gate_resolved=True,
        on_failure=on_failure,
        retention=retention,
        concurrency=concurrency,
    )


def _approval_input(
    ref: ObjectRef, generation: int, spec: Any, body: Mapping[str, Any]
) -> approval_rules.ApprovalInput:
    """The request's input with its retention resolved now; a saga's own gate request has none (it is its saga's
    record and goes with it, by garbage collection)."""
    given = approval_rules.workflow_input(ref, generation, spec, body)
    if approval_rules.gate_of(body) is None:
        given.retention = POLICIES.retention_for(spec.retention, ref.namespace)
    return given


# A person's repair decision (spec.repair), sent again on resume if the operator was down when it was made.
REPAIR = Signal(repair_signal.FIELD, repair_signal.EVENT, repair_signal.payload, catch_up=True)


SAGA = Binding(
    kind=TASK_SAGA,
    workflow=saga.NAME,
    workflow_fn=saga.saga_workflow,
    workflow_input=_saga_input,
    stop_event=_saga_stop_event,
    terminal_phases=frozenset(p.value for p in SagaPhase if p.terminal),
    rearm_event=REARM_EVENT,
    signals=(REPAIR,),
)


def _monitor_spec(body: dict[str, Any]) -> dict[str, Any] | None:
    """The new spec for a running monitor; an invalid one is left to the schema (it cannot get here)."""
    try:
        spec = HealthMonitorSpec.model_validate(body.get("spec") or {})
    except ValueError:
        return None
    generation = int(body["metadata"].get("generation") or 1)
    return monitor.SpecChange(spec=spec, generation=generation, actor=Actor.of(body)).wire()


MONITOR = Binding(
    kind=HEALTH_MONITOR,
    workflow=monitor.NAME,
    workflow_fn=monitor.monitor_workflow,
    initial_status={"phase": "Unknown"},
    signals=(Signal("spec", monitor.SPEC_CHANGED, _monitor_spec, catch_up=True),),
)

# ApprovalRequest: decisions arrive as spec.decision changes (the approver recorded by admission); its
# extra handlers create a gated TaskSaga's request and carry the outcome back to the saga.
APPROVAL = Binding(
    kind=APPROVAL_REQUEST,
    workflow=approval.NAME,
    workflow_fn=approval.approval_workflow,
    workflow_input=_approval_input,
    terminal_phases=frozenset(p.value for p in ApprovalPhase if p.terminal),
    rearm_event=REARM_EVENT,
    signals=(REPAIR,),
    register_extra=lambda bindings, registry, own: approval_handlers.register_handlers(bindings, registry, own, SAGA),
)


def _schedule_spec(body: dict[str, Any]) -> dict[str, Any] | None:
    """The new spec for a running schedule, with its editor (admission restamps the creator on each spec change)."""
    try:
        spec = SagaScheduleSpec.model_validate(body.get("spec") or {})
    except ValueError:
        return None
    generation = int(body["metadata"].get("generation") or 1)
    return schedule.SpecChange(spec=spec, generation=generation, actor=Actor.of(body)).wire()


# SagaSchedule: a workflow per schedule creates its TaskSagas (steadfast.schedules); edits arrive as events.
SCHEDULE = Binding(
    kind=SAGA_SCHEDULE,
    workflow=schedule.NAME,
    workflow_fn=schedule.schedule_workflow,
    initial_status={},
    signals=(Signal("spec", schedule.SPEC_CHANGED, _schedule_spec, catch_up=True),),
)

BINDINGS: tuple[Binding, ...] = (SAGA, MONITOR, APPROVAL, SCHEDULE)
