"""Where kopf keeps its state: no diff-base write for immutable kinds, no patch after a first success."""

from __future__ import annotations

from typing import Any

import kopf

from steadfast import persistence
from steadfast.api.kinds import HEALTH_MONITOR, KINDS, TASK_SAGA


def _body(kind: Any, status: dict[str, Any] | None = None) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {"name": "x", "namespace": "ns", "annotations": {}},
        "spec": {"a": 1},
    }
    if status is not None:
        raw["status"] = status
    return kopf.Body(raw)  # type: ignore[arg-type]


def test_an_immutable_kind_is_handled_without_a_diff_base_write() -> None:
    storage = persistence.DiffBaseStorage(KINDS, persistence.ProgressStorage())
    fresh, reported = _body(TASK_SAGA), _body(TASK_SAGA, {"phase": "Running"})
    assert storage.fetch(body=fresh) is None  # not yet reported: its creation is still to handle
    assert storage.fetch(body=reported) == storage.build(body=reported) == {}  # nothing to diff, nothing to copy
    retrying = _body(TASK_SAGA, {"phase": "Pending"})
    retrying["metadata"]["annotations"]["steadfast.dev/start"] = '{"retries":1,"delayed":"2026-01-01T00:00:00"}'
    assert storage.fetch(body=retrying) is None  # its start failed and is retried: still a creation
    patch = kopf.Patch()
    storage.store(body=reported, patch=patch, essence=storage.build(body=reported))
    assert not patch
    monitor = _body(HEALTH_MONITOR, {"phase": "Healthy"})
    assert storage.fetch(body=monitor) is None  # a mutable kind keeps kopf's annotation
    storage.store(body=monitor, patch=patch, essence=storage.build(body=monitor))
    assert "steadfast.dev/last-handled-configuration" in patch["metadata"]["annotations"]


def test_a_first_success_leaves_no_patch_behind() -> None:
    storage = persistence.ProgressStorage()
    body, patch = _body(TASK_SAGA), kopf.Patch()
    storage.store(key="start", record={"success": True}, body=body, patch=patch)
    storage.purge(key="start", body=body, patch=patch)  # type: ignore[arg-type]
    assert not patch
    storage.store(key="start", record={"retries": 1}, body=body, patch=patch)
    assert list(patch["metadata"]["annotations"]) == ["steadfast.dev/start"]  # a retry is still recorded


def test_a_sagas_diff_base_is_its_repair_decision_only_and_written_only_once_there_is_one() -> None:
    """kopf diffs spec.repair (its field handler) and nothing else; an undecided saga costs no annotation write."""
    storage = persistence.DiffBaseStorage(KINDS, persistence.ProgressStorage())
    undecided = _body(TASK_SAGA, {"phase": "Paused"})
    assert storage.build(body=undecided, extra_fields=["spec.repair"]) == {}
    patch = kopf.Patch()
    storage.store(body=undecided, patch=patch, essence=storage.build(body=undecided, extra_fields=["spec.repair"]))
    assert not patch
    assert storage.fetch(body=undecided) == {}  # nothing recorded: a first decision is a change
    decided = _body(TASK_SAGA, {"phase": "Paused"})
    decided["spec"]["repair"] = {"action": "Retry"}
    essence = storage.build(body=decided, extra_fields=["spec.repair"])
    assert essence == {"spec": {"repair": {"action": "Retry"}}}
    storage.store(body=decided, patch=patch, essence=essence)
    recorded = patch["metadata"]["annotations"]["steadfast.dev/last-handled-configuration"]
    assert "Retry" in recorded and '"a"' not in recorded  # the decision, not a copy of the whole spec
