"""What a workflow engine holds, read through its gRPC API, so the same assertion holds on every engine.

`ListInstanceIDs` and `GetInstanceHistory` are part of Dapr's workflow protocol (daprd serves them for the
`dapr workflow` CLI); reading the local engine's SQLite file instead would test only the local engine.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

import grpc
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs
from dapr.ext.workflow._durabletask.internal import protos as pb
from google.protobuf import json_format


class _Token(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds `dapr-api-token` to every call, as the SDK's clients do."""

    def __init__(self, token: str) -> None:
        self._metadata = ("dapr-api-token", token)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or []), self._metadata]
        return continuation(details._replace(metadata=metadata), request)


class WorkflowAPI:
    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        token = os.environ.get("DAPR_API_TOKEN")
        if token:  # daprd's API token (see controlplane.daprd.api_token); the local engine ignores it
            self._channel = grpc.intercept_channel(self._channel, _Token(token))
        self._stub = stubs.TaskHubSidecarServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def instance_ids(self) -> list[str]:
        """Every instance the engine stores (all pages)."""
        ids: list[str] = []
        token: str | None = None
        while True:
            request = pb.ListInstanceIDsRequest(pageSize=500)
            if token:
                request.continuationToken = token
            response = self._stub.ListInstanceIDs(request, timeout=30)
            ids.extend(response.instanceIds)
            token = response.continuationToken if response.HasField("continuationToken") else None
            if not token or not response.instanceIds:
                return ids

    def history(self, instance_id: str) -> list[pb.HistoryEvent]:
        """The stored history events of the instance's current run."""
        response = self._stub.GetInstanceHistory(pb.GetInstanceHistoryRequest(instanceId=instance_id), timeout=30)
        return list(response.events)

    def history_dicts(self, instance_id: str) -> list[dict[str, Any]]:
        """The history as JSON-shaped dicts (`{"taskCompleted": {...}, "eventId": 3, ...}`)."""
        return [json_format.MessageToDict(e) for e in self.history(instance_id)]

    def event_kinds(self, instance_id: str) -> list[str]:
        """The history as event kinds (`executionStarted`, `taskScheduled`, ...), in order."""
        return [str(e.WhichOneof("eventType")) for e in self.history(instance_id)]

    def runtime_status(self, instance_id: str) -> str:
        """The instance's runtime status as the engine names it (`RUNNING`, `COMPLETED`, `STALLED`, ...), or
        `MISSING`."""
        response = self._stub.GetInstance(pb.GetInstanceRequest(instanceId=instance_id), timeout=30)
        if not response.exists:
            return "MISSING"
        return str(pb.OrchestrationStatus.Name(response.workflowState.workflowStatus)).removeprefix(
            "ORCHESTRATION_STATUS_"
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> WorkflowAPI:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
