"""One import point for the protobuf modules vendored in ``dapr-ext-workflow``.

The engine speaks exactly the wire format the SDK was compiled with, so it reuses the SDK's own
generated modules rather than shipping a second copy that could drift.
"""

from __future__ import annotations

from typing import Any

from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as _grpc
from dapr.ext.workflow._durabletask.internal import protos as _pb
from google.protobuf import empty_pb2 as _empty
from google.protobuf import timestamp_pb2 as _ts
from google.protobuf import wrappers_pb2 as _wrappers

pb: Any = _pb
pb_grpc: Any = _grpc
empty_pb2: Any = _empty
timestamp_pb2: Any = _ts
wrappers_pb2: Any = _wrappers

RUNNING: int = _pb.ORCHESTRATION_STATUS_RUNNING
COMPLETED: int = _pb.ORCHESTRATION_STATUS_COMPLETED
CONTINUED_AS_NEW: int = _pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW
FAILED: int = _pb.ORCHESTRATION_STATUS_FAILED
CANCELED: int = _pb.ORCHESTRATION_STATUS_CANCELED
TERMINATED: int = _pb.ORCHESTRATION_STATUS_TERMINATED
PENDING: int = _pb.ORCHESTRATION_STATUS_PENDING
SUSPENDED: int = _pb.ORCHESTRATION_STATUS_SUSPENDED
STALLED: int = _pb.ORCHESTRATION_STATUS_STALLED

TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, TERMINATED, CANCELED})

STATUS_NAMES: dict[int, str] = {
    RUNNING: "RUNNING",
    COMPLETED: "COMPLETED",
    CONTINUED_AS_NEW: "CONTINUED_AS_NEW",
    FAILED: "FAILED",
    CANCELED: "CANCELED",
    TERMINATED: "TERMINATED",
    PENDING: "PENDING",
    SUSPENDED: "SUSPENDED",
    STALLED: "STALLED",
}


def status_name(status: int) -> str:
    """Human name of a runtime status, as the SDK prints it."""
    return STATUS_NAMES.get(status, f"UNKNOWN({status})")


def timestamp(epoch: float) -> Any:
    """A protobuf Timestamp for a Unix time in seconds."""
    ts = _ts.Timestamp()
    ts.FromNanoseconds(int(epoch * 1e9))
    return ts


def to_epoch(ts: Any) -> float:
    """Unix seconds of a protobuf Timestamp (year 9999 sentinels included, no overflow)."""
    return float(ts.seconds) + float(ts.nanos) / 1e9
