"""The status writer: bursts coalesce, progress lingers and shares a budget, transitions go at once.

The writer runs on a fake clock that moves only when a test advances it, so no test waits in real time.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from kubernetes.client.exceptions import ApiException

from steadfast import metrics
from steadfast.records import EventSpec, ObjectRef
from steadfast.status import StatusWriter


class FakeClock:
    """A `steadfast.status.Clock` that moves only when told to.

    `wait` ignores its timeout: a waiting thread wakes only on a notify of its condition (the writer's own,
    or `advance`'s), and the writer then reads the clock again. A thread that has not read the current time
    does not wait at all, so an advance cannot slip in between its reading the clock and its waiting.
    `advance` returns once all `threads` of the writer have read the new time and are waiting again, so
    what the advance made due has been written by then.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._now = 0.0
        self._state = threading.Condition()
        self._seen: dict[int, float] = {}  # thread -> the time it last read
        self._waiting: set[int] = set()  # threads waiting that have read the current time
        self._conditions: set[threading.Condition] = set()

    def monotonic(self) -> float:
        with self._state:
            self._seen[threading.get_ident()] = self._now
            return self._now

    def wait(self, condition: threading.Condition, timeout: float | None) -> bool:
        me = threading.get_ident()
        with self._state:
            if self._seen.get(me) != self._now:
                return False  # the time moved since this thread read it: it is to look again
            self._conditions.add(condition)
            self._waiting.add(me)
            self._state.notify_all()
        condition.wait()
        with self._state:
            self._waiting.discard(me)
        return True

    def sleep(self, seconds: float) -> None:
        self._move(seconds)

    def advance(self, seconds: float) -> None:
        self._move(seconds)
        with self._state:
            settled = self._state.wait_for(lambda: len(self._waiting) >= self.threads, timeout=5)
        assert settled, "the writer's threads did not go back to waiting"

    def _move(self, seconds: float) -> None:
        with self._state:
            self._now += seconds
            self._waiting.clear()
            conditions = list(self._conditions)
        for condition in conditions:
            with condition:
                condition.notify_all()


class _Raw:
    """An undeserialized answer, as the client returns one with `_preload_content=False`."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()

    def release_conn(self) -> None:
        pass


class FakeObject:
    """Resources' status as the API server keeps it: a resourceVersion that moves with each write, and a merge
    patch carrying another resourceVersion refused with 409, as the API server does. Keyed by name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.versions: dict[str, int] = {}
        self.statuses: dict[str, dict[str, Any]] = {}

    def get_namespaced_custom_object_status(self, *args: Any, **_: Any) -> _Raw:
        name = args[4]
        with self.lock:
            version = self.versions.setdefault(name, 1)
            return _Raw({"metadata": {"resourceVersion": str(version)}, "status": self.statuses.get(name, {})})

    def apply(self, args: tuple[Any, ...]) -> _Raw:
        name, body = args[4], args[-1]
        with self.lock:
            version = self.versions.setdefault(name, 1)
            expected = (body.get("metadata") or {}).get("resourceVersion")
            if expected is not None and expected != str(version):
                raise ApiException(status=409, reason="Conflict")
            self.versions[name] = version + 1
            self.statuses.setdefault(name, {}).update(body["status"])
            return _Raw({"metadata": {"resourceVersion": str(version + 1)}, "status": self.statuses[name]})


class _SlowObjects(FakeObject):
    """Records status patches; the first one blocks until released, so later submits pile up."""

    def __init__(self) -> None:
        super().__init__()
        self.patches: list[dict[str, Any]] = []
        self.in_flight = threading.Event()
        self.release = threading.Event()

    def patch_namespaced_custom_object_status(self, *args: Any, **_: Any) -> _Raw:
        self.patches.append(args[-1])
        if len(self.patches) == 1:
            self.in_flight.set()
            self.release.wait(5)
        return self.apply(args)


def test_status_writer_coalesces_a_burst_and_drops_stale_snapshots() -> None:
    fake = _SlowObjects()
    clock = FakeClock(threads=1)
    writer = StatusWriter(api=None, workers=1, clock=clock)
    writer._objects = fake
    ref = ObjectRef("g", "v1", "K", "ks", "ns", "n", "uid")
    first = writer.submit(ref, {"phase": "A"}, seq=1)
    assert fake.in_flight.wait(5)  # the first write is now in flight
    burst = [writer.submit(ref, {"phase": p}, seq=s) for s, p in ((2, "B"), (4, "D"), (3, "C"))]
    fake.release.set()
    for future in (first, *burst):
        future.result(timeout=5)
    assert [p["status"]["phase"] for p in fake.patches] == ["A", "D"]  # B and C were superseded
    stale = writer.submit(ref, {"phase": "old"}, seq=2)
    stale.result(timeout=5)
    assert len(fake.patches) == 2
    writer.stop()


class _Recorder(FakeObject):
    """Records status patches (as phase/step) and Events with the moment (on `clock`) each arrived."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.patches: list[tuple[float, str]] = []
        self.events: list[str] = []

    def patch_namespaced_custom_object_status(self, *args: Any, **_: Any) -> _Raw:
        status = args[-1]["status"]
        self.patches.append((self.clock.monotonic(), f"{status['phase']}/{status.get('step', '')}"))
        return self.apply(args)

    def create_namespaced_event(self, _namespace: str, body: dict[str, Any], **_: Any) -> None:
        self.events.append(body["reason"])

    def written(self) -> list[str]:
        return [p for _, p in self.patches]


def test_status_writer_holds_progress_back_but_never_a_transition() -> None:
    clock = FakeClock(threads=2)
    fake = _Recorder(clock)
    writer = StatusWriter(api=None, workers=2, linger=0.6, clock=clock)
    writer._objects = fake
    writer._core = fake
    ref = ObjectRef("g", "v1", "K", "ks", "ns", "n", "uid")
    started = clock.monotonic()
    writer.submit(ref, {"phase": "Running", "step": "1"}, seq=1).result(timeout=5)  # the first: at once
    progress = writer.submit(ref, {"phase": "Running", "step": "2"}, seq=2)
    clock.advance(0.2)
    assert fake.written() == ["Running/1"]  # progress within a phase waits for company
    done = writer.submit(ref, {"phase": "Succeeded"}, seq=3, events=[EventSpec("Succeeded", "done")])
    done.result(timeout=5)
    progress.result(timeout=5)
    assert fake.written() == ["Running/1", "Succeeded/"]  # step 2 was folded into the transition
    assert fake.patches[1][0] - started < 0.5
    assert fake.events == ["Succeeded"]
    alone = writer.submit(ref, {"phase": "Succeeded", "step": "x"}, seq=4)  # alone: after the linger
    clock.advance(0.6)
    alone.result(timeout=5)
    assert fake.patches[2][1] == "Succeeded/x" and fake.patches[2][0] - fake.patches[1][0] >= 0.5
    # The clock stands still from here on: a write that lingered would never resolve.
    writer.submit(ref, {"phase": "Compensating"}, seq=5).result(timeout=5)  # a phase change, no Event: at once
    writer.submit(ref, {"phase": "Compensating", "step": "y"}, seq=6, urgent=True).result(timeout=5)
    assert fake.written()[-2:] == ["Compensating/", "Compensating/y"]
    writer.stop()


def test_status_writer_flushes_lingering_snapshots_on_stop() -> None:
    clock = FakeClock(threads=1)
    fake = _Recorder(clock)
    writer = StatusWriter(api=None, workers=1, linger=30, clock=clock)
    writer._objects = fake
    ref = ObjectRef("g", "v1", "K", "ks", "ns", "n", "uid")
    writer.submit(ref, {"phase": "Running"}, seq=1).result(timeout=5)
    waiting = writer.submit(ref, {"phase": "Running", "step": "2"}, seq=2)
    writer.stop()
    waiting.result(timeout=1)
    assert fake.written() == ["Running/", "Running/2"]


def test_progress_writes_share_a_budget_but_phase_changes_do_not_wait_for_it() -> None:
    clock = FakeClock(threads=4)
    fake = _Recorder(clock)
    writer = StatusWriter(api=None, workers=4, linger=0.01, progress_rate=5, clock=clock)
    writer._objects = fake
    writer._core = fake
    refs = [ObjectRef("g", "v1", "K", "ks", "ns", f"n{i}", f"uid{i}") for i in range(10)]
    for ref in refs:
        writer.submit(ref, {"phase": "Running"}, seq=1).result(timeout=5)  # first writes: not budgeted
    started = clock.monotonic()
    progress = [writer.submit(ref, {"phase": "Running", "step": "2"}, seq=2) for ref in refs]
    moved = writer.submit(refs[0], {"phase": "Succeeded"}, seq=3)  # folds refs[0]'s progress in, at once
    moved.result(timeout=5)
    assert clock.monotonic() - started < 0.5
    while not all(future.done() for future in progress) and clock.monotonic() - started < 10:
        clock.advance(0.01)
    for future in progress:
        future.result(timeout=5)
    # 9 progress writes at 5 per second, with a burst of 5 allowed: at least ~0.8 s.
    assert clock.monotonic() - started >= 0.7
    assert sorted(fake.written()).count("Running/2") == 9
    writer.stop()


class _Shared(FakeObject):
    """One object written by two writers (two replicas): records which snapshot each accepted write was."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted: list[str] = []

    def patch_namespaced_custom_object_status(self, *args: Any, **_: Any) -> _Raw:
        answer = self.apply(args)
        self.accepted.append(args[-1]["status"]["phase"])
        return answer

    def create_namespaced_event(self, *_: Any, **__: Any) -> None:
        pass


def test_a_replicas_late_progress_snapshot_never_replaces_anothers_final_one() -> None:
    """Replica b holds a progress snapshot back (its linger) while replica a writes the run's final one: when b's
    turn comes the object already holds a newer snapshot, and the final status stays."""
    shared = _Shared()
    clock = FakeClock(threads=2)
    a = StatusWriter(api=None, workers=1, linger=0.0, clock=clock)
    b = StatusWriter(api=None, workers=1, linger=2.0, clock=clock)
    for writer in (a, b):
        writer._objects = shared
        writer._core = shared
    ref = ObjectRef("g", "v1", "K", "ks", "ns", "n", "uid")
    run = 1_700_000_000_000
    b.submit(ref, {"phase": "Running", "step": "1"}, seq=1, run=run).result(timeout=5)
    late = b.submit(ref, {"phase": "Running", "step": "2"}, seq=2, run=run)  # lingers on b
    a.submit(ref, {"phase": "Succeeded"}, seq=3, run=run, urgent=True).result(timeout=5)
    stale_before = metrics.STATUS_STALE._value.get()
    clock.advance(2.0)
    late.result(timeout=5)
    assert shared.statuses["n"]["phase"] == "Succeeded"
    assert shared.statuses["n"]["report"] == {"run": run, "sequence": 3}
    assert shared.accepted == ["Running", "Succeeded"]
    assert metrics.STATUS_STALE._value.get() == stale_before + 1
    # A later run of the same instance (a monitor's continue-as-new) is newer whatever its sequence.
    a.submit(ref, {"phase": "Healthy"}, seq=1, run=run + 1).result(timeout=5)
    assert shared.statuses["n"]["phase"] == "Healthy"
    # Another writer moved the object on (kopf's annotations, a user): a conflict, read again, written.
    shared.versions["n"] += 5
    a.submit(ref, {"phase": "Unhealthy"}, seq=2, run=run + 1).result(timeout=5)
    assert shared.statuses["n"]["phase"] == "Unhealthy"
    a.stop()
    b.stop()
