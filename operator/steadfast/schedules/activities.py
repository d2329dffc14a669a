"""The schedule's side effect: create a due run as the schedule's creator, and keep its history within limits.

Safe to run twice: the run's name is fixed by the scheduled time, so a retried or replayed request finds the run
it made (a 409 on create means the same) and goes on to the history. Runs are found by label and kept only if the
schedule owns them (ownerReference with its UID): a TaskSaga that merely carries the label is never counted,
replaced or deleted. Runs are created, replaced and deleted impersonating the creator, so RBAC decides as for
their own kubectl; the admission webhook stamps and seals them as the run's creator.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from steadfast.api.kinds import SAGA_SCHEDULE, TASK_SAGA
from steadfast.api.saga import SagaPhase
from steadfast.api.schedule import SCHEDULE_LABEL, TIME_LABEL, ConcurrencyPolicy, run_saga_spec
from steadfast.objects import Answer, KubeRequests
from steadfast.records import ObjectRef
from steadfast.schedules.records import FIRE, LOOK, FireRequest, FireResult, LookRequest
from steadfast.worker import registrable

log = logging.getLogger(__name__)

_TERMINAL = frozenset(p.value for p in SagaPhase if p.terminal)


class TransientError(RuntimeError):
    """The API server could not answer now; the engine retries the activity."""


class ScheduleActivities:
    def __init__(self, requests: KubeRequests) -> None:
        self.requests = requests

    def fire(self, _ctx: Any, inp: dict[str, Any]) -> dict[str, Any]:
        request = FireRequest.model_validate(inp)
        return self.make_run(request).wire()

    def make_run(self, request: FireRequest) -> FireResult:
        runs = self._runs(request.ref)
        result = FireResult()
        active = [r for r in runs if _phase(r) not in _TERMINAL]
        names = {_name(r) for r in runs}
        if request.run in names:
            result.created = True  # made by an earlier attempt of this request
        elif active and request.policy == ConcurrencyPolicy.FORBID:
            result.skipped = True
        else:
            if request.policy == ConcurrencyPolicy.REPLACE:
                for run in active:
                    problem = self._delete(request, run)
                    if problem:
                        result.problem = problem
                        break
                    result.replaced.append(_name(run))
            if result.problem is None:
                result.problem = self._create(request)
                result.created = result.problem is None
        gone = set(result.replaced)
        finished = [r for r in runs if _phase(r) in _TERMINAL]
        result.deleted = self._trim(request, finished)
        result.active = sorted(
            {_name(r) for r in active if _name(r) not in gone} | ({request.run} if result.created else set()),
            key=lambda n: (_scheduled(n), n),
        )
        result.last_successful = _last_successful(finished)
        return result

    def look(self, _ctx: Any, inp: dict[str, Any]) -> dict[str, Any]:
        """The schedule's active runs and last success now (between two scheduled times); changes nothing."""
        ref = LookRequest.model_validate(inp).ref
        runs = self._runs(ref)
        active = sorted((_name(r) for r in runs if _phase(r) not in _TERMINAL), key=lambda n: (_scheduled(n), n))
        finished = [r for r in runs if _phase(r) in _TERMINAL]
        return FireResult(active=active, last_successful=_last_successful(finished)).wire()

    def _collection(self, namespace: str) -> str:
        return f"/apis/{TASK_SAGA.api_version}/namespaces/{namespace}/{TASK_SAGA.plural}"

    def _runs(self, ref: ObjectRef) -> list[dict[str, Any]]:
        """The schedule's runs: labelled with its name and owned by it (its UID)."""
        answer = self.requests.call(
            "GET",
            self._collection(ref.namespace),
            actor=None,
            query={"labelSelector": f"{SCHEDULE_LABEL}={ref.name}"},
        )
        _raise_transient(answer, "list the schedule's runs")
        if not answer.ok:
            raise TransientError(f"cannot list the schedule's runs: {answer.reason()}")
        items = (answer.body or {}).get("items") or []
        return [r for r in items if _owned_by(r, ref.uid)]

    def _create(self, request: FireRequest) -> str | None:
        ref = request.ref
        template = request.template
        metadata = template.get("metadata") or {}
        labels = {
            **(metadata.get("labels") or {}),
            SCHEDULE_LABEL: ref.name,
            TIME_LABEL: str(int(request.scheduled.timestamp())),
        }
        body = {
            "apiVersion": TASK_SAGA.api_version,
            "kind": TASK_SAGA.kind,
            "metadata": {
                "name": request.run,
                "namespace": ref.namespace,  # always the schedule's own
                "labels": labels,
                "annotations": dict(metadata.get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": SAGA_SCHEDULE.api_version,
                        "kind": SAGA_SCHEDULE.kind,
                        "name": ref.name,
                        "uid": ref.uid,
                        "controller": True,
                    }
                ],
            },
            "spec": run_saga_spec(template.get("spec") or {}, request.run),
        }
        answer = self.requests.call("POST", self._collection(ref.namespace), actor=request.actor, body=body)
        if answer.status == 409:
            existing = self._get(request, request.run)
            if existing is not None and _owned_by(existing, ref.uid):
                return None  # made by an earlier attempt
            return f"a TaskSaga named {request.run} exists and is not this schedule's run"
        _raise_transient(answer, f"create run {request.run}")
        if not answer.ok:
            return f"{request.actor.user} cannot create run {request.run}: {answer.reason()}"
        return None

    def _get(self, request: FireRequest, name: str) -> dict[str, Any] | None:
        """The TaskSaga named `name`, by a list (the operator lists TaskSagas anyway; no extra RBAC verb)."""
        answer = self.requests.call(
            "GET",
            self._collection(request.ref.namespace),
            actor=None,
            query={"fieldSelector": f"metadata.name={name}"},
        )
        _raise_transient(answer, f"read {name}")
        if not answer.ok or not isinstance(answer.body, dict):
            return None
        items = answer.body.get("items") or []
        return dict(items[0]) if items else None

    def _delete(self, request: FireRequest, run: dict[str, Any]) -> str | None:
        """Delete `run` as the creator, only if it is still the same object (UID precondition)."""
        name = _name(run)
        answer = self.requests.call(
            "DELETE",
            f"{self._collection(request.ref.namespace)}/{name}",
            actor=request.actor,
            body={
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "preconditions": {"uid": run["metadata"]["uid"]},
                "propagationPolicy": "Background",
            },
        )
        if answer.status in (404, 409):
            return None  # gone already, or replaced by a new object of the same name
        _raise_transient(answer, f"delete {name}")
        if not answer.ok:
            return f"{request.actor.user} cannot delete run {name}: {answer.reason()}"
        return None

    def _trim(self, request: FireRequest, finished: list[dict[str, Any]]) -> list[str]:
        """Delete finished runs beyond the history limits, oldest first; a refusal is logged, tried next time."""
        succeeded = [r for r in finished if _phase(r) == SagaPhase.SUCCEEDED.value]
        failed = [r for r in finished if _phase(r) != SagaPhase.SUCCEEDED.value]
        deleted: list[str] = []
        for runs, limit in ((succeeded, request.successful_limit), (failed, request.failed_limit)):
            ordered = sorted(runs, key=lambda r: (_scheduled(_name(r)), _name(r)))
            for run in ordered[: max(len(ordered) - limit, 0)]:
                problem = self._delete(request, run)
                if problem:
                    log.info("%s/%s: %s", request.ref.namespace, request.ref.name, problem)
                else:
                    deleted.append(_name(run))
        return deleted

    def register(self, runtime: Any) -> None:
        runtime.register_activity(registrable(self.fire), name=FIRE)
        runtime.register_activity(registrable(self.look), name=LOOK)


def _raise_transient(answer: Answer, what: str) -> None:
    if answer.status >= 500 or answer.status == 429:
        raise TransientError(f"cannot {what} now: {answer.reason()}")


def _name(run: dict[str, Any]) -> str:
    return str(run["metadata"]["name"])


def _phase(run: dict[str, Any]) -> str:
    return str((run.get("status") or {}).get("phase") or "")


def _owned_by(run: dict[str, Any], uid: str) -> bool:
    owners = (run.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("uid") == uid and o.get("kind") == SAGA_SCHEDULE.kind for o in owners)


def _scheduled(name: str) -> int:
    """The scheduled time a run's name ends with (its label says the same, but the name cannot be edited)."""
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _last_successful(finished: list[dict[str, Any]]) -> datetime | None:
    times = [t for r in finished if _phase(r) == SagaPhase.SUCCEEDED.value and (t := _finished(r)) is not None]
    return max(times) if times else None


def _finished(run: dict[str, Any]) -> datetime | None:
    text = (run.get("status") or {}).get("finishedAt")
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None
