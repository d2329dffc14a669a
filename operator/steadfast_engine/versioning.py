"""Workflow versioning as daprd 1.18.3 records and enforces it: patches and named versions.

A worker reports with each result the version it ran: the patches its code saw as applied
(``ctx.is_patched``, in call order) and the name of a versioned workflow. The engine keeps it on that
turn's ``workflowStarted`` event, so the next replay knows which patches earlier turns took. Like daprd's
workflow actor (``orchestrator/versioning.go``) the engine then:

* keeps on each ``workflowStarted`` only the patches the history does not hold yet (``compact``);
* stalls the instance when the worker's code is older than its history: a patch the history holds is
  missing from what the worker reported (``PATCH_MISMATCH``), or the worker has not got the workflow's
  recorded version (it answers ``workflowVersionNotAvailable``: ``VERSION_NOT_AVAILABLE``).

A stalled instance keeps the events of the refused turn for a later try and records why in an
``executionStalled`` event; see :meth:`steadfast_engine.history.HistoryApplication.complete_orchestration`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from .protos import pb


def record(started: Any, version: Any) -> None:
    """Keep the worker's version on the turn's ``workflowStarted`` when it says anything (as daprd does)."""
    if version.patches or version.HasField("name"):
        started.workflowStarted.version.CopyFrom(version)


def _patches(events: Iterable[Any]) -> list[str]:
    found: list[str] = []
    for ev in events:
        if ev.HasField("workflowStarted") and ev.workflowStarted.HasField("version"):
            found.extend(ev.workflowStarted.version.patches)
    return found


def _current(new_events: Sequence[Any]) -> list[str]:
    for ev in reversed(new_events):
        if ev.HasField("workflowStarted") and ev.workflowStarted.HasField("version"):
            return list(ev.workflowStarted.version.patches)
    return []


def _version_name(history: Iterable[Any]) -> str:
    for ev in history:
        if ev.HasField("workflowStarted"):
            return str(ev.workflowStarted.version.name)
    return ""


def stall(history: Sequence[Any], new_events: Sequence[Any], actions: Iterable[Any]) -> tuple[int, str] | None:
    """Why this turn stalls the instance (reason, description in daprd's words), or None when it does not."""
    if any(a.HasField("workflowVersionNotAvailable") for a in actions):
        return pb.VERSION_NOT_AVAILABLE, f"Version not available: {_version_name(history)}"
    recorded = _patches(history)
    if not recorded:
        return None
    current = _current(new_events)
    if current[: len(recorded)] == recorded:
        return None
    return (
        pb.PATCH_MISMATCH,
        f"Patch mismatch. History patches: [{', '.join(recorded)}], current patches: [{', '.join(current)}]. ",
    )


def compact(history: Sequence[Any], new_events: Sequence[Any]) -> None:
    """Keep on the turn's ``workflowStarted`` only patches the history has not recorded (daprd's compaction).

    As in daprd the compacted version keeps only the patches (a version name beside them is not kept).
    """
    for ev in new_events:
        if not ev.HasField("workflowStarted"):
            continue
        version = ev.workflowStarted.version
        if ev.workflowStarted.HasField("version") and version.patches:
            known = Counter(_patches(history))
            fresh: list[str] = []
            for patch in version.patches:
                if known[patch] > 0:
                    known[patch] -= 1
                else:
                    fresh.append(patch)
            ev.workflowStarted.ClearField("version")
            if fresh:
                ev.workflowStarted.version.patches.extend(fresh)
        return
