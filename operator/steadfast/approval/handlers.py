"""kopf handlers of approvals: decisions to the workflow; a gated saga's ApprovalRequest and its outcome.

The only I/O of the approval package: the Kubernetes client (creating a gated saga's request) and the
workflow client (through the binding).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import kopf
from dapr.ext.workflow import WorkflowStatus
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.api.approval import ApprovalPhase
from steadfast.api.kinds import APPROVAL_REQUEST, TASK_SAGA, Kind
from steadfast.api.saga import SagaPhase
from steadfast.approval.policy import EffectiveGate
from steadfast.approval.rules import (
    DECISION_EVENT,
    GATE_EVENT,
    ApprovalInput,
    GateOutcome,
    asks_the_gate,
    decision_payload,
    gate_of,
    gate_outcome,
    gate_request,
)
from steadfast.binding import Binding, Bindings, instance_id
from steadfast.kube import api_client
from steadfast.workflows.saga import SagaInput

GATE_WAITS = 10  # times `outcome` waits for a decided gate request's workflow to end


def _left_pending(body: kopf.Body, **_: Any) -> bool:
    """Cheap filter for the gate-outcome handler: a request whose status left Pending (the handler verifies)."""
    phase = (body.get("status") or {}).get("phase")
    return bool(phase) and phase != ApprovalPhase.PENDING.value


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

    async def recorded_input(kind: Kind, meta: Mapping[str, Any], *, wait: float = 0) -> tuple[Any, str | None]:
        """An instance's (state, input) as the engine holds it; `wait`: seconds to wait for it to finish."""
        iid = instance_id(kind, meta["namespace"], meta["name"], meta["uid"])
        if wait:
            # The request's status (what woke us) is written just before its workflow ends: wait for the end,
            # a while longer under load (an event handler is not retried, so giving up would lose the outcome).
            state = None
            for _ in range(GATE_WAITS):
                try:
                    state = await asyncio.to_thread(
                        bindings.client.wait_for_workflow_completion,
                        iid,
                        fetch_payloads=True,
                        timeout_in_seconds=int(wait),
                    )
                    break
                except TimeoutError:  # the SDK's way of saying the wait ran out
                    continue
        else:
            state = await asyncio.to_thread(bindings.client.get_workflow_state, iid, fetch_payloads=True)
        return state, (state.serialized_input if state is not None else None)

    async def recorded_gate(owner: Mapping[str, Any]) -> EffectiveGate | None:
        """The gate the saga started with, from its instance's input: what admins and the spec said then."""
        _, given = await recorded_input(TASK_SAGA, owner)
        if not given:
            raise kopf.TemporaryError(f"workflow instance of TaskSaga {owner['name']} is not readable yet", delay=1)
        return SagaInput.model_validate_json(given).effective_gate()

    async def ensure(body: kopf.Body, logger: kopf.Logger) -> None:
        if (body.get("status") or {}).get("phase") in {p.value for p in SagaPhase if p.terminal}:
            return
        meta = body["metadata"]
        try:
            gate = await recorded_gate(meta)
        except ValueError:
            return  # an invalid spec is the binding's to report
        if gate is None:
            return
        manifest = gate_request(dict(body), gate, now=time.time())
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
        link = gate_of(existing)
        if link is None or link["uid"] != meta["uid"]:
            reason = f"an ApprovalRequest named {name} exists and is not this saga's"
        elif not asks_the_gate(existing.get("spec") or {}, gate):
            reason = f"ApprovalRequest {name} does not ask the gate's approvers ({gate.describe()})"
        else:
            return
        owner = {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}
        await tell_saga(owner, GateOutcome(approved=False, phase=ApprovalPhase.REJECTED, reason=reason), logger)

    async def outcome(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        """A gate request left Pending: its outcome, read from its own workflow, goes to the saga it gates.

        The status only says when to look. Which saga: the operator's seal on the request (never owner
        references). What was decided: the request's workflow output, computed from decisions admission sealed
        (never the status, which others may write). And the request must ask the approvers the saga recorded.
        """
        owner = gate_of(body)
        if owner is None:
            return
        state, given = await recorded_input(APPROVAL_REQUEST, body["metadata"], wait=30)
        if state is None or state.runtime_status != WorkflowStatus.COMPLETED or not given:
            logger.info("ApprovalRequest %s: its workflow has not finished; no outcome yet", body["metadata"]["name"])
            return
        data = gate_outcome(json.loads(state.serialized_output or "{}"))
        if data is None:
            return
        gate = await recorded_gate(owner)
        asked = ApprovalInput.model_validate_json(given).spec
        if gate is None or not asks_the_gate(asked.model_dump(mode="json", by_alias=True, exclude_none=True), gate):
            data = GateOutcome(
                approved=False,
                phase=ApprovalPhase.REJECTED,
                reason=f"ApprovalRequest {body['metadata']['name']} did not ask the approvers of the saga's gate",
            )
        await tell_saga(owner, data, logger)

    async def deleted(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        owner = gate_of(body)
        phase = (body.get("status") or {}).get("phase")
        if owner is not None and phase in (None, ApprovalPhase.PENDING.value):
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
    kopf.on.event(*aprs, registry=registry, id="gate-outcome", when=_left_pending)(outcome)
    kopf.on.delete(*aprs, registry=registry, id="gate-deleted", optional=True)(deleted)
