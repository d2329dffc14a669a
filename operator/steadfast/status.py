"""The one status writer: every status change of every resource goes through here.

Writes are merge patches of the status subresource. While a write for an object is in flight, newer
snapshots for it are coalesced into one next write, so a busy saga costs at most one write per burst
rather than one per transition. A snapshot that only reports progress (a step started, a check passed)
waits `linger` for a newer one, and longer when progress writes of all objects exceed `progress_rate` per
second; the first snapshot of an object and any that changes the phase or carries an Event go out at once
and take the waiting one along. Events go out with the write that carries the transition.

Snapshots carry their order from the workflow (the run's start, then a sequence number); an older snapshot never
overwrites a newer one, also when another replica's writer wrote the newer one: a workflow's reports run on
whichever replica's worker daprd hands them to, and a progress snapshot lingering on one replica may be ready
after the final one was written by another. So the order is written into the status (`status.report`) and every
workflow snapshot is a conditional write: a merge patch carrying the resourceVersion the writer last saw. On a
conflict the writer reads the object; if it holds a newer snapshot the older one is dropped, else it writes again.
The handlers' own writes (before a workflow runs) carry no order and are not conditional.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast import metrics
from steadfast.records import EventSpec, ObjectRef
from steadfast.text import shown

log = logging.getLogger(__name__)


def _drain(response: Any) -> None:
    """Read and release an undeserialized answer so its connection goes back to the pool."""
    release = getattr(response, "release_conn", None)
    if hasattr(response, "read"):
        response.read()
    if callable(release):
        release()


def _json(response: Any) -> dict[str, Any]:
    """An undeserialized answer as JSON (the connection released); {} for an answer with no body."""
    data = response.data if hasattr(response, "data") else None
    _drain(response)
    if not data:
        return {}
    parsed = json.loads(data)
    return parsed if isinstance(parsed, dict) else {}


class _Conflict(Exception):
    """A conditional status write met a resourceVersion other than the one it carried (HTTP 409)."""


class Clock(Protocol):
    """The writer's only source of time, and its only way to wait for time to pass.

    `SYSTEM_CLOCK` in production; tests pass one they move by hand, so lingers and the progress budget
    run in no real time at all. `wait` may return early (a notify, or spuriously): the writer looks at
    `monotonic` again each time it returns.
    """

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def wait(self, condition: threading.Condition, timeout: float | None) -> object:
        """`condition.wait(timeout)`, with `timeout` in this clock's seconds; called with `condition` held."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for `seconds` of this clock (between retries of a write)."""
        ...


class SystemClock:
    """The real clock: `time.monotonic`, `Condition.wait` and `time.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, condition: threading.Condition, timeout: float | None) -> bool:
        return condition.wait(timeout)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


@dataclass
class _Pending:
    ref: ObjectRef
    status: dict[str, Any]
    order: tuple[int, int]  # (run, seq); (0, 0): a handler's write, not ordered against other replicas
    events: list[EventSpec] = field(default_factory=list)
    futures: list[Future[None]] = field(default_factory=list)
    urgent: bool = False


class StatusWriter:
    """Thread-safe; used from workflow activities (threads) and kopf handlers alike.

    Every delay it takes (the linger, the progress budget, the pause between retries) is measured and
    waited out on `clock`.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        workers: int = 4,
        component: str = "steadfast",
        linger: float = 0.2,
        progress_rate: float = 0.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._objects = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._component = component
        self._clock = clock
        self._linger = linger
        # Progress-only writes share a budget of `progress_rate` per second (0: no limit): under load they
        # wait longer and fold into fewer writes, while phase changes still go out at once.
        self._rate = progress_rate
        self._tokens = progress_rate
        self._refilled = clock.monotonic()
        self._lock = threading.Condition()
        self._pending: dict[str, _Pending] = {}
        self._inflight: set[str] = set()
        self._ready: dict[str, None] = {}  # a FIFO with O(1) membership
        self._due: dict[str, float] = {}  # lingering keys -> when they become ready
        self._written_seq: dict[str, tuple[int, int]] = {}
        # key -> (resourceVersion, the order on the object) as this writer last saw them
        self._seen: dict[str, tuple[str, tuple[int, int] | None]] = {}
        self._sent_phase: dict[str, Any] = {}
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"status-writer-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _key(ref: ObjectRef) -> str:
        return f"{ref.plural}/{ref.namespace}/{ref.name}/{ref.uid}"

    def submit(
        self,
        ref: ObjectRef,
        status: dict[str, Any],
        *,
        seq: int,
        run: int = 0,
        events: list[EventSpec] | None = None,
        urgent: bool = False,
    ) -> Future[None]:
        """Queue a status snapshot; the future resolves once it (or a newer one) is written.

        `urgent` (or a phase change, Events, or being the object's first) skips the linger. `seq` 0 is a
        handler's write: older than any workflow snapshot, and written without condition.
        """
        future: Future[None] = Future()
        key = self._key(ref)
        order = (run, seq) if seq else (0, 0)
        metrics.STATUS_SUBMITS.inc()
        with self._lock:
            if order < self._written_seq.get(key, (-1, -1)):
                future.set_result(None)  # a newer snapshot is already on the object
                return future
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending(ref, dict(status), order, list(events or []), [future])
            else:
                if order >= pending.order:
                    pending.status, pending.order = dict(status), order
                pending.events.extend(events or [])
                pending.futures.append(future)
            first = key not in self._written_seq and key not in self._inflight
            moved = "phase" in status and status["phase"] != self._sent_phase.get(key)
            pending.urgent = pending.urgent or urgent or bool(events) or first or moved
            if key not in self._inflight:
                self._schedule(key, pending)
        return future

    def _schedule(self, key: str, pending: _Pending) -> None:
        """Make `key` ready now, or at the end of its linger; called with the lock held."""
        if key in self._due:
            if not pending.urgent:
                return
            del self._due[key]
        elif key in self._ready:
            return
        if pending.urgent or self._linger <= 0:
            self._ready[key] = None
        else:
            self._due[key] = self._clock.monotonic() + self._linger
        self._lock.notify()

    def _promote(self) -> float | None:
        """Move lingering keys whose time has come (and budget allows) to ready; seconds until the next one.

        `_due` is in order of due time: every key gets the same linger when it is added.
        """
        now = self._clock.monotonic()
        if self._stopped:
            self._ready.update(dict.fromkeys(self._due))
            self._due.clear()
            return None
        if self._rate:
            self._tokens = min(self._rate, self._tokens + (now - self._refilled) * self._rate)
            self._refilled = now
        while self._due:
            key, due = next(iter(self._due.items()))
            if due > now:
                return due - now
            if self._rate:
                if self._tokens < 1:
                    return (1 - self._tokens) / self._rate
                self._tokens -= 1
            del self._due[key]
            self._ready[key] = None
        return None

    def forget(self, ref: ObjectRef) -> None:
        """Drop bookkeeping for a deleted resource."""
        with self._lock:
            self._written_seq.pop(self._key(ref), None)
            self._sent_phase.pop(self._key(ref), None)
            self._seen.pop(self._key(ref), None)
        metrics.phase(ref.kind, self._key(ref), None)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _work(self) -> None:
        while True:
            with self._lock:
                while True:
                    wait = self._promote()
                    if self._ready or (self._stopped and not self._due):
                        break
                    self._clock.wait(self._lock, wait)
                if self._stopped and not self._ready:
                    return
                key = next(iter(self._ready))
                del self._ready[key]
                item = self._pending.pop(key)
                self._inflight.add(key)
                self._sent_phase[key] = item.status.get("phase", self._sent_phase.get(key))
            error: BaseException | None = None
            try:
                self._write(item)
            except BaseException as exc:  # reported to every waiter; the writer itself keeps going
                error = exc
            with self._lock:
                self._inflight.discard(key)
                if error is None and item.order >= self._written_seq.get(key, (-1, -1)):
                    self._written_seq[key] = item.order
                if key in self._pending:
                    self._schedule(key, self._pending[key])
            for future in item.futures:
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

    def _write(self, item: _Pending) -> None:
        ref = item.ref
        delay = 0.1
        attempt = 0
        conflicts = 0
        while True:
            try:
                if not self._patch(item):
                    return  # the resource is gone, or holds a newer snapshot: nothing to write
                break
            except _Conflict:
                # Another writer (a replica, kopf, a user) changed the object since this one last saw it: read it
                # again and decide. Bounded: a conflict each time means something rewrites it without pause.
                conflicts += 1
                if conflicts <= 20:
                    continue
                log.error("status of %s/%s: %d conflicts in a row, giving up", ref.namespace, ref.name, conflicts)
                raise
            except ApiException as exc:
                if exc.status in (400, 422) or attempt == 5:
                    log.error(
                        "status of %s/%s refused (HTTP %s): %s",
                        ref.namespace,
                        ref.name,
                        exc.status,
                        (exc.body or "")[:500],
                    )
                    raise
            except Exception:  # connection problems: the API server restarting, for example
                if attempt == 5:
                    raise
            attempt += 1
            self._clock.sleep(delay)
            delay = min(delay * 2, 2.0)
        if "phase" in item.status:
            metrics.phase(ref.kind, self._key(ref), item.status.get("phase"))
        metrics.decision(ref.kind, self._key(ref), item.status)
        for event in item.events:
            self._event(ref, event)

    def _patch(self, item: _Pending) -> bool:
        """One write of `item`; False if there is nothing to write (the resource is gone, or holds a newer one).

        A workflow snapshot is conditional on the resourceVersion this writer last saw (read first if it saw
        none). The answer is parsed as plain JSON for its resourceVersion: the client's model deserialization
        would double the writer's CPU per write.
        """
        ref = item.ref
        key = self._key(ref)
        body: dict[str, Any] = {"status": item.status}
        ordered = item.order != (0, 0)
        if ordered:
            seen = self._seen.get(key) or self._read(ref)
            if seen is None:
                return False
            version, on_object = seen
            if on_object is not None and on_object >= item.order:
                metrics.STATUS_STALE.inc()
                return False
            run, seq = item.order
            report = {"run": run, "sequence": seq}
            body = {"metadata": {"resourceVersion": version}, "status": {**item.status, "report": report}}
        try:
            response = self._objects.patch_namespaced_custom_object_status(
                ref.group, ref.version, ref.namespace, ref.plural, ref.name, body, _preload_content=False
            )
        except ApiException as exc:
            metrics.API_ERRORS.labels("patch_status", str(exc.status)).inc()
            if exc.status == 404:
                return False  # the resource is gone; nothing left to report on
            if exc.status == 409 and ordered:
                self._seen.pop(key, None)
                raise _Conflict() from exc
            raise
        written = _json(response)
        metrics.STATUS_WRITES.inc()
        now_at = (written.get("metadata") or {}).get("resourceVersion")
        with self._lock:
            if ordered and now_at:
                self._seen[key] = (str(now_at), item.order)
            else:
                self._seen.pop(key, None)  # a handler's write moved the version: read before the next ordered one
        return True

    def _read(self, ref: ObjectRef) -> tuple[str, tuple[int, int] | None] | None:
        """The object's resourceVersion and the order of the snapshot on it; None if the object is gone."""
        try:
            response = self._objects.get_namespaced_custom_object_status(
                ref.group, ref.version, ref.namespace, ref.plural, ref.name, _preload_content=False
            )
        except ApiException as exc:
            metrics.API_ERRORS.labels("get_status", str(exc.status)).inc()
            if exc.status == 404:
                return None
            raise
        current = _json(response)
        report = (current.get("status") or {}).get("report") or {}
        order = (int(report.get("run", 0)), int(report.get("sequence", 0))) if report else None
        return str(current["metadata"]["resourceVersion"]), order

    def _event(self, ref: ObjectRef, event: EventSpec) -> None:
        now = datetime.now(UTC)
        suffix = hashlib.sha256(f"{ref.uid}/{event.key or event.reason + event.message}".encode()).hexdigest()[:16]
        body = {
            "metadata": {"name": f"{ref.name}.{suffix}", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "reason": event.reason,
            "message": shown(event.message)[:1024],  # names and titles users wrote, read by others
            "type": event.type,
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "reportingInstance": self._component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            _drain(self._core.create_namespaced_event(ref.namespace, body, _preload_content=False))
            metrics.transition(ref.kind, event.reason)
        except ApiException as exc:
            if exc.status != 409:  # 409: a redelivered transition; the Event already exists
                metrics.API_ERRORS.labels("create_event", str(exc.status)).inc()
                log.warning(
                    "event %s for %s/%s not recorded: HTTP %s", event.reason, ref.namespace, ref.name, exc.status
                )
