"""The gRPC ``TaskHubSidecarService``: request validation and waiting, on top of :class:`~.core.Engine`.

Every handler turns engine refusals into gRPC status codes and any unexpected exception into
``INTERNAL``, so garbage input gets an error answer and never takes the engine down. Handlers that
change state answer only once the change is durable (they wait on the store's commit ticket).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from . import store as st
from .core import Engine, EngineError, Instance
from .protos import PENDING, RUNNING, SUSPENDED, TERMINAL_STATUSES, empty_pb2, pb, pb_grpc, wrappers_pb2

log = logging.getLogger("steadfast.engine.service")

F = TypeVar("F", bound=Callable[..., Any])


def _guard(fn: F) -> F:
    """Map engine errors to gRPC codes; never let an exception escape as a crash."""

    @functools.wraps(fn)
    def wrapper(self: TaskHubService, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except EngineError as exc:
            log.debug("%s refused: %s", fn.__name__, exc.message)
            context.abort(exc.code, exc.message)
        except st.StoreError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception as exc:
            log.exception("%s failed", fn.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{fn.__name__} failed: {type(exc).__name__}: {exc}")

    return wrapper  # type: ignore[return-value]


def _timeout(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e8 else max(0.0, float(remaining))


def _response(state: Any | None) -> Any:
    if state is None:
        return pb.GetInstanceResponse(exists=False)
    return pb.GetInstanceResponse(exists=True, workflowState=state)


def _started(inst: Instance) -> bool:
    return inst.status != PENDING


def _finished(inst: Instance) -> bool:
    return inst.status in TERMINAL_STATUSES


class TaskHubService(pb_grpc.TaskHubSidecarServiceServicer):  # type: ignore[misc]
    """The servicer the SDK's ``TaskHubGrpcClient`` and ``TaskHubGrpcWorker`` talk to."""

    def __init__(self, engine: Engine, *, wait_for_start: bool = True) -> None:
        self.engine = engine
        self.wait_for_start = wait_for_start

    # -- client API --------------------------------------------------------------------------

    @_guard
    def Hello(self, request: Any, context: grpc.ServicerContext) -> Any:
        return empty_pb2.Empty()

    def _reach(self, iid: str, context: grpc.ServicerContext, prefix: str = "") -> None:
        """Refuse a call on an instance as daprd does when no worker connects within its lookup time."""
        wait = self.engine.worker_wait
        if wait is None:
            return
        timeout = _timeout(context)
        if not self.engine.wait_for_worker(wait if timeout is None else min(wait, timeout), context.add_callback):
            if timeout is not None and timeout <= wait:
                raise EngineError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            raise self.engine.unreachable(iid, prefix)

    @_guard
    def StartInstance(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self.engine.worker_wait is not None and not self.engine.wait_for_worker(
            _timeout(context), context.add_callback
        ):
            # daprd creates nothing until a worker is there to host the workflow's actor, and keeps trying
            raise EngineError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        iid, ticket = self.engine.start_instance(request)
        ticket.wait()
        if self.wait_for_start and not request.HasField("scheduledStartTimestamp"):
            # durabletask-go answers once a worker has picked the instance up; without a worker
            # that would block forever, so the wait only lasts while a worker is connected.
            self.engine.wait_for(iid, _started, False, _timeout(context), context.add_callback, only_while_workers=True)
        return pb.CreateInstanceResponse(instanceId=iid)

    @_guard
    def GetInstance(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _response(self.engine.get_state(request.instanceId, request.getInputsAndOutputs))

    @_guard
    def WaitForInstanceStart(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._wait(request, context, _started)

    @_guard
    def WaitForInstanceCompletion(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._wait(request, context, _finished)

    def _wait(self, request: Any, context: grpc.ServicerContext, predicate: Callable[[Instance], bool]) -> Any:
        state = self.engine.wait_for(
            request.instanceId, predicate, request.getInputsAndOutputs, _timeout(context), context.add_callback
        )
        if not context.is_active():
            raise EngineError(grpc.StatusCode.CANCELLED, "wait cancelled")
        return _response(state)

    @_guard
    def RaiseEvent(self, request: Any, context: grpc.ServicerContext) -> Any:
        value = request.input if request.HasField("input") else None
        self._reach(request.instanceId, context)
        self.engine.raise_event(request.instanceId, request.name, value).wait()
        return pb.RaiseEventResponse()

    @_guard
    def TerminateInstance(self, request: Any, context: grpc.ServicerContext) -> Any:
        output = request.output if request.HasField("output") else None
        self._reach(request.instanceId, context, "failed to submit termination request: ")
        self.engine.control(request.instanceId, "terminate", output, request.recursive).wait()
        self.engine.wait_for(
            request.instanceId, _finished, False, _timeout(context), context.add_callback, only_while_workers=True
        )
        return pb.TerminateResponse()

    @_guard
    def SuspendInstance(self, request: Any, context: grpc.ServicerContext) -> Any:
        reason = request.reason if request.HasField("reason") else None
        self._reach(request.instanceId, context)
        self.engine.control(request.instanceId, "suspend", reason).wait()
        self.engine.wait_for(
            request.instanceId,
            lambda i: i.status == SUSPENDED or _finished(i),
            False,
            _timeout(context),
            context.add_callback,
            only_while_workers=True,
        )
        return pb.SuspendResponse()

    @_guard
    def ResumeInstance(self, request: Any, context: grpc.ServicerContext) -> Any:
        reason = request.reason if request.HasField("reason") else None
        self._reach(request.instanceId, context)
        self.engine.control(request.instanceId, "resume", reason).wait()
        self.engine.wait_for(
            request.instanceId,
            lambda i: i.status == RUNNING or _finished(i),
            False,
            _timeout(context),
            context.add_callback,
            only_while_workers=True,
        )
        return pb.ResumeResponse()

    @_guard
    def PurgeInstances(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.WhichOneof("request") == "purgeInstanceFilter":
            # daprd 1.18.3's answer, word for word (durabletask-go's executor has no multi-instance purge)
            raise EngineError(grpc.StatusCode.UNKNOWN, "multi-instance purge is not unimplemented")
        self._reach(request.instanceId, context, "failed to purge workflow state: ")
        count, ticket = self.engine.purge(request.instanceId, request.recursive)
        ticket.wait()
        return pb.PurgeInstancesResponse(deletedInstanceCount=count, isComplete=wrappers_pb2.BoolValue(value=True))

    @_guard
    def ListInstanceIDs(self, request: Any, context: grpc.ServicerContext) -> Any:
        start_after = request.continuationToken if request.HasField("continuationToken") else None
        ids, token = self.engine.list_instance_ids(start_after, request.pageSize)
        response = pb.ListInstanceIDsResponse(instanceIds=ids)
        if token is not None:
            response.continuationToken = token
        return response

    @_guard
    def GetInstanceHistory(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.GetInstanceHistoryResponse(events=self.engine.history(request.instanceId))

    @_guard
    def RerunWorkflowFromEvent(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise EngineError(
            grpc.StatusCode.UNIMPLEMENTED,
            "RerunWorkflowFromEvent is not implemented by the steadfast local engine",
        )

    # -- worker API --------------------------------------------------------------------------

    def GetWorkItems(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            stream = self.engine.open_stream(context.peer())
        except EngineError as exc:
            context.abort(exc.code, exc.message)
        if not context.add_callback(lambda: self.engine.close_stream(stream)):
            self.engine.close_stream(stream)
            return
        try:
            while True:
                item = self.engine.next_work_item(stream)
                if item is None:
                    return
                yield item
        finally:
            self.engine.close_stream(stream)

    @_guard
    def CompleteActivityTask(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.engine.complete_activity(request).wait()
        return pb.CompleteTaskResponse()

    @_guard
    def CompleteOrchestratorTask(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.engine.complete_orchestration(request).wait()
        return pb.CompleteTaskResponse()

    @_guard
    def CompleteWorkflowTask(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.engine.complete_orchestration(request).wait()
        return pb.CompleteTaskResponse()
