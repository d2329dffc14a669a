"""Reading the template a TaskSaga names, with the operator's client: when it starts, and at admission."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.api.errors import Unstartable
from steadfast.api.kinds import CLUSTER_SAGA_TEMPLATE, SAGA_TEMPLATE
from steadfast.api.saga import TaskSagaSpec, TemplateKind, TemplateRef
from steadfast.templates.render import Rendered, render


class TemplateReader:
    """Reads templates from the API server at each use (no cache: the run pins what it read)."""

    def __init__(self, api: Callable[[], client.ApiClient]) -> None:
        self._factory = api
        self._api: client.ApiClient | None = None

    def _objects(self) -> client.CustomObjectsApi:
        if self._api is None:
            self._api = self._factory()
        return client.CustomObjectsApi(self._api)

    def read(self, ref: TemplateRef, namespace: str) -> dict[str, Any] | None:
        """The template `ref` names for a saga of `namespace` (a SagaTemplate is always of that namespace), or
        None when it does not exist."""
        try:
            if ref.kind == TemplateKind.CLUSTER_SAGA_TEMPLATE:
                k = CLUSTER_SAGA_TEMPLATE
                found = self._objects().get_cluster_custom_object(k.group, k.version, k.plural, ref.name)
            else:
                k = SAGA_TEMPLATE
                found = self._objects().get_namespaced_custom_object(k.group, k.version, namespace, k.plural, ref.name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(found)

    def render_for(self, saga: TaskSagaSpec, namespace: str) -> Rendered:
        """The saga's definition from its template as it is now; Unstartable when gone or the values do not fit."""
        assert saga.template is not None
        body = self.read(saga.template, namespace)
        if body is None:
            where = "" if saga.template.kind == TemplateKind.CLUSTER_SAGA_TEMPLATE else f" in namespace {namespace}"
            raise Unstartable("TemplateNotFound", f"{saga.template.kind.value} {saga.template.name} not found{where}")
        return render(saga, body)
