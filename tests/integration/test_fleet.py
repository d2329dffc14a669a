"""`steadfast list` on a real API server: server-side filters by kind, phase and labels, client-side by age and
approvers, the three outputs, and a viewer who may list only some kinds.

No operator is needed: the test creates resources and writes their statuses itself through the status subresource.
When the session runs an operator (other tests started it), that operator starts these resources too. So that its
writes do not undo the test's: the test waits for the operator's first (unordered) status write, then writes its
own with a `status.report` order no workflow snapshot reaches; the status writer drops every later workflow snapshot
as older (steadfast.status). The specs point at a closed port, so nothing the operator might run does anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.api.kinds import APPROVAL_REQUEST, HEALTH_MONITOR, TASK_SAGA, Kind
from steadfast.cli import main
from steadfast.dev.controlplane import cluster
from steadfast.fleet import render
from steadfast.fleet.cli import listing
from steadfast.fleet.filters import Filters

NOWHERE = "http://127.0.0.1:9"  # the discard port: closed here
# Beyond any workflow run's start (ms since the epoch): a session operator's snapshots are older and dropped.
LAST = {"run": 2**53, "sequence": 0}


def spec(kind: Kind, name: str, users: tuple[str, ...] = ("alice",)) -> dict[str, Any]:
    http = {"http": {"method": "POST", "url": f"{NOWHERE}/{name}"}}
    if kind is TASK_SAGA:
        return {"task": {"id": name, "title": name}, "steps": [{"name": "one", "action": http}]}
    if kind is APPROVAL_REQUEST:
        return {"subject": {"title": f"approve {name}"}, "approvers": {"users": list(users)}, "timeout": "1h"}
    return {"target": {"http": {"method": "GET", "url": f"{NOWHERE}/{name}"}}, "suspend": True}


# name -> (kind, phase, tier label, approvers); what the test writes and what each listing must show.
FLEET: dict[str, tuple[Kind, str, str, tuple[str, ...]]] = {
    "undo-a": (TASK_SAGA, "CompensationFailed", "a", ()),
    "undo-b": (TASK_SAGA, "CompensationFailed", "b", ()),
    "busy": (TASK_SAGA, "Running", "a", ()),
    "done": (TASK_SAGA, "Succeeded", "b", ()),
    "gated": (TASK_SAGA, "AwaitingApproval", "a", ()),
    "ask-alice": (APPROVAL_REQUEST, "Pending", "a", ("alice",)),
    "ask-bob": (APPROVAL_REQUEST, "Pending", "b", ("bob",)),
    "asked": (APPROVAL_REQUEST, "Completed", "a", ("alice",)),
    "sick": (HEALTH_MONITOR, "Unhealthy", "b", ()),
    "fine": (HEALTH_MONITOR, "Healthy", "a", ()),
}
# More of the status than the phase, for what the table's detail shows (from printer columns or the objects).
DETAIL: dict[str, dict[str, Any]] = {
    "busy": {"currentStep": "one"},
    "undo-a": {"compensations": [{"step": "one", "phase": "Failed", "attempts": 3, "message": "HTTP 503"}]},
    "asked": {"approver": "alice", "reason": "approved by alice"},
    "sick": {"healthy": False, "lastError": "connection refused", "checkCount": 4},
    "fine": {"healthy": True, "checkCount": 7},
}


def operator_present(kube: client.ApiClient) -> bool:
    """Whether an operator's admission webhooks are installed (creates then go through it and it starts them)."""
    try:
        client.AdmissionregistrationV1Api(kube).read_validating_webhook_configuration("steadfast.dev")
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


@pytest.fixture
def fleet(kube: client.ApiClient, namespace: str) -> Iterator[str]:
    api = client.CustomObjectsApi(kube)
    for name, (kind, _, tier, users) in FLEET.items():
        body = {
            "apiVersion": kind.api_version,
            "kind": kind.kind,
            "metadata": {"name": name, "labels": {"fleet": namespace, "tier": tier}},
            "spec": spec(kind, name, users),
        }
        api.create_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, body)
    if operator_present(kube):
        deadline = time.monotonic() + 60
        for name, (kind, *_) in FLEET.items():
            while not (
                api.get_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, name).get("status")
                or {}
            ).get("phase"):
                assert time.monotonic() < deadline, f"the session's operator never wrote {name}'s first status"
                time.sleep(0.2)
    for name, (kind, phase, _, _) in FLEET.items():
        status = {"phase": phase, "report": LAST, **DETAIL.get(name, {})}
        api.patch_namespaced_custom_object_status(
            kind.group, kind.version, namespace, kind.plural, name, {"status": status}
        )
    yield namespace


def run(capsys: pytest.CaptureFixture[str], kubeconfig: str, *argv: str, user: str = "admin") -> tuple[int, str, str]:
    code = main(["list", *argv, "--kubeconfig", kubeconfig, "--context", user])
    out = capsys.readouterr()
    return code, out.out, out.err


def names(out: str) -> set[str]:
    return {line.split("/", 1)[1] for line in out.splitlines()}


def with_phase(*phases: str) -> set[str]:
    return {n for n, (_, phase, *_) in FLEET.items() if phase in phases}


def test_filters_and_outputs_on_the_api_server(
    fleet: str, kube: client.ApiClient, control_plane: cluster.State, capsys: pytest.CaptureFixture[str]
) -> None:
    ns, config = fleet, control_plane.kubeconfig

    # The phase filter runs on the API server: the CRDs declare status.phase selectable.
    listed = client.CustomObjectsApi(kube).list_namespaced_custom_object(
        TASK_SAGA.group, TASK_SAGA.version, ns, TASK_SAGA.plural, field_selector="status.phase=CompensationFailed"
    )
    assert {o["metadata"]["name"] for o in listed["items"]} == {"undo-a", "undo-b"}

    code, out, err = run(capsys, config, "-n", ns)
    assert code == 0 and not err
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["KIND", "NAME", "PHASE", "AGE", "WAITS"]
    assert {line.split()[1] for line in lines[1:]} == set(FLEET)

    # "Every CompensationFailed saga since yesterday"
    code, out, _ = run(
        capsys, config, "-n", ns, "--kind", "saga", "--phase", "CompensationFailed", "--newer-than", "24h", "-o", "name"
    )
    assert code == 0 and out.splitlines() == ["tasksaga/undo-a", "tasksaga/undo-b"]
    code, out, _ = run(capsys, config, "-n", ns, "--older-than", "1h", "-o", "name")
    assert code == 0 and out == ""

    code, out, _ = run(capsys, config, "-n", ns, "--needs-person", "-o", "json")
    records = json.loads(out)
    assert {r["name"] for r in records} == with_phase("CompensationFailed", "AwaitingApproval", "Pending", "Unhealthy")
    assert all(r["needsPerson"] and r["waitingFor"] for r in records)
    assert next(r for r in records if r["name"] == "ask-bob")["approvers"] == ["bob"]

    code, out, _ = run(capsys, config, "-n", ns, "--waiting-for", "alice", "-o", "name")
    assert names(out) == {"ask-alice", "undo-a", "undo-b"}

    code, out, _ = run(capsys, config, "-n", ns, "-l", "tier=b", "--kind", "saga,hmon", "-o", "name")
    assert names(out) == {"undo-b", "done", "sick"}

    # Across namespaces, narrowed to this test's objects by label: the NAMESPACE column appears.
    code, out, _ = run(capsys, config, "-A", "-l", f"fleet={ns}", "--phase", "Unhealthy,Completed")
    rows = [line.split() for line in out.splitlines()]
    assert rows[0][:3] == ["KIND", "NAMESPACE", "NAME"]
    assert sorted((r[0], r[1], r[2], r[3]) for r in rows[1:]) == [
        ("ApprovalRequest", ns, "asked", "Completed"),
        ("HealthMonitor", ns, "sick", "Unhealthy"),
    ]


def test_the_table_read_from_printer_columns_shows_what_whole_objects_show(fleet: str, kube: client.ApiClient) -> None:
    api, now = client.CustomObjectsApi(kube), datetime.now(UTC)
    for filters in (Filters.build(), Filters.build(selector="tier=a", phases=["Running", "Completed", "Pending"])):
        from_table, _ = listing(api, filters, fleet, now, output="table")
        from_objects, _ = listing(api, filters, fleet, now, output="json")
        assert render.table(from_table, namespaces=False) == render.table(from_objects, namespaces=False)
        assert from_table
    shown = render.table(listing(api, Filters.build(), fleet, now, output="table")[0], namespaces=False)
    assert "approve asked: approved by alice" in shown and "compensation failed: one: HTTP 503" in shown


def test_a_viewer_sees_what_they_may_list_and_a_warning_for_the_rest(
    fleet: str, kube: client.ApiClient, control_plane: cluster.State, capsys: pytest.CaptureFixture[str]
) -> None:
    ns, config = fleet, control_plane.kubeconfig
    rbac = client.RbacAuthorizationV1Api(kube)
    rule = {"apiGroups": [TASK_SAGA.group], "resources": [TASK_SAGA.plural], "verbs": ["list"]}
    rbac.create_namespaced_role(ns, {"metadata": {"name": "saga-viewer"}, "rules": [rule]})
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "saga-viewer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "saga-viewer"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}],
        },
    )
    deadline = time.monotonic() + 10  # RBAC is read from the API server's informer cache
    while True:
        code, out, err = run(capsys, config, "-n", ns, "--needs-person", "-o", "name", user="mallory")
        if out or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert code == 0
    assert names(out) == {"undo-a", "undo-b", "gated"}
    warnings = sorted(err.splitlines())
    assert len(warnings) == 2
    assert warnings[0].startswith(f"warning: cannot list approvalrequests in namespace {ns}: ")
    assert "forbidden" in warnings[0] and "mallory" in warnings[0]
    assert warnings[1].startswith(f"warning: cannot list healthmonitors in namespace {ns}: ")

    code, out, err = run(capsys, config, "-A", "--kind", "saga", user="mallory")
    assert code == 0 and out == "" and "cannot list tasksagas in any namespace (-A)" in err
