"""Two status writers (two replicas) on one object of the real API server: the newer snapshot stays.

A workflow's reports run on whichever replica daprd hands them to; a progress snapshot held back on one replica
(its linger) can be ready after another replica wrote the run's final one. The writers order their writes through
the object itself (`status.report` and a resourceVersion precondition), which only the API server can check.
Ledgers are a CRD of this module's own, so no operator acts on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2e_support import free_crd
from kubernetes import client

from steadfast import metrics
from steadfast.records import ObjectRef
from steadfast.status import StatusWriter

pytestmark = pytest.mark.controlplane

GROUP = "ledgers.steadfast.test"


@pytest.fixture(scope="module")
def ledgers(kube: client.ApiClient) -> Iterator[None]:
    name = free_crd(kube, GROUP, "Ledger", "ledgers")
    yield
    client.ApiextensionsV1Api(kube).delete_custom_resource_definition(name)


def ledger(kube: client.ApiClient, namespace: str, name: str) -> tuple[ObjectRef, client.CustomObjectsApi]:
    objects = client.CustomObjectsApi(kube)
    body = {"apiVersion": f"{GROUP}/v1", "kind": "Ledger", "metadata": {"name": name}, "spec": {}}
    created = objects.create_namespaced_custom_object(GROUP, "v1", namespace, "ledgers", body)
    return ObjectRef(GROUP, "v1", "Ledger", "ledgers", namespace, name, created["metadata"]["uid"]), objects


def status(objects: client.CustomObjectsApi, ref: ObjectRef) -> dict[str, Any]:
    got = objects.get_namespaced_custom_object(GROUP, "v1", ref.namespace, "ledgers", ref.name)
    return dict(got.get("status") or {})


def test_a_late_snapshot_of_one_replica_never_replaces_the_final_one_of_another(
    kube: client.ApiClient, namespace: str, ledgers: None
) -> None:
    ref, objects = ledger(kube, namespace, "order-42")
    a = StatusWriter(kube, workers=1, linger=0.0)
    b = StatusWriter(kube, workers=1, linger=1.5)
    run = 1_790_000_000_000
    try:
        b.submit(ref, {"phase": "Running", "step": "charge"}, seq=1, run=run).result(timeout=10)
        late = b.submit(ref, {"phase": "Running", "step": "ship"}, seq=2, run=run)  # held back on b
        a.submit(ref, {"phase": "Succeeded", "step": None}, seq=3, run=run, urgent=True).result(timeout=10)
        stale = metrics.STATUS_STALE._value.get()
        late.result(timeout=10)
        assert status(objects, ref) == {"phase": "Succeeded", "report": {"run": run, "sequence": 3}}
        assert metrics.STATUS_STALE._value.get() == stale + 1
        # Someone else changes the object (kopf's annotations, a user's label): the next write still lands.
        objects.patch_namespaced_custom_object(
            GROUP, "v1", namespace, "ledgers", ref.name, {"metadata": {"labels": {"x": "y"}}}
        )
        b.submit(ref, {"phase": "Healthy"}, seq=1, run=run + 1, urgent=True).result(timeout=10)
        assert status(objects, ref)["phase"] == "Healthy"  # a later run is newer whatever its sequence
    finally:
        a.stop()
        b.stop()


def test_a_handlers_write_is_not_held_to_the_order(kube: client.ApiClient, namespace: str, ledgers: None) -> None:
    """Writes with no workflow order (seq 0: the handlers' own, before a workflow runs) are plain merge patches."""
    ref, objects = ledger(kube, namespace, "plain")
    writer = StatusWriter(kube, workers=1)
    try:
        writer.submit(ref, {"phase": "Pending", "message": "engine unavailable"}, seq=0, urgent=True).result(10)
        assert status(objects, ref) == {"phase": "Pending", "message": "engine unavailable"}
    finally:
        writer.stop()
