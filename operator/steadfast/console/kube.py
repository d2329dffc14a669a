"""The Kubernetes API calls the console makes, each with the viewer's API client (never one of its own).

Lists reuse the fleet view (steadfast.fleet): server-side filters (namespace, status.phase field selector,
labels), pages of limit/continue and the Table format. Decisions are the same merge patches as `steadfast
approve` and `steadfast retry`, so the admission webhook stamps the viewer and refuses what it must.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.api.kinds import APPROVAL_REQUEST, DECIDED_BY, KINDS, TASK_SAGA, Kind
from steadfast.api.schedule import SCHEDULE_LABEL
from steadfast.fleet import query
from steadfast.fleet.cli import listing
from steadfast.fleet.filters import Filters
from steadfast.fleet.record import FleetRecord, from_object
from steadfast.kubeconfig import api_message
from steadfast.repair import cli as repair_cli
from steadfast.repair.decisions import Action, Decision, Outcome

PAGE = 50  # rows per page of a list page; the API server pages them (limit/continue)
NEEDS_PERSON_SHOWN = 200  # rows of "needs a person" on the overview; the list page pages the rest
RUNS_SHOWN = 50  # the newest runs on a schedule's page (its history limits keep fewer unless raised)


@dataclass(frozen=True)
class Identity:
    """Who the API server says the viewer is (SelfSubjectReview): what the approvals inbox matches against."""

    user: str
    groups: tuple[str, ...] = ()


def whoami(api: client.ApiClient) -> Identity:
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    info = review.status.user_info
    return Identity(str(info.username), tuple(info.groups or ()))


def _objects(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@dataclass
class Overview:
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # kind -> phase -> number
    needs_person: list[FleetRecord] = field(default_factory=list)
    more: int = 0  # needs-person records not shown
    warnings: list[str] = field(default_factory=list)


def overview(api: client.ApiClient, namespace: str | None) -> Overview:
    """Counts by kind and phase, and what waits for a person (fleet's NEEDS_PERSON), in `namespace` or all."""
    records, warnings = listing(_objects(api), Filters.build(), namespace, output="table")
    out = Overview(counts={k.kind: Counter() for k in KINDS}, warnings=warnings)
    needing = []
    for r in records:
        out.counts[r.kind][r.phase or "-"] += 1
        if r.needs_person:
            needing.append(r)
    out.needs_person = needing[:NEEDS_PERSON_SHOWN]
    out.more = len(needing) - len(out.needs_person)
    return out


def inbox(api: client.ApiClient, who: Identity, namespace: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Pending ApprovalRequests naming the viewer (user or group) among the approvers, as whole objects.

    One list call, filtered by phase on the server; who may decide is judged again by the webhook on each decision.
    """
    filters = Filters.build(kinds=["apr"], phases=["Pending"])
    answer = query.fetch(_objects(api), filters.requests(), namespace, filters.selector)
    mine = {who.user, *(f"group:{g}" for g in who.groups)}
    objects = [obj for request, obj in answer.items if mine & set(from_object(request.kind, obj).approvers)]
    objects.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"].get("name", "")))
    return objects, answer.warnings


@dataclass
class Page:
    items: list[dict[str, Any]]
    next: str | None  # the API server's continue token
    remaining: int | None  # what the API server says is left after this page (may be absent)


def page(
    api: client.ApiClient,
    kind: Kind,
    namespace: str | None,
    *,
    phase: str | None = None,
    selector: str | None = None,
    token: str | None = None,
    limit: int = PAGE,
) -> Page:
    """One page of `kind`, filtered by the API server (status.phase field selector, label selector)."""
    query: list[tuple[str, Any]] = [("limit", limit)]
    if phase:
        query.append(("fieldSelector", f"status.phase={phase}"))
    if selector:
        query.append(("labelSelector", selector))
    if token:
        query.append(("continue", token))
    body = collection(api, kind, namespace, query)
    meta = body.get("metadata") or {}
    return Page(body.get("items") or [], meta.get("continue") or None, meta.get("remainingItemCount"))


def collection(api: client.ApiClient, kind: Kind, namespace: str | None, query: list[tuple[str, Any]]) -> Any:
    """A GET of `kind`'s collection (one namespace, or all) as the viewer: the JSON body as the API server sent it."""
    return json.loads(collection_response(api, kind, namespace, query).data)


def collection_response(api: client.ApiClient, kind: Kind, namespace: str | None, query: list[tuple[str, Any]]) -> Any:
    """The unread response of that GET (a watch reads it line by line as it comes).

    Raw, not CustomObjectsApi: the query keeps its order and repeats, and no body is copied into models."""
    path = "/apis/{group}/{version}/" + ("{plural}" if namespace is None else "namespaces/{namespace}/{plural}")
    params = {"group": kind.group, "version": kind.version, "plural": kind.plural}
    if namespace is not None:
        params["namespace"] = namespace
    return api.call_api(
        path,
        "GET",
        path_params=params,
        query_params=query,
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
        _preload_content=False,
    )


def runs(api: client.ApiClient, schedule: dict[str, Any], shown: int = RUNS_SHOWN) -> tuple[list[dict[str, Any]], int]:
    """The newest `shown` TaskSagas a SagaSchedule made that still exist (its label), and how many exist.

    All are read, a page at a time: the API server lists them by name, oldest first, and the schedule's history
    limits and its active runs bound them. Read as the viewer: who may read the schedule but not the sagas sees none.
    """
    meta = schedule["metadata"]
    selector = ("labelSelector", f"{SCHEDULE_LABEL}={meta['name']}")
    items: list[dict[str, Any]] = []
    token: str | None = None
    try:
        while True:
            query: list[tuple[str, Any]] = [("limit", PAGE), selector, *([("continue", token)] if token else [])]
            body = collection(api, TASK_SAGA, meta["namespace"], query)
            items.extend(body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue") or None
            if token is None:
                break
    except ApiException:
        return [], 0
    items.sort(key=lambda o: str(o["metadata"].get("creationTimestamp") or ""), reverse=True)
    return items[:shown], len(items)


def get(api: client.ApiClient, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
    """One object as the viewer; `namespace` None for a cluster-scoped kind."""
    objects = _objects(api)
    obj: dict[str, Any] = (
        objects.get_cluster_custom_object(kind.group, kind.version, kind.plural, name)
        if namespace is None
        else objects.get_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, name)
    )
    return obj


def events(api: client.ApiClient, kind: Kind, namespace: str | None, name: str) -> list[dict[str, Any]]:
    """The object's Events, oldest first (a cluster-scoped object's are in `default`); none when the viewer may
    not list Events (RBAC)."""
    try:
        listed = client.CoreV1Api(api).list_namespaced_event(
            namespace or "default",
            field_selector=f"involvedObject.kind={kind.kind},involvedObject.name={name}",
            limit=200,
        )
    except ApiException:
        return []
    out = [api.sanitize_for_serialization(e) for e in listed.items]
    return sorted(out, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))


@dataclass(frozen=True)
class Result:
    """What came of a decision, as the page shows it: done or refused, in the API server's words."""

    done: bool
    message: str


def decide(api: client.ApiClient, namespace: str, name: str, approved: bool, reason: str | None) -> Result:
    """Approve or reject as the viewer: a merge patch of spec.decision, as `steadfast approve` sends it."""
    kind = APPROVAL_REQUEST
    try:
        patched = _objects(api).patch_namespaced_custom_object(
            kind.group,
            kind.version,
            namespace,
            kind.plural,
            name,
            {"spec": {"decision": {"approved": approved, "reason": reason or None}}},
        )
    except ApiException as exc:
        return Result(False, "not found" if exc.status == 404 else api_message(exc))
    who = ((patched.get("metadata") or {}).get("annotations") or {}).get(DECIDED_BY, "?")
    return Result(True, f"{'approved' if approved else 'rejected'} by {who}")


def repair(
    api: client.ApiClient,
    kind: Kind,
    namespace: str,
    name: str,
    action: Action,
    reason: str | None,
    step: str | None = None,
) -> Result:
    """A repair decision as the viewer (steadfast.repair: the same patch as `steadfast retry`), on a TaskSaga or
    an ApprovalRequest. `step` is for Resolve only (the webhook judges it, as every other part of the decision)."""
    try:
        current = get(api, kind, namespace, name)
    except ApiException as exc:
        return Result(False, "not found" if exc.status == 404 else api_message(exc))
    step = (step or None) if action == "Resolve" else None
    outcome: Outcome = repair_cli.decide(
        _objects(api), kind, current, Decision(action=action, step=step, reason=reason or None)
    )
    return Result(outcome.done, outcome.message)
