"""Plain records that cross the line between workflow code and activities.

Nothing here does I/O or imports a client, so deterministic workflow code may use all of it (an import
contract in pyproject.toml keeps kopf and the Kubernetes client out of the workflows).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, field_serializer
from pydantic.alias_generators import to_camel

from steadfast import seals
from steadfast.api.kinds import SEAL

# The activities every kind's workflow calls (registered by steadfast.workflows.activities).
EXECUTE = "steadfast.execute_action"
REPORT = "steadfast.report_status"


@dataclass(frozen=True)
class ObjectRef:
    """Which resource a workflow works for; carried in every workflow input, so plain data only."""

    group: str
    version: str
    kind: str
    plural: str
    namespace: str
    name: str
    uid: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


@dataclass(frozen=True)
class Outcome:
    """What one attempt of an action did; plain data so it can be a workflow activity's result."""

    ok: bool
    status_code: int | None = None
    message: str = ""
    outputs: dict[str, Any] | None = None  # the declared outputs, when the attempt succeeded
    failed_condition: str | None = None  # the condition that did not hold, with the value it saw
    # A Kubernetes action whose successWhen does not hold yet: the workflow waits for the wait event.
    pending: bool = False
    # How to undo a Kubernetes apply or patch (an objects.Undo on the wire), for its automatic compensation.
    undo: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "statusCode": self.status_code, "message": self.message}
        if self.outputs is not None:
            out["outputs"] = self.outputs
        if self.failed_condition is not None:
            out["failedCondition"] = self.failed_condition
        if self.pending:
            out["pending"] = True
        if self.undo is not None:
            out["undo"] = self.undo
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        return cls(
            bool(data.get("ok")),
            data.get("statusCode"),
            str(data.get("message") or ""),
            data.get("outputs"),
            data.get("failedCondition"),
            bool(data.get("pending")),
            data.get("undo"),
        )


@dataclass(frozen=True)
class EventSpec:
    """A Kubernetes Event about a transition; `key` makes a redelivered transition the same Event."""

    reason: str
    message: str
    type: str = "Normal"  # or Warning
    key: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "type": self.type, "key": self.key}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> EventSpec:
        return cls(data["reason"], data["message"], data.get("type", "Normal"), data.get("key", ""))


class Record(BaseModel):
    """A record on the wire between the binding, workflow code and activities: camelCase JSON.

    Unknown fields are ignored, not refused: an instance started by an older operator replays its recorded
    inputs through the newer one.
    """

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict the workflow SDK serialises."""
        return self.model_dump(mode="json", by_alias=True)


def compact(model: BaseModel) -> Any:
    """A spec as the API server would hold it: unset optional fields left out."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


class Actor(Record):
    """Who Kubernetes actions act as: the resource's creator and groups, as admission recorded and sealed them."""

    user: str
    groups: list[str] = []

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Actor | None:
        """The creator admission sealed on `body` (None: no valid seal, so nobody is known to act as)."""
        return cls.vouched(body)[0]

    @classmethod
    def vouched(cls, body: Mapping[str, Any]) -> tuple[Actor | None, str]:
        """The sealed creator, or None and why not. The readable annotations alone are never believed."""
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        try:
            sealed = seals.verify_creator(body, annotations.get(SEAL))
        except seals.SealError as exc:
            return None, f"no creator recorded by Steadfast's admission webhook ({exc})"
        if not sealed.user:
            return None, "no creator recorded by Steadfast's admission webhook"
        return cls(user=sealed.user, groups=list(sealed.groups)), ""


SpecT = TypeVar("SpecT", bound=BaseModel)


class WorkflowInput(Record, Generic[SpecT]):
    """What the binding starts an instance with; kinds that need more subclass it."""

    ref: ObjectRef
    generation: int = 0
    spec: SpecT
    actor: Actor | None = None  # None: nobody recorded (webhooks off); Kubernetes actions are then refused

    @field_serializer("spec")
    def _spec(self, spec: BaseModel) -> Any:
        return compact(spec)


class StatusReport(Record):
    """One status snapshot for the status writer; (`run`, `seq`) orders snapshots, `wait` makes it urgent."""

    ref: ObjectRef
    status: dict[str, Any]  # the kind's status model as a merge patch (StatusBase.to_patch)
    seq: int
    run: int = 0  # when the run started (ms): a later run's snapshots are newer; 0 from releases before it
    events: list[EventSpec] = []
    wait: bool = False


class ActionRequest(Record):
    """One attempt of an action, and the snapshot that says it is running (written before it is made)."""

    ref: ObjectRef
    action: dict[str, Any]  # an api.action.Action on the wire; the activity validates it
    key: str  # the Idempotency-Key, the same for every attempt
    timeout: float | None = None  # seconds left in the step's time limit
    what: str = ""  # for logs, e.g. reserve/compensation
    category: str = "action"  # action, compensation, check, alert, notify (a metrics label)
    report: StatusReport | None = None
    # What the action's placeholders and conditions may read (task, saga, outputs, monitor, ...): the
    # workflow's input and recorded results, so every attempt and a replay render the same request.
    variables: dict[str, Any] = {}
    outputs: dict[str, str] = {}  # name -> expression over the response
    conditions: list[str] = []  # must all hold for success (a monitor's), besides the action's own test
    actor: Actor | None = None  # whom a Kubernetes action impersonates
    # A Kubernetes action that waits: the workflow instance and event its shared watch raises when decided.
    # Empty: evaluate once and do not wait (a monitor's check).
    wait_event: str = ""
    instance_id: str = ""
    undo: dict[str, Any] | None = None  # set: this attempt undoes a recorded apply/patch (an objects.Undo)
    rearm: bool = False  # register the wait again (after a restart) without repeating the operation


def idempotency_key(uid: str, *parts: str) -> str:
    """Stable across retries and restarts: derived only from the resource UID and what is being done."""
    digest = hashlib.sha256("/".join((uid, *parts)).encode()).hexdigest()
    return f"sf-{digest[:40]}"
