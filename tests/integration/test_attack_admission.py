"""Specs the operator cannot run are refused when they are written, not admitted and then Stalled or stuck.

Every spec the models refuse is refused at `kubectl apply` with the message the Stalled (InvalidSpec)
condition would have shown (an exact `kind: Secret`, unknown fields in a wait); and a HealthMonitor too
large for the operator to record as handled (kopf keeps a copy of its spec in an annotation, and all
annotations together may hold 256 KiB) is refused at creation, where before it was admitted and could then
never be changed. See docs/security.md.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from steadfast import persistence
from steadfast.api import APPROVAL_REQUEST, HEALTH_MONITOR, TASK_SAGA, Kind
from steadfast.api.errors import invalid_spec

pytestmark = [pytest.mark.controlplane, pytest.mark.adversarial]

DEAD_URL = "http://127.0.0.1:1/health"
SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}}
INVALID: list[tuple[Kind, dict[str, Any]]] = [
    (TASK_SAGA, {"task": {"id": "t"}, "steps": [{"name": "read", "action": {"kubernetes": {"object": SECRET}}}]}),
    (
        HEALTH_MONITOR,
        {
            "target": {
                "kubernetes": {
                    "operation": "wait",
                    "object": {**SECRET, "kind": "ConfigMap", "data": {"planted": "x"}},
                    "successWhen": "true",
                }
            }
        },
    ),
    (
        APPROVAL_REQUEST,
        {"subject": {"title": "t"}, "approvers": {"users": ["alice"]}, "action": {"kubernetes": {"object": SECRET}}},
    ),
    (  # parallel steps whose dependencies loop: no step would ever be ready
        TASK_SAGA,
        {
            "task": {"id": "t"},
            "steps": [
                {"name": "a", "action": {"http": {"url": DEAD_URL}}, "dependsOn": ["b"]},
                {"name": "b", "action": {"http": {"url": DEAD_URL}}, "dependsOn": ["a"]},
            ],
        },
    ),
]


def manifest(kind: Kind, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def kubectl(
    kubectl_path: Path, tmp_path: Path, verb: list[str], obj: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{obj['metadata']['name']}.json"
    path.write_text(json.dumps(obj))
    return subprocess.run([str(kubectl_path), *verb, "-f", str(path)], capture_output=True, text=True, check=False)


def stalled_message(kind: Kind, spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        kind.parse_spec(spec)
    return invalid_spec(caught.value)


@pytest.mark.parametrize(("kind", "spec"), INVALID, ids=[k.kind for k, _ in INVALID])
def test_invalid_specs_are_refused_at_apply_with_the_stalled_message(
    kind: Kind, spec: dict[str, Any], namespace: str, operator: Operator, kubectl_path: Path, tmp_path: Path
) -> None:
    done = kubectl(kubectl_path, tmp_path, ["apply"], manifest(kind, "invalid", namespace, spec))
    assert done.returncode != 0, done.stdout
    expected = stalled_message(kind, spec)
    assert "denied the request: " + expected in done.stderr, done.stderr


def test_a_change_to_an_invalid_spec_is_refused_and_metadata_edits_pass(
    kube: client.ApiClient, namespace: str, operator: Operator
) -> None:
    monitors = Resources(kube, namespace, "healthmonitors", "HealthMonitor")
    monitors.create("edited", {"target": {"http": {"url": DEAD_URL}}})
    monitors.wait_status("edited", lambda s: bool(s.get("phase")), "a phase")
    invalid = INVALID[1][1]
    with pytest.raises(ApiException) as caught:
        monitors.api.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, "healthmonitors", "edited", {**(monitors.get("edited") or {}), "spec": invalid}
        )
    assert caught.value.status == 422
    assert json.loads(caught.value.body)["message"].endswith(stalled_message(HEALTH_MONITOR, invalid))
    monitors.patch_metadata("edited", {"labels": {"team": "a"}})


def padded_monitor(namespace: str, name: str, bytes_over_limit: int) -> dict[str, Any]:
    """A monitor whose bookkeeping (with the room kept for retries) would hold the annotation limit plus
    `bytes_over_limit`, before admission's stamps."""

    def build(pad: int) -> dict[str, Any]:
        spec = {"target": {"http": {"url": DEAD_URL, "method": "POST", "body": {"pad": "x" * pad}}}}
        return manifest(HEALTH_MONITOR, name, namespace, spec)

    wanted = persistence.ANNOTATIONS_LIMIT - persistence.PROGRESS_RESERVE + bytes_over_limit
    obj = build(wanted - persistence.annotation_bytes(HEALTH_MONITOR, build(0)))
    assert persistence.annotation_bytes(HEALTH_MONITOR, obj) == wanted
    return obj


def test_a_monitor_too_large_to_record_is_refused_and_one_under_the_limit_can_be_changed(
    kube: client.ApiClient, namespace: str, operator: Operator, kubectl_path: Path, tmp_path: Path
) -> None:
    over = kubectl(kubectl_path, tmp_path, ["create"], padded_monitor(namespace, "over", 512))
    assert over.returncode != 0, over.stdout
    assert "too large for the operator to keep track of" in over.stderr, over.stderr
    assert f"limit of {persistence.ANNOTATIONS_LIMIT} bytes (256 KiB)" in over.stderr, over.stderr

    # 4 KiB under: admission's stamps and their seal (about 1 KiB) count too.
    under = kubectl(kubectl_path, tmp_path, ["create"], padded_monitor(namespace, "under", -4096))
    assert under.returncode == 0, under.stderr
    monitors = Resources(kube, namespace, "healthmonitors", "HealthMonitor")
    monitors.wait_status("under", lambda s: bool(s.get("phase")), "a phase")
    monitors.patch("under", {"unhealthyInterval": "1s"})  # applies at once
    monitors.wait_status("under", lambda s: s.get("observedGeneration") == 2, "the change handled")

    record = (monitors.get("under") or {})["metadata"]["annotations"][
        f"{persistence.PREFIX}/{persistence.LAST_HANDLED}"
    ]
    assert json.loads(record)["spec"]["unhealthyInterval"] == "1s"  # kopf could record the change
