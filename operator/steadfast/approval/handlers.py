"""kopf handlers of approvals: decisions to the workflow; a gated saga's ApprovalRequest and its outcome.

The only I/O of the approval package: the Kubernetes client (creating a gated saga's request) and the
workflow client (through the binding).
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
from dapr.ext.workflow import WorkflowStatus
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.api.approval import ApprovalPhase
from steadfast.api.kinds import APPROVAL_REQUEST, TASK_SAGA
from steadfast.api.saga import SagaPhase
from steadfast.approval.policy import EffectiveGate
from steadfast.approval.rules import (
    DECISION_EVENT,
    GATE_EVENT,
    GateOutcome,
    decision_payload,
    gate_outcome,
    gate_request,
    saga_owner,
)
from steadfast.binding import Binding, Bindings, instance_id
from steadfast.kube import api_client
from steadfast.workflows.saga import SagaInput


def register_handlers(
    bindings: Bindings, registry: kopf.OperatorRegistry, binding: Binding, saga_binding: Binding
) -> None:
    """kopf handlers: decisions to the workflow; a gated saga's ApprovalRequest and its outcome to the saga.

    Decisions have their own field handler rather than a generic `Signal`: the first decision changes
    spec.decision from nothing, which the generic one reads as creation. After every start (a resume
    included), a decision whose decider is not yet in status.approvals is sent again (the workflow ignores
    a repeat).
    """

    async def decided(body: kopf.Body, **_: Any) -> None:
        data = decision_payload(body)
        if data is not None:
            await bindings.signal(binding, body, DECISION_EVENT, data.wire())

    async def catch_up(body: kopf.Body, _logger: kopf.Logger) -> None:
        status = body.get("status") or {}
        data = decision_payload(body)
        recorded = {a.get("user") for a in status.get("approvals") or []}
        if data is not None and status.get("phase") == ApprovalPhase.PENDING.value and data.user not in recorded:
            await bindings.signal(binding, body, DECISION_EVENT, data.wire())

    objects: list[client.CustomObjectsApi] = []

    def api() -> client.CustomObjectsApi:
        if not objects:
            objects.append(client.CustomObjectsApi(api_client()))
        return objects[0]

    async def tell_saga(owner: dict[str, str], data: GateOutcome, logger: Any) -> None:
        iid = instance_id(TASK_SAGA, owner["namespace"], owner["name"], owner["uid"])
        state = await asyncio.to_thread(bindings.client.get_workflow_state, iid, fetch_payloads=False)
        if state is None or state.runtime_status != WorkflowStatus.RUNNING:
            return  # the saga has moved on (or is gone): nothing waits for this outcome
        raw: Any = {"metadata": owner}  # only what Bindings.ref reads
        await bindings.signal(saga_binding, kopf.Body(raw), GATE_EVENT, data.wire())
        logger.info("approval outcome %s sent to TaskSaga %s", data.phase.value, owner["name"])

    async def recorded_gate(body: kopf.Body) -> EffectiveGate | None:
        """The gate the saga started with, from its instance's input: what admins and the spec said then."""
        meta = body["metadata"]
        iid = instance_id(TASK_SAGA, meta["namespace"], meta["name"], meta["uid"])
        state = await asyncio.to_thread(bindings.client.get_workflow_state, iid, fetch_payloads=True)
        if state is None or not state.serialized_input:
            raise kopf.TemporaryError(f"workflow instance {iid} is not readable yet", delay=1)
        return SagaInput.model_validate_json(state.serialized_input).effective_gate()

    async def ensure(body: kopf.Body, logger: kopf.Logger) -> None:
        if (body.get("status") or {}).get("phase") in {p.value for p in SagaPhase if p.terminal}:
            return
        try:
            gate = await recorded_gate(body)
        except ValueError:
            return  # an invalid spec is the binding's to report
        if gate is None:
            return
        manifest = gate_request(dict(body), gate)
        meta = body["metadata"]
        name = manifest["metadata"]["name"]
        try:
            await asyncio.to_thread(
                api().create_namespaced_custom_object,
                APPROVAL_REQUEST.group,
                APPROVAL_REQUEST.version,
                meta["namespace"],
                APPROVAL_REQUEST.plural,
                manifest,
            )
            logger.info("created ApprovalRequest %s for the approval gate", name)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise kopf.TemporaryError(
                    f"cannot create ApprovalRequest {name}: HTTP {exc.status} {(exc.body or '')[:300]}", delay=2
                ) from exc
        existing = await asyncio.to_thread(
            api().get_namespaced_custom_object,
            APPROVAL_REQUEST.group,
            APPROVAL_REQUEST.version,
            meta["namespace"],
            APPROVAL_REQUEST.plural,
            name,
        )
        owner = saga_owner(existing)
        spec = existing.get("spec") or {}
        wanted = manifest["spec"]
        if owner is None or owner["uid"] != meta["uid"]:
            reason = f"an ApprovalRequest named {name} exists and is not this saga's"
        elif (spec.get("approvers"), spec.get("timeout")) != (wanted["approvers"], wanted["timeout"]):
            # Someone who may create ApprovalRequests in the namespace made one first, owned by the saga but
            # with approvers of their choosing: never let it stand in for the gate.
            reason = f"ApprovalRequest {name} does not ask the gate's approvers ({gate.describe()})"
        else:
            return
        owner = {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}
        await tell_saga(owner, GateOutcome(approved=False, phase=ApprovalPhase.REJECTED, reason=reason), logger)

    async def outcome(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        owner = saga_owner(body)
        data = gate_outcome(body)
        if owner is not None and data is not None:
            await tell_saga(owner, data, logger)

    async def deleted(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        owner = saga_owner(body)
        if owner is not None and gate_outcome(body) is None:
            await tell_saga(
                owner,
                GateOutcome(
                    approved=False,
                    phase=ApprovalPhase.REJECTED,
                    reason=f"ApprovalRequest {body['metadata']['name']} was deleted undecided",
                ),
                logger,
            )

    aprs = (APPROVAL_REQUEST.group, APPROVAL_REQUEST.version, APPROVAL_REQUEST.plural)
    kopf.on.field(*aprs, field="spec.decision", registry=registry, id="decision")(decided)
    bindings.after_start(binding, catch_up)
    bindings.after_start(saga_binding, ensure)
    kopf.on.event(*aprs, registry=registry, id="gate-outcome", when=lambda body, **_: saga_owner(body) is not None)(
        outcome
    )
    kopf.on.delete(*aprs, registry=registry, id="gate-deleted", optional=True)(deleted)
