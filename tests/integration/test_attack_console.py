"""Adversarial suite: the web console (#29), which acts with whatever credentials each request brings.

A console that held rights of its own, or took a viewer's word for who they are, would be a way around RBAC and
the admission webhook. Attacked here over plain HTTP against consoles in each mode, on the real API server:
a bearer token is the only way in (token mode); identity headers count only from the trusted proxy and never for
Kubernetes' own identities (proxy mode); a page elsewhere cannot post a decision with the viewer's session
(same-origin + CSRF token) nor read the local console through a rebound host name (kubeconfig mode).
"""

from __future__ import annotations

import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from e2e_support import Operator, Resources, TaskService, allow_users, eventually
from kubernetes import client

from steadfast.dev.controlplane import cluster, processes

pytestmark = [pytest.mark.controlplane, pytest.mark.adversarial]

USERS = ("alice", "bob", "dave", "mallory")


class Answer:
    def __init__(self, status: int, body: str) -> None:
        self.status, self.body = status, body


def http(url: str, *, headers: dict[str, str] | None = None, form: dict[str, str] | None = None) -> Answer:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if form else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Answer(response.status, response.read().decode())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read().decode())


def token_of(kubeconfig: str, user: str) -> str:
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    return str(next(u["user"]["token"] for u in doc["users"] if u["name"] == user))


@pytest.fixture(scope="module")
def start(control_plane: cluster.State, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """`start(*args)`: a console with these arguments on a free loopback port; its base URL."""
    pids: list[int] = []
    folder = tmp_path_factory.mktemp("attack-consoles")

    def run(*args: str) -> str:
        port = processes.free_port()
        log = folder / f"console-{port}.log"
        argv = [sys.executable, "-m", "steadfast.cli", "console", "--listen", f"127.0.0.1:{port}", *args]
        proc = processes.launch(argv, log, detach=False, env={**os.environ})
        pids.append(proc.pid)
        processes.wait_until(
            lambda: processes.http_ok(f"http://127.0.0.1:{port}/healthz"),
            what="console",
            timeout=60,
            pid=proc.pid,
            log=log,
        )
        return f"http://127.0.0.1:{port}"

    try:
        yield run
    finally:
        for pid in pids:
            processes.stop(pid)


@pytest.fixture
def pending(kube: client.ApiClient, namespace: str, operator: Operator, task_service: TaskService) -> tuple[str, str]:
    """(namespace, name) of a Pending ApprovalRequest alice may decide; the test users may patch it (RBAC)."""
    allow_users(kube, namespace, USERS)
    requests = Resources(kube, namespace, "approvalrequests", "ApprovalRequest")
    spec = {
        "subject": {"title": "Deploy 1.2.3"},
        "approvers": {"users": ["alice"]},
        "timeout": "1h",
        "action": {"http": {"method": "POST", "url": f"{task_service.url}/deploy"}},
    }
    requests.create("deploy", spec)
    requests.wait_status("deploy", lambda s: s.get("phase") == "Pending", "pending", timeout=60)
    return namespace, "deploy"


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def test_token_mode_is_exactly_the_viewers_rights(
    start: Callable[..., str], control_plane: cluster.State, kube: client.ApiClient, pending: tuple[str, str]
) -> None:
    ns, name = pending
    base = start("--auth", "token", "--kubeconfig", control_plane.kubeconfig, "--context", "admin")
    page = f"{base}/ns/{ns}/approvalrequests/{name}"
    decide = f"{page}/decide"

    # No token, no page: the console never falls back to credentials of its own (here: the admin's cluster).
    assert http(page).status == 401

    # mallory (no approver) sees the page by RBAC and is refused by the webhook in its own words.
    mallory = {"Authorization": f"Bearer {token_of(control_plane.kubeconfig, 'mallory')}"}
    seen = http(page, headers=mallory)
    assert seen.status == 200
    refused = http(decide, headers={**mallory, "Origin": base}, form={"verdict": "approve", "csrf": _csrf(seen.body)})
    assert "Refused" in refused.body and "mallory may not decide" in refused.body

    # A page elsewhere posting with alice's session: no same origin, or no token of hers: nothing is decided.
    alice = {"Authorization": f"Bearer {token_of(control_plane.kubeconfig, 'alice')}"}
    form = {"verdict": "approve", "reason": "forged"}
    assert http(decide, headers={**alice, "Origin": "https://evil.example"}, form=form).status == 403
    assert http(decide, headers={**alice, "Origin": base}, form={**form, "csrf": _csrf(seen.body)}).status == 403
    api = client.CustomObjectsApi(kube)
    current = api.get_namespaced_custom_object("steadfast.dev", "v1alpha1", ns, "approvalrequests", name)
    assert "decision" not in current["spec"]

    # alice decides through the console: the webhook records her, not the console.
    mine = http(page, headers=alice)
    done = http(decide, headers={**alice, "Origin": base}, form={"verdict": "approve", "csrf": _csrf(mine.body)})
    assert "approved by alice" in done.body
    current = api.get_namespaced_custom_object("steadfast.dev", "v1alpha1", ns, "approvalrequests", name)
    assert current["metadata"]["annotations"]["steadfast.dev/decided-by"] == "alice"


def test_proxy_mode_believes_only_the_proxy_and_never_for_system_identities(
    start: Callable[..., str], control_plane: cluster.State, pending: tuple[str, str]
) -> None:
    ns, name = pending
    page = f"/ns/{ns}/approvalrequests/{name}"
    # The console's own identity is the cluster admin (it may impersonate): the attacker's best case.
    own = ["--auth", "proxy", "--kubeconfig", control_plane.kubeconfig, "--context", "admin"]
    elsewhere = start(*own, "--trusted-proxy", "192.0.2.1/32")  # the proxy is another host: loopback is not it
    assert http(elsewhere + page, headers={"X-Forwarded-User": "alice"}).status == 403

    behind = start(*own)  # the proxy is on loopback, as a sidecar
    for forged in (
        {"X-Forwarded-User": "system:admin"},
        {"X-Forwarded-User": "eve", "X-Forwarded-Groups": "system:masters"},
    ):
        answer = http(behind + page, headers=forged)
        assert answer.status == 403 and "Kubernetes' own identities" in answer.body
    # An impersonated nobody sees nothing: the admin's rights are not lent.
    nobody = http(behind + page, headers={"X-Forwarded-User": "nobody"})
    assert nobody.status == 403 and "Deploy 1.2.3" not in nobody.body
    alice = http(behind + page, headers={"X-Forwarded-User": "alice"})
    assert alice.status == 200 and "Deploy 1.2.3" in alice.body and "Signed in as <strong>alice</strong>" in alice.body


def test_the_local_console_answers_only_at_its_own_address(
    start: Callable[..., str], control_plane: cluster.State
) -> None:
    base = start("--kubeconfig", control_plane.kubeconfig, "--context", "alice")
    port = urllib.parse.urlsplit(base).port
    assert http(base + "/healthz").status == 200
    # A page on attacker.example whose name now resolves to 127.0.0.1 (DNS rebinding) sends its own Host.
    assert http(base + "/", headers={"Host": f"attacker.example:{port}"}).status == 421


def test_schedule_and_template_pages_show_only_what_the_viewer_may_read(
    start: Callable[..., str],
    control_plane: cluster.State,
    kube: client.ApiClient,
    namespace: str,
    operator: Operator,
    task_service: TaskService,
) -> None:
    """A console holding the admin's kubeconfig serves dave, who may read schedules but not sagas, and mallory, who
    may read nothing here: the schedule page lists no run to dave (its runs are read with his token), mallory gets
    neither the schedule nor a template, and a repair posted at a schedule goes nowhere."""
    run = {
        "task": {"id": "r"},
        "steps": [{"name": "s", "action": {"http": {"method": "POST", "url": f"{task_service.url}/records"}}}],
    }
    Resources(kube, namespace, "sagaschedules", "SagaSchedule").create(
        "tick", {"schedule": "*/2 * * * * *", "concurrencyPolicy": "Forbid", "sagaTemplate": {"spec": run}}
    )
    Resources(kube, namespace, "sagatemplates", "SagaTemplate").create(
        "tmpl", {"description": "secret recipe", "steps": run["steps"]}
    )
    api = client.CustomObjectsApi(kube)

    def a_run() -> str | None:
        items = api.list_namespaced_custom_object(
            "steadfast.dev", "v1alpha1", namespace, "tasksagas", label_selector="steadfast.dev/schedule=tick"
        )["items"]
        return items[0]["metadata"]["name"] if items else None

    made = eventually(a_run, timeout=60, what="a scheduled run")
    rbac = client.RbacAuthorizationV1Api(kube)
    rule = {"apiGroups": ["steadfast.dev"], "resources": ["sagaschedules"], "verbs": ["get", "list", "watch"]}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "schedules-only"}, "rules": [rule]})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "dave-schedules-only"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "schedules-only"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dave"}],
        },
    )
    base = start("--auth", "token", "--kubeconfig", control_plane.kubeconfig, "--context", "admin")
    page = f"{base}/ns/{namespace}/sagaschedules/tick"
    dave = {"Authorization": f"Bearer {token_of(control_plane.kubeconfig, 'dave')}"}
    seen = eventually(lambda: (a := http(page, headers=dave)).status == 200 and a, timeout=30, what="dave's RBAC")
    assert made not in seen.body and "No run kept" in seen.body, seen.body[:3000]

    mallory = {"Authorization": f"Bearer {token_of(control_plane.kubeconfig, 'mallory')}"}
    for path in (f"/ns/{namespace}/sagaschedules/tick", f"/ns/{namespace}/sagatemplates/tmpl"):
        answer = http(base + path, headers=mallory)
        assert answer.status == 403 and "secret recipe" not in answer.body and made not in answer.body, path
    listed = http(f"{base}/list?kind=sagatemplates&ns={namespace}", headers=mallory)
    assert "tmpl" not in re.sub(r"<[^>]+>", " ", listed.body).split() and "secret recipe" not in listed.body

    admin = {"Authorization": f"Bearer {token_of(control_plane.kubeconfig, 'admin')}"}
    mine = http(page, headers=admin)
    assert made in mine.body  # the admin, who may read the runs, sees them
    token = re.search(r'name="csrf-token" content="([0-9a-f]+)"', mine.body)
    assert token, mine.body[:2000]
    repair = http(f"{page}/repair", headers={**admin, "Origin": base}, form={"action": "Retry", "csrf": token.group(1)})
    assert repair.status == 404
