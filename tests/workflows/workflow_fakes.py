"""Fakes for running the operator's real workflow functions on the local engine without Kubernetes or HTTP.

The EXECUTE activity asks a scripted `FakeService` for each action's outcome and records the call; the
REPORT activity (and the status snapshot EXECUTE carries) goes to a `StatusLog`. Each test's resource has
its own UID, on which `World` dispatches, so one worker can serve every test.

A module of its own (not conftest) so test modules can import it by a name no other test folder uses.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dapr.ext.workflow as wf
from crd_status import status_problems

from steadfast.api.approval import ApprovalRequestSpec
from steadfast.api.common import ApiModel
from steadfast.api.kinds import APPROVAL_REQUEST, HEALTH_MONITOR, TASK_SAGA, Kind
from steadfast.approval import workflow as approval_workflow
from steadfast.approval.rules import ApprovalInput
from steadfast.binding import instance_id
from steadfast.records import ActionRequest, ObjectRef, Outcome, WorkflowInput
from steadfast.workflows import monitor, saga

SERVICE = "http://svc.test"  # never contacted: the fake answers for it
WAIT = 30  # seconds a test waits for an instance at most; a healthy run takes milliseconds


@dataclass(frozen=True)
class Call:
    """One EXECUTE activity: the action the workflow asked for, as the service would have received it."""

    path: str  # the action URL's path, e.g. /reserve
    method: str
    what: str  # the workflow's label, e.g. reserve/action, reserve/compensation, check/3, alert/3/unhealthy
    category: str
    key: str  # the Idempotency-Key
    timeout: float | None  # seconds left in the step's time limit, if it has one
    body: Any
    ok: bool  # what the fake answered
    wait_event: str = ""  # a Kubernetes action's: the event its decision would come as
    rearm: bool = False
    undo: dict[str, Any] | None = None
    variables: dict[str, Any] | None = None  # what the action's placeholders would read (task, outputs, params)


@dataclass
class _Script:
    results: list[bool | str]  # answers in order; True ok, False failure, "crash" raises in the activity
    then: bool | str


class FakeService:
    """The outside world of one test: scripted answers per URL path, and every call in order.

    Paths nobody scripted succeed. `hold` makes calls to a path wait until released, so a test can act
    (raise an event) while an action is in flight.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, _Script] = {}
        self._holds: dict[str, tuple[threading.Event, threading.Event]] = {}
        self._calls: list[Call] = []
        self._objects: dict[str, list[Outcome]] = {}

    def object_answers(self, name: str, *outcomes: Outcome) -> None:
        """Answer Kubernetes actions on the object called `name` with `outcomes` in order, then succeed."""
        with self._lock:
            self._objects[name] = list(outcomes)

    def script(self, path: str, *results: bool | str, then: bool | str = True) -> None:
        """Answer calls to `path` with `results` in order, then always with `then`."""
        with self._lock:
            self._scripts[path] = _Script(list(results), then)

    def fail(self, path: str, times: int | None = None) -> None:
        """Fail `times` calls to `path` and then succeed; fail every call when `times` is None."""
        if times is None:
            self.script(path, then=False)
        else:
            self.script(path, *([False] * times))

    def hold(self, path: str) -> tuple[threading.Event, threading.Event]:
        """(entered, release): calls to `path` set `entered`, then wait for `release` before answering."""
        entered, release = threading.Event(), threading.Event()
        with self._lock:
            self._holds[path] = (entered, release)
        return entered, release

    def answer(self, inp: dict[str, Any]) -> dict[str, Any]:
        if "kubernetes" in inp["action"]:
            return self._object(inp)
        http = inp["action"]["http"]
        path = "/" + http["url"].removeprefix(SERVICE).lstrip("/")
        with self._lock:
            script = self._scripts.get(path)
            result: bool | str = True
            if script is not None:
                result = script.results.pop(0) if script.results else script.then
            hold = self._holds.get(path)
            self._calls.append(
                Call(
                    path,
                    http.get("method", "GET"),
                    str(inp["what"]),
                    str(inp["category"]),
                    str(inp["key"]),
                    inp.get("timeout"),
                    http.get("body"),
                    result is True,
                    variables=inp.get("variables"),
                )
            )
        if hold is not None:
            hold[0].set()
            if not hold[1].wait(WAIT):
                raise TimeoutError(f"{path} was held and never released")
        if result == "crash":
            raise RuntimeError(f"the fake activity crashed on {path}")
        method = http.get("method", "GET")
        if result is True:
            return Outcome(True, 200, f"{method} {http['url']}: HTTP 200").to_dict()
        return Outcome(False, 503, f"{method} {http['url']}: HTTP 503: scripted failure").to_dict()

    def _object(self, inp: dict[str, Any]) -> dict[str, Any]:
        kube = inp["action"]["kubernetes"]
        name = kube["object"]["metadata"]["name"]
        with self._lock:
            queued = self._objects.get(name) or []
            outcome = queued.pop(0) if queued else Outcome(True, 200, f"{kube.get('operation', 'apply')} {name}")
            self._calls.append(
                Call(
                    f"/objects/{name}",
                    kube.get("operation", "apply"),
                    str(inp["what"]),
                    str(inp["category"]),
                    str(inp["key"]),
                    inp.get("timeout"),
                    kube["object"],
                    outcome.ok,
                    str(inp.get("waitEvent") or ""),
                    bool(inp.get("rearm")),
                    inp.get("undo"),
                )
            )
            hold = self._holds.get(f"/objects/{name}")
        if hold is not None:  # held like an HTTP call (`hold("/objects/NAME")`)
            hold[0].set()
            if not hold[1].wait(WAIT):
                raise TimeoutError(f"/objects/{name} was held and never released")
        return outcome.to_dict()

    def release_all(self) -> None:
        with self._lock:
            for _, release in self._holds.values():
                release.set()

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def order(self) -> list[str]:
        """The `what` of every call, in the order the workflow made them."""
        return [c.what for c in self.calls]

    def calls_to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]


class StatusLog:
    """Every status snapshot a workflow reported, by sequence number (what the StatusWriter would get)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._by_seq: dict[int, dict[str, Any]] = {}
        self.schema_problems: list[str] = []  # snapshots the CRD's status schema would not store as sent

    def submit(self, envelope: dict[str, Any]) -> None:
        problems = status_problems(envelope["ref"]["kind"], envelope["status"])
        with self._cond:
            self.schema_problems.extend(f"seq {envelope['seq']}: {p}" for p in problems)
            seq = int(envelope["seq"])
            if seq in self._by_seq and self._by_seq[seq] != envelope:
                raise AssertionError(f"two different snapshots with seq {seq}")
            self._by_seq[seq] = envelope
            self._cond.notify_all()

    def envelopes(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._by_seq[s] for s in sorted(self._by_seq)]

    def snapshots(self) -> list[dict[str, Any]]:
        return [e["status"] for e in self.envelopes()]

    def latest(self) -> dict[str, Any]:
        """The status the resource ends up with: the snapshot with the highest seq."""
        snaps = self.snapshots()
        assert snaps, "the workflow reported no status"
        return snaps[-1]

    def reasons(self) -> list[str]:
        """Event reasons in the order they were reported."""
        return [ev["reason"] for e in self.envelopes() for ev in e.get("events") or []]

    def wait_for(self, test: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT) -> dict[str, Any]:
        """The first snapshot (in seq order) that passes `test`, waiting for it to be reported."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for seq in sorted(self._by_seq):
                    status: dict[str, Any] = self._by_seq[seq]["status"]
                    if test(status):
                        return status
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no status snapshot showed {what} within {timeout}s")
                self._cond.wait(left)


@dataclass
class Subject:
    """The resource one test works for: its reference, its fake service and its reported status."""

    ref: ObjectRef
    service: FakeService = field(default_factory=FakeService)
    log: StatusLog = field(default_factory=StatusLog)
    fires: list[dict[str, Any]] = field(default_factory=list)  # a schedule's run requests (FireRequest wires)


class World:
    """The fake activities, dispatching on the resource UID to each test's `Subject`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subjects: dict[str, Subject] = {}

    def add(self, subject: Subject) -> None:
        with self._lock:
            self._subjects[subject.ref.uid] = subject

    def remove(self, subject: Subject) -> None:
        with self._lock:
            self._subjects.pop(subject.ref.uid, None)

    def _subject(self, inp: dict[str, Any]) -> Subject:
        with self._lock:
            subject = self._subjects.get(inp["ref"]["uid"])
            if subject is None:  # an instance outliving its test; failing the activity is all it gets
                raise LookupError(f"no test subject for {inp['ref']}")
            return subject

    def execute(self, _ctx: Any, inp: dict[str, Any]) -> dict[str, Any]:
        # JSON round trip: what crosses the engine is JSON, so the fake must not rely on anything else.
        inp = json.loads(json.dumps(inp))
        subject = self._subject(inp)
        request = ActionRequest.model_validate(inp)
        if request.report is not None:  # the "attempt N is running" snapshot, as Activities.execute sends it
            subject.log.submit(request.report.wire())
        return subject.service.answer(inp)

    def report(self, _ctx: Any, inp: dict[str, Any]) -> None:
        self._subject(inp).log.submit(json.loads(json.dumps(inp)))

    def fire(self, _ctx: Any, inp: dict[str, Any]) -> dict[str, Any]:
        """A schedule's run request: recorded; the run is "created" and stays the only active one."""
        inp = json.loads(json.dumps(inp))
        subject = self._subject(inp)
        subject.fires.append(inp)
        return {"created": True, "active": [inp["run"]]}

    def look(self, _ctx: Any, inp: dict[str, Any]) -> dict[str, Any]:
        """A schedule looking at its active runs between two times: every run has finished meanwhile."""
        self._subject(inp)
        return {"active": [], "lastSuccessful": "2026-01-01T00:00:00Z"}


class Harness:
    """Starts one test's instances the way `Bindings.start` does, and waits for them."""

    def __init__(self, client: wf.DaprWorkflowClient, world: World, name: str) -> None:
        self.client = client
        self.world = world
        self.name = name
        self.started: list[str] = []
        self.subjects: list[Subject] = []

    def subject(self, kind: Kind) -> Subject:
        uid = str(uuid.uuid4())
        ref = ObjectRef(kind.group, kind.version, kind.kind, kind.plural, "default", self.name, uid)
        subject = Subject(ref)
        self.world.add(subject)
        self.subjects.append(subject)
        return subject

    def start(self, kind: Kind, workflow: str, subject: Subject, spec: ApiModel, generation: int = 1) -> str:
        iid = instance_id(kind, subject.ref.namespace, subject.ref.name, subject.ref.uid)
        payload = WorkflowInput(ref=subject.ref, generation=generation, spec=spec).wire()
        self.client.schedule_new_workflow(workflow, input=payload, instance_id=iid)
        self.started.append(iid)
        return iid

    def start_saga(self, subject: Subject, spec: ApiModel) -> str:
        return self.start(TASK_SAGA, saga.NAME, subject, spec)

    def start_monitor(self, subject: Subject, spec: ApiModel) -> str:
        return self.start(HEALTH_MONITOR, monitor.NAME, subject, spec)

    def start_approval(
        self, subject: Subject, spec: ApprovalRequestSpec, *, requested_by: str | None, created_at: datetime
    ) -> str:
        """Start the ApprovalRequest workflow as `Bindings.start` does, with the admission-recorded requester."""
        iid = instance_id(APPROVAL_REQUEST, subject.ref.namespace, subject.ref.name, subject.ref.uid)
        given = ApprovalInput(
            ref=subject.ref, generation=1, spec=spec, requested_by=requested_by, created_at=created_at
        )
        self.client.schedule_new_workflow(approval_workflow.NAME, input=given.wire(), instance_id=iid)
        self.started.append(iid)
        return iid

    def finish(self, iid: str) -> Any:
        """Wait for `iid` to complete and return its output; fails the test if it did not complete."""
        state = self.client.wait_for_workflow_completion(iid, timeout_in_seconds=WAIT)
        assert state is not None, f"{iid} did not finish within {WAIT}s"
        assert state.runtime_status == wf.WorkflowStatus.COMPLETED, (
            f"{iid} ended {state.runtime_status.name}: {state.failure_details}"
        )
        return json.loads(state.serialized_output) if state.serialized_output else None

    def schema_problems(self) -> list[str]:
        return [f"{s.ref.kind} {s.ref.name}: {p}" for s in self.subjects for p in s.log.schema_problems]

    def close(self) -> None:
        for subject in self.subjects:
            subject.service.release_all()
        for iid in self.started:
            state = self.client.get_workflow_state(iid, fetch_payloads=False)
            if state is not None and state.runtime_status in (
                wf.WorkflowStatus.RUNNING,
                wf.WorkflowStatus.PENDING,
                wf.WorkflowStatus.SUSPENDED,
            ):
                self.client.terminate_workflow(iid)
                self.client.wait_for_workflow_completion(iid, fetch_payloads=False, timeout_in_seconds=WAIT)
        for subject in self.subjects:
            self.world.remove(subject)
