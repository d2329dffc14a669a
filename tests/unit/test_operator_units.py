"""Pure pieces of the operator: egress policy, idempotency keys, backoff, conditions, the status writer."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from steadfast import persistence
from steadfast.actions import idempotency_key
from steadfast.api.kinds import HEALTH_MONITOR, KINDS, TASK_SAGA
from steadfast.api.saga import RetryPolicy
from steadfast.binding import instance_id
from steadfast.egress import EgressDenied, EgressPolicy
from steadfast.kube import ObjectRef
from steadfast.status import EventSpec, StatusWriter, conditions
from steadfast.workflows.common import backoff


@pytest.mark.parametrize("host", ["169.254.169.254", "metadata.google.internal", "[fe80::1]", "0.0.0.0"])
def test_metadata_and_link_local_are_always_refused(host: str) -> None:
    policy = EgressPolicy.parse(allow=["0.0.0.0/0", "::/0"])
    with pytest.raises(EgressDenied):
        policy.check(host.strip("[]"), 80)


def test_loopback_needs_an_explicit_allow() -> None:
    with pytest.raises(EgressDenied, match="loopback"):
        EgressPolicy.parse().check("127.0.0.1", 80)
    assert EgressPolicy.parse(allow=["127.0.0.0/8"]).check("127.0.0.1", 80) == ["127.0.0.1"]


def test_allow_list_restricts_destinations() -> None:
    policy = EgressPolicy.parse(allow=["10.1.0.0/16"])
    assert policy.check("10.1.2.3", 443) == ["10.1.2.3"]
    with pytest.raises(EgressDenied, match="allow-list"):
        policy.check("10.2.0.1", 443)


def test_deny_list_wins() -> None:
    with pytest.raises(EgressDenied, match="denied"):
        EgressPolicy.parse(deny=["192.0.2.0/24"]).check("192.0.2.7", 80)


def test_idempotency_key_is_stable_and_distinct() -> None:
    key = idempotency_key("uid-1", "step-a", "action")
    assert key == idempotency_key("uid-1", "step-a", "action")
    assert key != idempotency_key("uid-1", "step-a", "compensation")
    assert key != idempotency_key("uid-2", "step-a", "action")


def test_instance_id_is_deterministic_and_safe() -> None:
    one = instance_id(TASK_SAGA, "team-a", "onboard.42", "0f6a-uid")
    assert one == instance_id(TASK_SAGA, "team-a", "onboard.42", "0f6a-uid")
    assert one != instance_id(TASK_SAGA, "team-a", "onboard.42", "other-uid")
    assert all(c.isalnum() or c in "-_" for c in one)


def test_backoff_matches_the_retry_policy() -> None:
    policy = RetryPolicy(max_attempts=5, initial_interval="1s", backoff_coefficient=2, max_interval="5s")
    assert [backoff(policy, n).total_seconds() for n in (1, 2, 3, 4)] == [1, 2, 4, 5]


def test_conditions_keep_transition_time_while_unchanged() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    first = conditions("progressing", reason="Running", message="", generation=1, now=t0)
    later = conditions(
        "progressing", reason="Running", message="step 2", generation=1, now=t0 + timedelta(minutes=1), previous=first
    )
    done = conditions(
        "ready", reason="Succeeded", message="", generation=1, now=t0 + timedelta(minutes=2), previous=later
    )
    by_type = {c["type"]: c for c in done}
    assert {c["type"]: c["status"] for c in done} == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    assert later[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]
    assert by_type["Ready"]["lastTransitionTime"] == "2026-01-01T00:02:00Z"
    assert by_type["Stalled"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"  # was False, still False


class _SlowObjects:
    """Records status patches; the first one blocks until released, so later submits pile up."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.release = threading.Event()

    def patch_namespaced_custom_object_status(self, *args: Any, **_: Any) -> None:
        if not self.patches:
            self.patches.append(args[-1])
            self.release.wait(5)
            return
        self.patches.append(args[-1])


def test_status_writer_coalesces_a_burst_and_drops_stale_snapshots() -> None:
    fake = _SlowObjects()
    writer = StatusWriter(api=None, workers=1)  # type: ignore[arg-type]
    writer._objects = fake  # type: ignore[assignment]
    ref = ObjectRef("g", "v1", "K", "ks", "ns", "n", "uid")
    first = writer.submit(ref, {"phase": "A"}, seq=1)
    time.sleep(0.1)  # the first write is now in flight
    burst = [writer.submit(ref, {"phase": p}, seq=s) for s, p in ((2, "B"), (4, "D"), (3, "C"))]
    fake.release.set()
    for future in (first, *burst):
        future.result(timeout=5)
    assert [p["status"]["phase"] for p in fake.patches] == ["A", "D"]  # B and C were superseded
    stale = writer.submit(ref, {"phase": "old"}, seq=2)
    stale.result(timeout=5)
    assert len(fake.patches) == 2
    writer.stop()


class _Recorder:
    """Records status patches (as phase/step) and Events with the moment each arrived."""

    def __init__(self) -> None:
        self.patches: list[tuple[float, str]] = []
        self.events: list[str] = []

    def patch_namespaced_custom_object_status(self, *args: Any, **_: Any) -> None:
        status = args[-1]["status"]
        self.patches.append((time.monotonic(), f"{status['phase']}/{status.get('step', '')}"))

    def create_namespaced_event(self, _namespace: str, body: dict[str, Any], **_: Any) -> None:
        self.events.append(body["reason"])

    def written(self) -> list[str]:
        return [p for _, p in self.patches]


def test_status_writer_holds_progress_back_but_never_a_transition() -> None:
    fake = _Recorder()
    writer = StatusWriter(api=None, workers=2, linger=0.6)  # type: ignore[arg-type]
    writer._objects = fake  # type: ignore[assignment]
    writer._core = fake  # type: ignore[assignment]
    ref = ObjectRef("g", "v1", "K", "ks", "ns", "n", "uid")
    started = time.monotonic()
    writer.submit(ref, {"phase": "Running", "step": "1"}, seq=1).result(timeout=5)  # the first: at once
    progress = writer.submit(ref, {"phase": "Running", "step": "2"}, seq=2)
    time.sleep(0.2)
    assert fake.written() == ["Running/1"]  # progress within a phase waits for company
    done = writer.submit(ref, {"phase": "Succeeded"}, seq=3, events=[EventSpec("Succeeded", "done")])
    done.result(timeout=5)
    progress.result(timeout=5)
    assert fake.written() == ["Running/1", "Succeeded/"]  # step 2 was folded into the transition
    assert fake.patches[1][0] - started < 0.5
    assert fake.events == ["Succeeded"]
    writer.submit(ref, {"phase": "Succeeded", "step": "x"}, seq=4).result(timeout=5)  # alone: after the linger
    assert fake.patches[2][1] == "Succeeded/x" and fake.patches[2][0] - fake.patches[1][0] >= 0.5
    writer.submit(ref, {"phase": "Compensating"}, seq=5).result(timeout=0.3)  # a phase change, no Event: at once
    writer.submit(ref, {"phase": "Compensating", "step": "y"}, seq=6, urgent=True).result(timeout=0.3)
    assert fake.written()[-2:] == ["Compensating/", "Compensating/y"]
    writer.stop()


def test_status_writer_flushes_lingering_snapshots_on_stop() -> None:
    fake = _Recorder()
    writer = StatusWriter(api=None, workers=1, linger=30)  # type: ignore[arg-type]
    writer._objects = fake  # type: ignore[assignment]
    ref = ObjectRef("g", "v1", "K", "ks", "ns", "n", "uid")
    writer.submit(ref, {"phase": "Running"}, seq=1).result(timeout=5)
    waiting = writer.submit(ref, {"phase": "Running", "step": "2"}, seq=2)
    writer.stop()
    waiting.result(timeout=1)
    assert fake.written() == ["Running/", "Running/2"]


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
    storage.store(key="start", record={"success": True}, body=body, patch=patch)  # type: ignore[arg-type]
    storage.purge(key="start", body=body, patch=patch)  # type: ignore[arg-type]
    assert not patch
    storage.store(key="start", record={"retries": 1}, body=body, patch=patch)  # type: ignore[arg-type]
    assert list(patch["metadata"]["annotations"]) == ["steadfast.dev/start"]  # a retry is still recorded


def test_progress_writes_share_a_budget_but_phase_changes_do_not_wait_for_it() -> None:
    fake = _Recorder()
    writer = StatusWriter(api=None, workers=4, linger=0.01, progress_rate=5)  # type: ignore[arg-type]
    writer._objects = fake  # type: ignore[assignment]
    writer._core = fake  # type: ignore[assignment]
    refs = [ObjectRef("g", "v1", "K", "ks", "ns", f"n{i}", f"uid{i}") for i in range(10)]
    for ref in refs:
        writer.submit(ref, {"phase": "Running"}, seq=1).result(timeout=5)  # first writes: not budgeted
    started = time.monotonic()
    progress = [writer.submit(ref, {"phase": "Running", "step": "2"}, seq=2) for ref in refs]
    moved = writer.submit(refs[0], {"phase": "Succeeded"}, seq=3)  # folds refs[0]'s progress in, at once
    moved.result(timeout=0.5)
    assert time.monotonic() - started < 0.5
    for future in progress:
        future.result(timeout=5)
    # 9 progress writes at 5 per second, with a burst of 5 allowed: at least ~0.8 s.
    assert time.monotonic() - started >= 0.7
    assert sorted(fake.written()).count("Running/2") == 9
    writer.stop()
