"""One engine with the test workflows' worker and a client, as the fidelity tests compare them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dapr.ext.workflow as wf
import grpc
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs

from steadfast.dev import engines

_RUN = uuid.uuid4().hex[:8]


@dataclass
class Bed:
    """One engine with the test workflows' worker and a client: what the fidelity tests compare."""

    name: str
    engine: engines.Engine
    client: wf.DaprWorkflowClient
    marks: Path

    def id(self, label: str) -> str:
        """The instance ID for `label` in this run: the same on every engine, so messages that name it compare."""
        return f"{label}-{_RUN}"

    @contextmanager
    def raw(self) -> Iterator[Any]:
        """A bare gRPC stub of the workflow API, as SDKs other than Python's call it (with daprd's API token)."""
        token = os.environ.get("DAPR_API_TOKEN")
        with grpc.insecure_channel(self.engine.address) as channel:
            stub = stubs.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
            yield _Authorised(stub, (("dapr-api-token", token),) if token else ())


class _Authorised:
    """Every call of the stub carries the API token, as the SDKs send it."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, method: str) -> Any:
        call = getattr(self._stub, method)
        return lambda request, timeout=30.0: call(request, timeout=timeout, metadata=self._metadata)
