"""Reading SteadfastPolicies and a namespace's labels, to resolve a TaskSaga's gate, failure behaviour,
concurrency limit and retention (and an ApprovalRequest's retention) when it starts.

Read from the API server at each start rather than from a watch cache: a cache that is still filling when
the operator starts would let a saga through ungated. Two reads per saga start (not per step).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from steadfast.api.kinds import POLICY
from steadfast.api.policy import SteadfastPolicySpec
from steadfast.api.repair import OnFailure
from steadfast.api.retention import Retention
from steadfast.api.saga import TaskSagaSpec
from steadfast.approval.policy import EffectiveGate, effective_gate
from steadfast.concurrency import rules as concurrency_rules
from steadfast.concurrency.records import SagaConcurrency
from steadfast.repair.policy import effective_on_failure
from steadfast.retention import policy as retention_policy

log = logging.getLogger(__name__)


class SagaPolicy(NamedTuple):
    """What the admins' policies (and the operator's defaults) decide for one saga, resolved at its start."""

    gate: EffectiveGate | None
    on_failure: OnFailure | None
    retention: Retention | None
    concurrency: SagaConcurrency | None = None


class PolicyReader:
    def __init__(self, api: Callable[[], client.ApiClient]) -> None:
        self._factory = api
        # The operator's own default (--retain-succeeded/--retain-failed), after spec and policies.
        self.retention_default: Retention | None = None
        self._api: client.ApiClient | None = None
        self._lock = threading.Lock()

    def _client(self) -> client.ApiClient:
        with self._lock:
            if self._api is None:
                self._api = self._factory()
            return self._api

    def policies(self) -> list[tuple[str, SteadfastPolicySpec]]:
        """Every policy; one the operator cannot read fails the start (fail closed), a missing CRD means none."""
        try:
            listed = client.CustomObjectsApi(self._client()).list_cluster_custom_object(
                POLICY.group, POLICY.version, POLICY.plural
            )
        except ApiException as exc:
            if exc.status == 404:
                return []  # the CRD is not installed (an upgrade in progress): no policies exist
            raise
        out: list[tuple[str, SteadfastPolicySpec]] = []
        for item in listed.get("items", []):
            name = item["metadata"]["name"]
            try:
                out.append((name, SteadfastPolicySpec.model_validate(item.get("spec") or {})))
            except ValidationError as exc:
                raise ValueError(f"SteadfastPolicy {name} is not valid: {exc.errors()[0]['msg']}") from None
        return out

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        obj = client.CoreV1Api(self._client()).read_namespace(namespace)
        return dict(obj.metadata.labels or {})

    def gate_for(self, spec: TaskSagaSpec, body: Mapping[str, Any]) -> EffectiveGate | None:
        return self.for_saga(spec, body).gate

    def for_saga(self, spec: TaskSagaSpec, body: Mapping[str, Any]) -> SagaPolicy:
        """The saga's gate, what it does when a step fails, its retention and its concurrency key and limit, from
        one read of the policies and the namespace."""
        meta = body["metadata"]
        labels = dict(meta.get("labels") or {})
        namespace_labels, policies = self.namespace_labels(meta["namespace"]), self.policies()
        gate = effective_gate(spec, labels, namespace_labels, policies)
        on_failure = effective_on_failure(spec, namespace_labels, policies)
        retention = self._retention(spec.retention, namespace_labels, policies)
        created = str(meta.get("creationTimestamp") or "")
        concurrency = concurrency_rules.resolve(
            spec.concurrency, spec.task, meta["namespace"], created, namespace_labels, policies
        )
        return SagaPolicy(gate, on_failure, retention, concurrency)

    def retention_for(self, own: Retention | None, namespace: str) -> Retention | None:
        """A resource's retention: its own, else its namespace's policy default, else the operator's."""
        return self._retention(own, self.namespace_labels(namespace), self.policies())

    def _retention(
        self,
        own: Retention | None,
        namespace_labels: Mapping[str, str],
        policies: list[tuple[str, SteadfastPolicySpec]],
    ) -> Retention | None:
        admins = retention_policy.from_policies(namespace_labels, policies)
        return retention_policy.effective_retention(own, admins, self.retention_default)
