"""Upgrades with work in flight: the previous release's operator starts work, the current one finishes it.

The previous release (`PREVIOUS_RELEASE`, from this repository's git history) runs from a copy of its tree in
the run's folder, its CRDs applied; it starts one of each kind of work that outlives a process: a saga at its
approval gate, a saga between two attempts of a failing step, a saga waiting on a Kubernetes object, a saga paused
at a failed step for a person's decision, a monitor and an approval request. Its operator stops (SIGTERM, or
SIGKILL), the current CRDs are applied and the current operator starts; then the gate and the approval are decided
(through the current webhooks), the object is made ready, the failing route recovers, the paused saga is retried
(spec.repair), and every one must finish as if nothing had happened: each effect once at the
idempotent receiver, the statuses right, and no instance stalled (the engine's own runtime status).

The old code runs with the current virtual environment (`PYTHONPATH` pointing at its `operator/` folder): the
two releases pin the same dependencies (compare `git diff PREVIOUS_RELEASE HEAD -- pyproject.toml`), so a second
venv would cost a minute of pip for nothing. When a release changes a dependency, give the old tree its own venv
here (`python -m venv` + `pip install <old tree>`) instead.

Needs the commit in the clone's history: a shallow clone skips with the reason (`git fetch --unshallow`).
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService, allow_users, eventually, wait_webhooks
from kubernetes import client, config

from steadfast.dev.controlplane import cluster
from steadfast.dev.engines import Engine
from steadfast.dev.workflow_api import WorkflowAPI

pytestmark = [pytest.mark.controlplane, pytest.mark.upgrade]

# The release before this one: the last commit of the previous release that landed on main. At the next
# release, set it to the commit this release lands as (`git log --first-parent -1 main` right after the merge)
# and run `pytest -m upgrade` on both engines before tagging.
PREVIOUS_RELEASE = "26627842a37ab61b4d978309a042610c89b02a21"
# What the previous release's operator was started with in its own tests (127.0.0.0/8: it knew no ports).
PREVIOUS_EGRESS = ("127.0.0.0/8", "10.96.0.0/16")

REPO = Path(__file__).resolve().parents[2]
USERS = ("alice", "bob", "dave")
FINAL_SAGA = ("Succeeded", "Failed", "Compensated", "CompensationFailed", "Rejected")
FINAL_APPROVAL = ("Completed", "ActionFailed", "Rejected", "TimedOut")
RETRY_PAUSE = "8s"  # between the failing attempt (old operator) and the next one (current operator)


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True)


@pytest.fixture(scope="session")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's `operator/` and `crds/`, from git history, in the run's folder."""
    if _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout: the previous release comes from its history")
    if _git("cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}").returncode != 0:
        shallow = _git("rev-parse", "--is-shallow-repository").stdout.strip() == b"true"
        if shallow:
            pytest.skip(f"shallow clone: {PREVIOUS_RELEASE[:12]} is not in its history (git fetch --unshallow)")
        pytest.fail(f"PREVIOUS_RELEASE {PREVIOUS_RELEASE} is not a commit of this repository's history")
    archive = _git("archive", "--format=tar", PREVIOUS_RELEASE, "operator", "crds")
    assert archive.returncode == 0, archive.stderr.decode()
    root = tmp_path_factory.mktemp("previous-release")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    return root


def apply_crds(kubectl: Path, state: cluster.State, folder: Path) -> None:
    env = {**os.environ, "KUBECONFIG": state.kubeconfig}
    files = [arg for path in sorted(folder.glob("*.yaml")) for arg in ("-f", str(path))]
    for command in (
        ["apply", "--server-side", "--force-conflicts", *files],
        ["wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"],
    ):
        done = subprocess.run([str(kubectl), *command], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def instance_of(res: Resources, name: str) -> str:
    found: str = res.wait_status(name, lambda s: bool(s.get("workflowInstanceId")), "instance known")[
        "workflowInstanceId"
    ]
    return found


def http(svc: TaskService, method: str, path: str, body: Any = None) -> dict[str, Any]:
    return {"http": {"method": method, "url": f"{svc.url}{path}", **({"body": body} if body else {})}}


class Work:
    """One of each kind of in-flight work in `namespace`, started under whatever operator runs."""

    def __init__(self, kube: client.ApiClient, namespace: str, svc: TaskService, as_user: Callable[[str], Any]):
        self.kube, self.namespace, self.svc, self.as_user = kube, namespace, svc, as_user
        self.sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
        self.monitors = Resources(kube, namespace, "healthmonitors", "HealthMonitor")
        self.approvals = Resources(kube, namespace, "approvalrequests", "ApprovalRequest")
        self.instances: dict[str, str] = {}
        self.expires_at = ""

    def create_as(self, user: str, plural: str, kind: str, name: str, spec: dict[str, Any]) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}
        self.as_user(user).create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, body)

    def start(self, engine: Engine) -> None:
        svc = self.svc
        # A gated saga: dave asks, alice decides (after the upgrade).
        self.create_as(
            "dave",
            "tasksagas",
            "TaskSaga",
            "gated",
            {
                "task": {"id": "u-gated", "title": "Ship it", "priority": "high"},
                "steps": [{"name": "deploy", "action": http(svc, "POST", "/deploy")}],
                "approval": {"priorities": ["high"], "approvers": {"users": ["alice"]}, "timeout": "1h"},
            },
        )
        # An approval request: bob asks, alice decides (after the upgrade); it notifies and acts.
        self.create_as(
            "bob",
            "approvalrequests",
            "ApprovalRequest",
            "request",
            {
                "subject": {"title": "Rotate the keys"},
                "approvers": {"users": ["alice"]},
                "timeout": "1h",
                "notify": http(svc, "POST", "/approvals"),
                "action": http(svc, "POST", "/dashboard", {"id": "u-request"}),
            },
        )
        # A saga waiting on a Kubernetes object (the admin's: steps act as the creator, who may write ConfigMaps).
        self.sagas.create(
            "waiting",
            {
                "task": {"id": "u-waiting"},
                "steps": [
                    {
                        "name": "config",
                        "action": {
                            "kubernetes": {
                                "operation": "apply",
                                "object": {
                                    "apiVersion": "v1",
                                    "kind": "ConfigMap",
                                    "metadata": {"name": "upgrade-wait"},
                                    "data": {"ready": "no"},
                                },
                                "successWhen": 'object.data.ready == "yes"',
                                "timeout": "5m",
                            }
                        },
                    },
                    {"name": "announce", "action": http(svc, "POST", "/alerts", {"task": "u-waiting"})},
                ],
            },
        )
        self.monitors.create(
            "watch", {"target": {"http": {"url": f"{svc.url}/healthz/upgrade"}}, "healthyInterval": "1s"}
        )
        gated = self.sagas.wait_phase("gated", "AwaitingApproval")
        # The previous release's webhooks stamped and sealed it: the current operator must believe its seal.
        stamps = gated["metadata"].get("annotations") or {}
        assert stamps.get("steadfast.dev/requested-by") == "dave" and "steadfast.dev/seal" in stamps, stamps
        gate = self.approvals.wait_phase("gated-approval", "Pending")
        # Its gate request carries the gate seal the previous release wrote (rules.gate_of believes only that).
        assert "steadfast.dev/seal" in (gate["metadata"].get("annotations") or {}), gate["metadata"]
        self.expires_at = self.approvals.wait_status(
            "request", lambda s: s.get("phase") == "Pending" and bool(s.get("expiresAt")), "open"
        )["expiresAt"]
        self.sagas.wait_status(
            "waiting", lambda s: "waiting for" in ((s.get("steps") or [{}])[0].get("message") or ""), "waiting shown"
        )
        self.monitors.wait_status("watch", lambda s: s.get("phase") == "Healthy", "healthy")
        self.pause_for_repair()
        # Last, so that its pause spans the upgrade: a step whose first attempt fails and which retries.
        svc.fault("POST /notices", fail=1)
        retry = {"maxAttempts": 3, "initialInterval": RETRY_PAUSE, "maxInterval": RETRY_PAUSE}
        self.sagas.create(
            "retrying",
            {
                "task": {"id": "u-retrying"},
                "steps": [
                    {"name": "notify", "action": http(svc, "POST", "/notices", {"task": "u-retrying"}), "retry": retry}
                ],
            },
        )
        for res, name in (
            (self.sagas, "gated"),
            (self.sagas, "retrying"),
            (self.sagas, "waiting"),
            (self.monitors, "watch"),
            (self.approvals, "request"),
        ):
            self.instances[name] = instance_of(res, name)
        # In its pause: the failed attempt's result and the retry timer are in the engine's history.
        with WorkflowAPI(engine.address) as api:
            eventually(
                lambda: "timerCreated" in api.event_kinds(self.instances["retrying"]), what="retry timer recorded"
            )
        assert [d["route"] for d in svc.stats()["deliveries"] if d["route"] == "POST /notices"] == ["POST /notices"]

    def pause_for_repair(self) -> None:
        """A saga paused at its failed second step (onFailure Pause), retried with spec.repair after the upgrade."""
        svc = self.svc
        svc.fault("POST /capacity/reserve", fail=1)
        self.sagas.create(
            "paused",
            {
                "task": {"id": "u-paused"},
                "onFailure": {"action": "Pause", "pauseTimeout": "1h"},
                "steps": [
                    {
                        "name": "record",
                        "action": http(svc, "POST", "/records", {"id": "u-paused"}),
                        "compensation": http(svc, "DELETE", "/records/u-paused"),
                    },
                    {"name": "reserve", "action": http(svc, "POST", "/capacity/reserve", {"task": "u-paused"})},
                ],
            },
        )
        self.instances["paused"] = instance_of(self.sagas, "paused")
        self.sagas.wait_phase("paused", "Paused")

    def attempts(self, route: str) -> int:
        return sum(1 for d in self.svc.stats()["deliveries"] if d["route"] == route)

    def finish(self) -> dict[str, Any]:
        """Decide, satisfy and wait: every piece of work to its end (the monitor to a newer spec)."""
        checks_before = self.monitors.status("watch").get("checkCount", 0)
        decide(self.as_user("alice"), self.namespace, "gated-approval", True, "after the upgrade")
        decide(self.as_user("alice"), self.namespace, "request", True, "after the upgrade")
        client.CoreV1Api(self.kube).patch_namespaced_config_map(
            "upgrade-wait", self.namespace, {"data": {"ready": "yes"}}
        )
        self.monitors.patch("watch", {"healthyInterval": "2s"})
        self.sagas.patch("paused", {"repair": {"action": "Retry", "reason": "after the upgrade"}})
        sagas = ("gated", "retrying", "waiting", "paused")
        done = {name: self.sagas.wait_phase(name, *FINAL_SAGA, timeout=90) for name in sagas}
        done["request"] = self.approvals.wait_phase("request", *FINAL_APPROVAL, timeout=60)
        done["watch"] = self.monitors.wait_status(
            "watch",
            lambda s: s.get("observedGeneration") == 2 and s.get("checkCount", 0) > checks_before + 1,
            "monitor checks again under its new spec",
        )
        return done


def decide(api: client.CustomObjectsApi, namespace: str, name: str, approved: bool, reason: str) -> None:
    patch = {"spec": {"decision": {"approved": approved, "reason": reason}}}
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "approvalrequests", name, patch)


def patches(api: WorkflowAPI, instance_id: str) -> set[str]:
    """The workflow patches an instance's history records (each run's `workflowStarted.version`)."""
    return {
        patch
        for event in api.history_dicts(instance_id)
        for patch in event.get("workflowStarted", {}).get("version", {}).get("patches", [])
    }


def runtime_statuses(engine: Engine, instances: dict[str, str]) -> dict[str, str]:
    with WorkflowAPI(engine.address) as api:
        return {name: api.runtime_status(iid) for name, iid in instances.items()}


@pytest.fixture
def as_user(control_plane: cluster.State) -> Callable[[str], client.CustomObjectsApi]:
    cache: dict[str, client.CustomObjectsApi] = {}

    def get(user: str) -> client.CustomObjectsApi:
        if user not in cache:
            cache[user] = client.CustomObjectsApi(
                config.new_client_from_config(config_file=control_plane.kubeconfig, context=user)
            )
        return cache[user]

    return get


@pytest.fixture
def current_stopped(operator: Operator, control_plane: cluster.State, kubectl_path: Path) -> Iterator[Operator]:
    """The session's (current) operator stopped for the test; on the way out the current CRDs and it are back."""
    operator.stop()
    try:
        yield operator
    finally:
        apply_crds(kubectl_path, control_plane, REPO / "crds")
        if operator.pid is None:
            operator.start()


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_work_started_by_the_previous_release_finishes_under_this_one(
    stop: str,
    current_stopped: Operator,
    previous_release: Path,
    engine: Engine,
    control_plane: cluster.State,
    task_service: TaskService,
    kube: client.ApiClient,
    namespace: str,
    kubectl_path: Path,
    as_user: Callable[[str], client.CustomObjectsApi],
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    task_service.reset()
    allow_users(kube, namespace, USERS)
    apply_crds(kubectl_path, control_plane, previous_release / "crds")
    old = Operator(control_plane, engine, tmp_path / "previous.log", egress_allow=PREVIOUS_EGRESS)
    old.env["PYTHONPATH"] = str(previous_release / "operator")
    work = Work(kube, namespace, task_service, as_user)
    try:
        old.start()
        wait_webhooks(as_user("bob"), namespace)
        work.start(engine)
        with WorkflowAPI(engine.address) as api:
            before = {name: patches(api, iid) for name, iid in work.instances.items()}
    finally:
        if stop == "sigkill":
            old.kill()
        else:
            old.stop()
    started = time.monotonic()
    apply_crds(kubectl_path, control_plane, REPO / "crds")
    current_stopped.start()
    wait_webhooks(as_user("bob"), namespace)
    done = work.finish()
    finished = time.monotonic()

    statuses = {name: obj.get("status", obj) for name, obj in done.items()}
    assert {n: statuses[n]["phase"] for n in ("gated", "retrying", "waiting", "paused", "request")} == {
        "gated": "Succeeded",
        "retrying": "Succeeded",
        "waiting": "Succeeded",
        "paused": "Succeeded",
        "request": "Completed",
    }, statuses
    # The paused saga's decision, taken after the upgrade, is recorded with who took it.
    assert [d.get("action") for d in statuses["paused"].get("decisions") or []] == ["Retry"], statuses["paused"]
    assert statuses["retrying"]["steps"][0]["attempts"] == 2, statuses["retrying"]
    assert statuses["watch"]["phase"] == "Healthy", statuses["watch"]
    # Decided after the upgrade, through the current webhooks: the deciders are the authenticated ones.
    assert statuses["request"]["approver"] == "alice", statuses["request"]
    assert work.approvals.status("gated-approval").get("approver") == "alice"
    assert statuses["request"]["expiresAt"] == work.expires_at  # the same timer, not a new one
    # Each effect once, every one of them.
    stats = task_service.stats()
    applied = collections.Counter(f"{a['route']} {a['path']}" for a in stats["applied"])
    assert applied == {
        "POST /deploy /deploy": 1,
        "POST /approvals /approvals": 1,
        "POST /dashboard /dashboard": 1,
        "POST /notices /notices": 1,
        "POST /alerts /alerts": 1,
        "POST /records /records": 1,
        "POST /capacity/reserve /capacity/reserve": 1,
    }, applied
    # The paused saga's failed step: the attempt that failed before the upgrade and the retry after it.
    assert work.attempts("POST /capacity/reserve") == 2
    # The engine agrees: the finished ones completed, the monitor still runs, nothing stalled or failed.
    expected = {n: "COMPLETED" for n in ("gated", "retrying", "waiting", "paused", "request")}
    final = runtime_statuses(engine, {n: work.instances[n] for n in expected})
    assert final == expected, final
    watch = runtime_statuses(engine, {"watch": work.instances["watch"]})["watch"]
    assert watch in ("RUNNING", "CONTINUED_AS_NEW", "PENDING"), watch
    # Workflow versioning: each instance replays as it ran, so the patches its history recorded under the previous
    # release are still there after this one ran it on (a diverging replay would fail the instance instead).
    with WorkflowAPI(engine.address) as api:
        after = {name: patches(api, work.instances[name]) for name in before if name != "watch"}
    assert all(before[name] <= after[name] for name in after), (before, after)
    print(
        f"\n[upgrade] {engine.name}/{stop}: previous release started the work in {started - began:.1f}s; "
        f"the current one finished it {finished - started:.1f}s after the stop"
    )


def test_previous_release_is_pinned_to_a_commit() -> None:
    """The pin is a full commit ID (a branch or tag name would move under the test)."""
    assert len(PREVIOUS_RELEASE) == 40 and all(c in "0123456789abcdef" for c in PREVIOUS_RELEASE)
    with contextlib.suppress(FileNotFoundError):
        if _git("cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}").returncode == 0:
            assert _git("merge-base", "--is-ancestor", PREVIOUS_RELEASE, "HEAD").returncode == 0, (
                "PREVIOUS_RELEASE must be an ancestor of the code under test"
            )
