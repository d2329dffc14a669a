"""Asking the API server: paged list calls (limit/continue), label and field selectors, read as plain JSON.

The client's model deserialization is skipped (`_preload_content=False` + json.loads): for thousands of objects
it costs more than the API server's answer. The calls of one listing run concurrently; a call the viewer may not
make (RBAC) becomes a warning and the others are still shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.fleet.filters import Request
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
    api: client.CustomObjectsApi, request: Request, namespace: str | None, selector: str | None, server_phase: bool
) -> Iterator[dict[str, Any]]:
    kind = request.kind
    token: str | None = None
    while True:
        options: dict[str, Any] = {"limit": PAGE, "_preload_content": False}
        if selector:
            options["label_selector"] = selector
        if server_phase and request.field_selector:
            options["field_selector"] = request.field_selector
        if token:
            options["_continue"] = token
        if namespace is None:
            response = api.list_cluster_custom_object(kind.group, kind.version, kind.plural, **options)
        else:
            response = api.list_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, **options)
        page = json.loads(response.data)
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def _where(namespace: str | None) -> str:
    return "in any namespace (-A)" if namespace is None else f"in namespace {namespace}"


def _one(api: client.CustomObjectsApi, request: Request, namespace: str | None, selector: str | None) -> Answer:
    answer = Answer()
    try:
        try:
            answer.items = [(request, obj) for obj in _pages(api, request, namespace, selector, True)]
        except ApiException as exc:
            # An API server whose CRDs lack the selectable field (installed before it, or older than 1.30)
            # refuses the field selector: list the kind and filter the phase here instead.
            if exc.status != 400 or request.field_selector is None or "field label" not in (exc.body or ""):
                raise
            answer.items = [
                (request, obj)
                for obj in _pages(api, request, namespace, selector, False)
                if (obj.get("status") or {}).get("phase") == request.phase
            ]
    except ApiException as exc:
        answer.warnings.append(f"warning: cannot list {request.kind.plural} {_where(namespace)}: {api_message(exc)}")
    return answer


def fetch(api: client.CustomObjectsApi, requests: list[Request], namespace: str | None, selector: str | None) -> Answer:
    """Run `requests` in `namespace` (None: every namespace) with the label `selector`; one warning per kind refused."""
    answer = Answer()
    if not requests:
        return answer
    with ThreadPoolExecutor(max_workers=min(_WORKERS, len(requests))) as pool:
        parts = list(pool.map(lambda r: _one(api, r, namespace, selector), requests))
    for part in parts:
        answer.items.extend(part.items)
        for warning in part.warnings:
            if warning not in answer.warnings:  # one per kind, not one per phase asked
                answer.warnings.append(warning)
    return answer
