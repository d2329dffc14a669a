"""The one path from a resource to its workflow instance and back, for every kind.

start (create/resume, idempotent) -> signal (field changes) -> stop (delete) -> status via the writer.
Nothing here is remembered between calls: after a restart, the truth is the engine and the resource.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import kopf
import urllib3
from dapr.ext.workflow import DaprWorkflowClient, WorkflowStatus
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from steadfast import persistence
from steadfast.api.common import ApiModel, StatusBase
from steadfast.api.errors import Unstartable, invalid_spec
from steadfast.api.kinds import Kind
from steadfast.conditions import State, conditions
from steadfast.records import Actor, ObjectRef, WorkflowInput
from steadfast.status import StatusWriter

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_RUNNING = {WorkflowStatus.RUNNING, WorkflowStatus.PENDING, WorkflowStatus.SUSPENDED}


def instance_id(kind: Kind, namespace: str, name: str, uid: str) -> str:
    """Deterministic, so a restarted operator finds the instance it started instead of starting a twin."""
    return _UNSAFE.sub("_", f"{kind.singular}-{namespace}-{name}-{uid}")


@dataclass(frozen=True)
class Signal:
    """A change of `field` that the running workflow must hear about, as event `event`.

    `payload` builds the event data from the resource; `catch_up` re-sends it when the operator finds,
    on resume, that the workflow has not seen the resource's current generation (a change made while
    the operator was down).
    """

    field: str
    event: str
    payload: Callable[[dict[str, Any]], dict[str, Any] | None]
    catch_up: bool = False


@dataclass(frozen=True)
class Binding:
    """Everything the operator knows of one kind: what differs on the common path; the rest is shared."""

    kind: Kind
    workflow: str
    # The workflow function registered under `workflow` on the worker.
    workflow_fn: Callable[..., Any]
    # Delete of a running instance: an event name to raise (the workflow winds down and ends by
    # itself), or None to terminate it.
    stop_event: Callable[[Any], str | None] = lambda spec: None
    # Status before the workflow's first report, e.g. {"phase": "Pending"}.
    initial_status: dict[str, Any] = field(default_factory=lambda: {"phase": "Pending"})
    # Phases after which the instance is never (re)started.
    terminal_phases: frozenset[str] = frozenset()
    # The workflow's input for a resource: the generic record, or a kind's subclass carrying more (for
    # example the authenticated creator).
    workflow_input: Callable[[ObjectRef, int, ApiModel, Mapping[str, Any]], WorkflowInput[Any]] = (
        lambda ref, generation, spec, body: WorkflowInput(ref=ref, generation=generation, spec=spec)
    )
    signals: tuple[Signal, ...] = ()
    # Raised on a running instance on resume, so its waiting Kubernetes actions register again.
    rearm_event: str | None = None
    # Handlers of this kind beyond the common path (the approval gate), registered with the rest.
    register_extra: Callable[[Bindings, kopf.OperatorRegistry, Binding], None] = lambda bindings, registry, own: None


StartHook = Callable[[kopf.Body, kopf.Logger], Awaitable[None]]


class Bindings:
    """Registers kopf handlers for each binding; shares the workflow client and the status writer."""

    def __init__(self, client: DaprWorkflowClient, writer: StatusWriter) -> None:
        self.client = client
        self.writer = writer
        self._after_start: dict[str, list[StartHook]] = {}

    def after_start(self, binding: Binding, hook: StartHook) -> None:
        """Run `hook` in the same kopf handler as the start, after it (and again on retry: it must be idempotent).

        One handler per cause is what lets kopf finish a resource without writing progress annotations.
        """
        self._after_start.setdefault(binding.kind.plural, []).append(hook)

    @staticmethod
    def ref(kind: Kind, body: kopf.Body) -> ObjectRef:
        meta = body["metadata"]
        return ObjectRef(kind.group, kind.version, kind.kind, kind.plural, meta["namespace"], meta["name"], meta["uid"])

    def register(self, binding: Binding, registry: kopf.OperatorRegistry) -> None:
        kind = binding.kind
        resource = (kind.group, kind.version, kind.plural)

        async def start(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:  # on create and on resume
            await self._begin(binding, body, logger)

        async def stop(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
            await self.stop(binding, body, logger)

        def unfinished(body: kopf.Body, **_: Any) -> bool:  # a restart need not even call into a finished one
            return (body.get("status") or {}).get("phase") not in binding.terminal_phases or _unseen(body)

        kopf.on.resume(*resource, registry=registry, id=persistence.START, when=unfinished)(start)
        kopf.on.create(*resource, registry=registry, id=persistence.START)(start)
        kopf.on.delete(*resource, registry=registry, id="stop")(stop)
        for sig in binding.signals:
            self._register_signal(binding, sig, registry)
        binding.register_extra(self, registry, binding)

    async def _begin(self, binding: Binding, body: kopf.Body, logger: kopf.Logger) -> None:
        await self.start(binding, body, logger)
        for hook in self._after_start.get(binding.kind.plural, ()):
            await hook(body, logger)

    def _register_signal(self, binding: Binding, sig: Signal, registry: kopf.OperatorRegistry) -> None:
        kind = binding.kind

        async def changed(body: kopf.Body, reason: str, **_: Any) -> None:
            if reason == kopf.Reason.CREATE:
                return  # the workflow starts with the current spec
            data = sig.payload(dict(body))
            if data is not None:
                await self.signal(binding, body, sig.event, data)

        kopf.on.field(
            kind.group, kind.version, kind.plural, field=sig.field, registry=registry, id=f"signal-{sig.event}"
        )(changed)

    async def start(self, binding: Binding, body: kopf.Body, logger: kopf.Logger) -> None:
        """Start the resource's instance; an existing one is left alone (it is the same instance).

        On create the instance is scheduled straight away and its first report writes status, so the
        path to `Running` costs no extra write; only a failure to start is written here.
        """
        kind = binding.kind
        ref = self.ref(kind, body)
        status = dict(body.get("status") or {})
        generation = int(body["metadata"].get("generation") or 1)
        if status.get("phase") in binding.terminal_phases:
            # Never started again; but a decision made while the operator was down (a repair of a
            # CompensationFailed saga, whose workflow waits for one) still reaches the workflow.
            if _unseen(body):
                await self._catch_up(binding, body, logger)
            return

        def reporting(state: State, reason: str, message: str, **fields: Any) -> StatusBase:
            """The status that says why the start did not happen (yet): one condition, the rest as given."""
            found = conditions(
                state,
                reason=reason,
                message=message,
                generation=generation,
                now=_now(),
                previous=status.get("conditions"),
            )
            return kind.status_model(**fields, observed_generation=generation, conditions=found)

        try:
            spec = kind.parse_spec(body.get("spec") or {})
        except ValidationError as exc:
            problems = invalid_spec(exc)  # what admission says too (steadfast.webhooks)
            # No phase: not every kind has a "Failed" one; the Stalled condition carries the reason.
            await self._write(ref, reporting("stalled", "InvalidSpec", problems))
            raise kopf.PermanentError(f"invalid spec: {problems}") from None
        iid = instance_id(kind, ref.namespace, ref.name, ref.uid)

        async def engine_unavailable(exc: grpc.RpcError) -> kopf.TemporaryError:
            """Retry soon, saying why: a raw gRPC error would make kopf wait its default 60 s (daprd restarting,
            its state store down: both pass in seconds)."""
            message = f"cannot start workflow {iid}: {_grpc_message(exc)}"
            if not status.get("phase"):
                waiting = reporting(
                    "progressing", "EngineUnavailable", message, **binding.initial_status, workflow_instance_id=iid
                )
                await self._write(ref, waiting)
            return kopf.TemporaryError(message, delay=2)

        # Looked up on create too: daprd starts a *finished* instance's ID afresh, so a repeated create (every
        # event before the first status write counts as one, see persistence) must not schedule blindly.
        try:
            existing = await asyncio.to_thread(self.client.get_workflow_state, iid, fetch_payloads=False)
        except grpc.RpcError as exc:
            raise await engine_unavailable(exc) from exc
        if existing is not None:
            logger.debug("workflow instance %s already exists (%s)", iid, existing.runtime_status.name)
            if binding.rearm_event and existing.runtime_status == WorkflowStatus.RUNNING:
                # Waits on the shared watches were in the last process's memory: the workflow registers again.
                # Best effort: a waiting workflow also re-arms on its own (workflows.common.REARM_EVERY).
                try:
                    await self.signal(binding, body, binding.rearm_event, {"reason": "operator resumed"})
                except kopf.TemporaryError as exc:
                    logger.info("no re-arm for %s: %s", iid, exc)
            if int(status.get("observedGeneration") or 0) < generation:
                await self._catch_up(binding, body, logger)
            return
        try:  # in a thread: a kind's input may read the API server (a saga's policies)
            given = await asyncio.to_thread(binding.workflow_input, ref, generation, spec, body)
        except Unstartable as exc:  # e.g. its template is gone: nothing runs, the condition says why
            await self._write(ref, reporting("stalled", exc.reason, exc.message))
            raise kopf.PermanentError(exc.message) from None
        except (ApiException, ValueError, urllib3.exceptions.HTTPError) as exc:
            reason = f"HTTP {exc.status}" if isinstance(exc, ApiException) else str(exc)
            message = f"cannot prepare the workflow's input: {reason}"
            await self._write(ref, reporting("progressing", "PolicyUnreadable", message))
            raise kopf.TemporaryError(message, delay=5) from exc
        if given.actor is None:
            given.actor = Actor.of(body)  # stamped by admission: never a field users type
        payload = given.wire()
        try:
            await asyncio.to_thread(self.client.schedule_new_workflow, binding.workflow, input=payload, instance_id=iid)
        except grpc.RpcError as exc:
            if "already exists" in str(exc).lower():
                return  # started before (a redelivered create, or a resume after a crash)
            raise await engine_unavailable(exc) from exc
        logger.info("workflow %s started for %s %s/%s", iid, kind.kind, ref.namespace, ref.name)

    async def _catch_up(self, binding: Binding, body: kopf.Body, logger: kopf.Logger) -> None:
        """Send the signals the workflow has not seen: it reports a lower observedGeneration than the resource's.
        Workflows ignore a signal of a generation they already handled, so a resend is harmless."""
        for sig in binding.signals:
            data = sig.payload(dict(body)) if sig.catch_up else None
            if data is not None:
                logger.info("sending %s again: the workflow has not reported this generation", sig.event)
                await self.signal(binding, body, sig.event, data)

    async def signal(self, binding: Binding, body: kopf.Body, event: str, data: dict[str, Any]) -> None:
        """Raise `event` on the resource's instance; the SDK drops falsy payloads, so `data` must not be empty."""
        ref = self.ref(binding.kind, body)
        iid = instance_id(binding.kind, ref.namespace, ref.name, ref.uid)
        try:
            await asyncio.to_thread(self.client.raise_workflow_event, iid, event, data=data or {"signal": event})
        except grpc.RpcError as exc:
            raise kopf.TemporaryError(f"cannot signal {iid}: {_grpc_message(exc)}", delay=2) from exc

    async def stop(self, binding: Binding, body: kopf.Body, logger: kopf.Logger) -> None:
        kind = binding.kind
        ref = self.ref(kind, body)
        iid = instance_id(kind, ref.namespace, ref.name, ref.uid)
        try:
            state = await asyncio.to_thread(self.client.get_workflow_state, iid, fetch_payloads=False)
            if state is not None and state.runtime_status in _RUNNING:
                event = binding.stop_event(body.get("spec") or {})
                if event is None:
                    await asyncio.to_thread(self.client.terminate_workflow, iid)
                    logger.info("terminated workflow %s", iid)
                else:
                    await asyncio.to_thread(self.client.raise_workflow_event, iid, event, data={"reason": "deleted"})
                    state = await asyncio.to_thread(
                        self.client.wait_for_workflow_completion, iid, fetch_payloads=False, timeout_in_seconds=5
                    )
                    if state is None or state.runtime_status in _RUNNING:
                        raise kopf.TemporaryError(f"waiting for workflow {iid} to wind down before deletion", delay=1)
                state = await asyncio.to_thread(
                    self.client.wait_for_workflow_completion, iid, fetch_payloads=False, timeout_in_seconds=10
                )
            if state is not None:
                await asyncio.to_thread(self.client.purge_workflow, iid)
        except TimeoutError as exc:
            # The SDK's waits end so (not as a gRPC DEADLINE_EXCEEDED): come back soon, not after kopf's 60 s.
            raise kopf.TemporaryError(f"waiting for workflow {iid} to end", delay=1) from exc
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise kopf.TemporaryError(f"waiting for workflow {iid} to end", delay=1) from exc
            raise kopf.TemporaryError(f"cannot stop workflow {iid}: {_grpc_message(exc)}", delay=2) from exc
        self.writer.forget(ref)
        logger.info("workflow %s purged", iid)

    async def _write(self, ref: ObjectRef, status: StatusBase) -> None:
        """Write the fields `status` was given (the workflow's reports own the rest)."""
        future = self.writer.submit(ref, status.to_patch(only_given=True), seq=0, urgent=True)
        await asyncio.wrap_future(future)


def _unseen(body: Mapping[str, Any]) -> bool:
    """The resource changed after its workflow last reported (a decision it may not have received)."""
    generation = int((body.get("metadata") or {}).get("generation") or 1)
    return int((body.get("status") or {}).get("observedGeneration") or 0) < generation


def _now() -> datetime:
    return datetime.now(UTC)


def _grpc_message(exc: grpc.RpcError) -> str:
    details = getattr(exc, "details", None)
    return str(details() if callable(details) else exc)
