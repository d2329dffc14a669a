"""Asking the API server: paged list calls (limit/continue), label and field selectors, read as plain JSON.

The client's model deserialization is skipped (`_preload_content=False` + json.loads): for thousands of objects
it costs more than the API server's answer. The calls of one listing run concurrently; a call the viewer may not
make (RBAC) becomes a warning and the others are still shown.

A listing that needs only what the table shows (`objects=False`) asks for the API server's Table format, the
printer columns and each object's metadata (steadfast.fleet.rows): a fraction of the bytes to send and parse.
Only the phases whose record needs more (phases.DETAILED: a pending request's approvers, a paused saga's failed
step) are read as whole objects, with a field selector each, and replace their rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.api.kinds import Kind
from steadfast.fleet import rows
from steadfast.fleet.filters import Request
from steadfast.fleet.phases import DETAILED
from steadfast.kubeconfig import api_message

# Objects per page. The API server answers a page from its watch cache; bigger pages mean fewer round trips
# and still bound the memory of one answer (kubectl uses 500).
PAGE = 1000
_WORKERS = 6


@dataclass
class Answer:
    """The objects of one request (each with the request's kind) and why some could not be listed."""

    items: list[tuple[Request, dict[str, Any]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _pages(
    api: client.CustomObjectsApi,
    kind: Kind,
    namespace: str | None,
    selector: str | None,
    phase: str | None,
    *,
    table: bool = False,
) -> Iterator[dict[str, Any]]:
    """Every object of `kind` (as Table rows made objects when `table`) matching the selectors, page by page."""
    path = "/apis/{group}/{version}/" + ("{plural}" if namespace is None else "namespaces/{namespace}/{plural}")
    params = {"group": kind.group, "version": kind.version, "plural": kind.plural}
    if namespace is not None:
        params["namespace"] = namespace
    token: str | None = None
    while True:
        query: list[tuple[str, Any]] = [("limit", PAGE)]
        if selector:
            query.append(("labelSelector", selector))
        if phase is not None:
            query.append(("fieldSelector", f"status.phase={phase}"))
        if table:
            query.append(("includeObject", "Metadata"))
        if token:
            query.append(("continue", token))
        response = api.api_client.call_api(
            path,
            "GET",
            path_params=params,
            query_params=query,
            header_params={"Accept": rows.TABLE if table else "application/json"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=False,
        )
        if table:
            page = rows.loads(response.data)
            yield from rows.objects(kind, page)
        else:
            page = json.loads(response.data)
            yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def _no_selectable_phase(exc: ApiException) -> bool:
    """An API server whose CRDs lack the selectable field (installed before it, or older than 1.31) refuses it."""
    return exc.status == 400 and "field label" in (exc.body or "")


def _objects(
    api: client.CustomObjectsApi,
    kind: Kind,
    phases: list[str | None],
    namespace: str | None,
    selector: str | None,
    table: bool = False,
) -> list[dict[str, Any]]:
    """The objects of `kind` in any of `phases` (None: any phase), one call each; where the server cannot
    select by phase, one list of the kind filtered here."""
    try:
        return [obj for phase in phases for obj in _pages(api, kind, namespace, selector, phase, table=table)]
    except ApiException as exc:
        if not _no_selectable_phase(exc):
            raise
    wanted = set(phases)
    return [
        obj
        for obj in _pages(api, kind, namespace, selector, None, table=table)
        if (obj.get("status") or {}).get("phase") in wanted
    ]


def _where(namespace: str | None) -> str:
    return "in any namespace (-A)" if namespace is None else f"in namespace {namespace}"


@dataclass
class _Part:
    """What one concurrent task brought: objects of its request, or, for a table, whole objects to show
    instead of their rows."""

    request: Request
    items: list[dict[str, Any]] = field(default_factory=list)
    replaces_rows: bool = False
    warning: str | None = None


def _task(
    api: client.CustomObjectsApi,
    request: Request,
    phases: list[str | None],
    namespace: str | None,
    selector: str | None,
    *,
    table: bool,
    replaces_rows: bool,
) -> _Part:
    part = _Part(request, replaces_rows=replaces_rows)
    try:
        part.items = _objects(api, request.kind, phases, namespace, selector, table)
    except ApiException as exc:
        part.warning = f"warning: cannot list {request.kind.plural} {_where(namespace)}: {api_message(exc)}"
    return part


def _plan(
    api: client.CustomObjectsApi, requests: list[Request], namespace: str | None, selector: str | None, objects: bool
) -> list[Callable[[], _Part]]:
    """One task per request; for a table, a request that may hold detailed phases gets one more task that reads
    those phases as whole objects (a request for one detailed phase is read as objects alone)."""
    tasks: list[Callable[[], _Part]] = []
    for r in requests:
        table = not objects and r.phase not in DETAILED[r.kind]
        tasks.append(partial(_task, api, r, [r.phase], namespace, selector, table=table, replaces_rows=False))
        if table and r.phase is None:
            detailed: list[str | None] = [*sorted(DETAILED[r.kind])]
            tasks.append(partial(_task, api, r, detailed, namespace, selector, table=False, replaces_rows=True))
    return tasks


def _key(request: Request, obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return request.kind.kind, meta.get("namespace", ""), meta.get("name", "")


def fetch(
    api: client.CustomObjectsApi,
    requests: list[Request],
    namespace: str | None,
    selector: str | None,
    *,
    objects: bool = True,
) -> Answer:
    """Run `requests` in `namespace` (None: every namespace) with the label `selector`; one warning per kind refused.

    With `objects=False` the items are whole objects where their phase is detailed, and elsewhere objects with
    only the fields of the printer columns and the metadata (enough for the table and the age filters)."""
    answer = Answer()
    tasks = _plan(api, requests, namespace, selector, objects)
    if not tasks:
        return answer
    with ThreadPoolExecutor(max_workers=min(_WORKERS, len(tasks))) as pool:
        parts = list(pool.map(lambda task: task(), tasks))
    whole = {_key(p.request, obj): obj for p in parts if p.replaces_rows for obj in p.items}
    for part in parts:
        if not part.replaces_rows:
            answer.items.extend((part.request, whole.get(_key(part.request, obj), obj)) for obj in part.items)
        if part.warning and part.warning not in answer.warnings:  # one per kind, not one per phase asked
            answer.warnings.append(part.warning)
    return answer
