"""The Argo CD health checks in docs/argocd/argocd-cm.yaml, run by a real Lua interpreter against sample resources.

Argo CD runs each script with the live object as the global `obj` and reads `status`/`message` from the
returned table; lupa does the same here, Lua tables in and out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

lupa = pytest.importorskip("lupa")

CM = Path(__file__).resolve().parents[2] / "docs" / "argocd" / "argocd-cm.yaml"
KEY = "resource.customizations.health.steadfast.dev_{}"
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    script = yaml.safe_load(CM.read_text())["data"][KEY.format(kind)]
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _to_lua(runtime, obj)
    result = runtime.execute(script)
    status, message = str(result["status"]), str(result["message"])
    assert status in ARGO_STATUSES
    return status, message


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def resource(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "x", "namespace": "ns", "generation": generation}, "spec": {}}
    if status is not None:
        obj["status"] = {"observedGeneration": generation, **status}
    return obj


def ready(message: str) -> list[dict[str, Any]]:
    return [
        {"type": "Ready", "status": "False", "reason": "R", "message": message},
        {"type": "Reconciling", "status": "True", "reason": "R", "message": message},
    ]


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("Pending", "Progressing"),
        ("Running", "Progressing"),
        ("Compensating", "Progressing"),
        ("Queued", "Progressing"),  # waits for a concurrency slot: it moves on by itself, nobody needs to act
        ("AwaitingApproval", "Suspended"),
        ("Paused", "Suspended"),  # a step failed; a person decides (not finished, not healthy)
        ("Succeeded", "Healthy"),
        ("Compensated", "Degraded"),
        ("CompensationFailed", "Degraded"),
        ("Failed", "Degraded"),
        ("Rejected", "Degraded"),
    ],
)
def test_saga_phases(phase: str, expected: str) -> None:
    status, message = health("TaskSaga", resource({"phase": phase}))
    assert status == expected
    assert message.startswith(phase)


def test_compensated_saga_explains_why() -> None:
    obj = resource({"phase": "Compensated", "conditions": ready("step notify-assignee failed: HTTP 500")})
    assert health("TaskSaga", obj) == ("Degraded", "Compensated: step notify-assignee failed: HTTP 500")


@pytest.mark.parametrize("kind", ["TaskSaga", "HealthMonitor", "ApprovalRequest"])
def test_no_status_yet_is_progressing(kind: str) -> None:
    assert health(kind, resource(None))[0] == "Progressing"


@pytest.mark.parametrize("kind", ["TaskSaga", "HealthMonitor", "ApprovalRequest"])
def test_stale_status_is_progressing(kind: str) -> None:
    """A status written for an older spec says nothing about the current one (kstatus reads it the same way)."""
    obj = resource({"phase": "Succeeded" if kind == "TaskSaga" else "Healthy"}, generation=2)
    obj["status"]["observedGeneration"] = 1
    assert health(kind, obj) == ("Progressing", "Waiting for the operator to observe generation 2")


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("Unknown", "Progressing"),
        ("Healthy", "Healthy"),
        ("Unhealthy", "Degraded"),
        ("Suspended", "Suspended"),
    ],
)
def test_monitor_phases(phase: str, expected: str) -> None:
    assert health("HealthMonitor", resource({"phase": phase, "checkCount": 3}))[0] == expected


def test_unhealthy_monitor_shows_last_error() -> None:
    obj = resource({"phase": "Unhealthy", "checkCount": 7, "lastError": "GET /healthz: HTTP 503"})
    assert health("HealthMonitor", obj) == ("Degraded", "Target unhealthy (7 checks): GET /healthz: HTTP 503")


def test_waiting_approval_is_suspended() -> None:
    obj = resource({"phase": "Pending", "expiresAt": "2030-01-01T00:00:00Z"})
    assert health("ApprovalRequest", obj) == ("Suspended", "Waiting for a decision until 2030-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("Approved", "Progressing"),
        ("Executing", "Progressing"),
        ("Completed", "Healthy"),
        ("Rejected", "Degraded"),
        ("TimedOut", "Degraded"),
        ("ActionFailed", "Degraded"),
    ],
)
def test_approval_phases(phase: str, expected: str) -> None:
    assert health("ApprovalRequest", resource({"phase": phase}))[0] == expected


def test_decided_approval_names_the_approver() -> None:
    obj = resource({"phase": "Rejected", "reason": "not on a Friday", "approver": "alice"})
    assert health("ApprovalRequest", obj) == ("Degraded", "Rejected: not on a Friday (by alice)")


def test_every_phase_of_the_api_is_covered() -> None:
    """A phase added to the API must get a deliberate health mapping (Progressing is only the fallback)."""
    from steadfast.api.approval import ApprovalPhase
    from steadfast.api.monitor import MonitorPhase
    from steadfast.api.saga import SagaPhase

    data = yaml.safe_load(CM.read_text())["data"]
    for kind, phases in (("TaskSaga", SagaPhase), ("HealthMonitor", MonitorPhase), ("ApprovalRequest", ApprovalPhase)):
        script = data[KEY.format(kind)]
        fallback = {"Pending", "Running", "Compensating", "Unknown", "Approved", "Executing"}
        missing = [p.value for p in phases if f'"{p.value}"' not in script and p.value not in fallback]
        assert not missing, f"{kind}: no health mapping for {missing}"
