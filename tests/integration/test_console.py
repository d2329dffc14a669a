"""The web console in a real browser (headless Chromium) against the real API server and operator.

Each person runs their own console (`steadfast console`, their kubeconfig context), so every page and every
decision is made with that person's credentials: the webhook records the viewer as approver, refuses a
non-approver in its own words, and RBAC hides another namespace. One browser for the module.

Screenshots go to $STEADFAST_CONSOLE_SCREENSHOTS when set (CI keeps `artifacts/console/`; docs/console/ holds the
ones the docs show), else to the pytest temporary folder (`console-screenshots*` under pytest's basetemp).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import a11y
import pytest
from e2e_support import GROUP, Operator, Resources, TaskService, allow_users, eventually, wait_webhooks
from kubernetes import client
from webdriver import Browser, available

from steadfast.dev.controlplane import cluster, processes

pytestmark = [pytest.mark.controlplane, pytest.mark.browser]

USERS = ("alice", "bob", "dave", "mallory")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("STEADFAST_CONSOLE_SCREENSHOTS")
    return Path(given) if given else tmp_path_factory.mktemp("console-screenshots")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    why = available()
    if why and os.environ.get("STEADFAST_REQUIRE_BROWSER"):  # set by .ci/run, which installs Chromium
        pytest.fail(f"CI without the browser: {why}")
    if why:
        pytest.skip(why)
    b = Browser(tmp_path_factory.mktemp("browser") / "chromedriver.log")
    try:
        yield b
    finally:
        b.quit()


@pytest.fixture(scope="module")
def console(control_plane: cluster.State, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """`console(user)`: the base URL of that user's own console (started once, stopped with the module)."""
    started: dict[str, tuple[int, str]] = {}
    folder = tmp_path_factory.mktemp("consoles")

    def url(user: str) -> str:
        if user not in started:
            port = processes.free_port()
            log = folder / f"{user}.log"
            argv = [sys.executable, "-m", "steadfast.cli", "console", "--listen", f"127.0.0.1:{port}"]
            argv += ["--kubeconfig", control_plane.kubeconfig, "--context", user]
            proc = processes.launch(argv, log, detach=False, env={**os.environ})
            processes.wait_until(
                lambda: processes.http_ok(f"http://127.0.0.1:{port}/healthz"),
                what=f"{user}'s console",
                timeout=60,
                pid=proc.pid,
                log=log,
            )
            started[user] = (proc.pid, f"http://127.0.0.1:{port}")
        return started[user][1]

    try:
        yield url
    finally:
        for pid, _ in started.values():
            processes.stop(pid)


@pytest.fixture(autouse=True)
def disarm(task_service: TaskService) -> Iterator[None]:
    """The task service is the session's: faults armed here (a slow step, a failing health check) end here."""
    yield
    task_service.clear_faults()


@pytest.fixture
def ns(kube: client.ApiClient, namespace: str, operator: Operator, task_service: TaskService) -> str:
    """A namespace where the test users may work (only the webhooks decide); alice may also read Events,
    HealthMonitors, SagaSchedules and SagaTemplates and make repair decisions (the verb `repair`)."""
    task_service.reset()
    allow_users(kube, namespace, USERS)
    rbac = client.RbacAuthorizationV1Api(kube)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "events"},
            "rules": [
                {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
                {"apiGroups": [GROUP], "resources": ["tasksagas", "approvalrequests"], "verbs": ["repair"]},
                {
                    "apiGroups": [GROUP],
                    "resources": ["healthmonitors", "sagaschedules", "sagatemplates"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "events"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "events"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
        },
    )
    wait_webhooks(client.CustomObjectsApi(kube), namespace)
    return namespace


def _http(svc: TaskService, method: str, path: str, **extra: Any) -> dict[str, Any]:
    return {"http": {"method": method, "url": f"{svc.url}{path}", **extra}}


def _accessible(browser: Browser, page: str) -> None:
    problems = a11y.check(browser)
    assert not problems, f"{page}: {problems}"
    browser.run("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);")


def test_approve_in_the_inbox_and_a_refusal_in_the_webhooks_words(
    ns: str,
    kube: client.ApiClient,
    browser: Browser,
    console: Callable[[str], str],
    task_service: TaskService,
    shots: Path,
) -> None:
    sagas = Resources(kube, ns, "tasksagas", "TaskSaga")
    title = 'Deploy <script>alert("x")</script> 1.2.3 \u202egpj.exe'
    sagas.create(
        "gated",
        {
            "task": {"id": "deploy-123", "title": title, "priority": "high"},
            "approval": {"required": True, "approvers": {"users": ["alice"]}, "timeout": "1h"},
            "steps": [{"name": "deploy", "action": _http(task_service, "POST", "/records", body={"id": "d-123"})}],
        },
    )
    request = sagas.wait_status("gated", lambda s: bool(s.get("approvalRequest")), "an approval request")[
        "approvalRequest"
    ]
    aprs = Resources(kube, ns, "approvalrequests", "ApprovalRequest")
    aprs.wait_status(request, lambda s: s.get("phase") == "Pending", "pending")

    # mallory may patch here (RBAC) but is no approver: the webhook refuses, and the page says so in its words.
    browser.open(f"{console('mallory')}/ns/{ns}/approvalrequests/{request}")
    browser.type("input[name=reason]", "let me")
    browser.click("button[value=approve]")
    browser.wait("return !!document.querySelector('.notice.refused');", what="the refusal")
    refusal = browser.text(".notice.refused")
    assert "mallory may not decide" in refusal, refusal
    _accessible(browser, "approval request page")
    browser.screenshot(shots / "refused.png")

    # alice sees the request in her inbox, the title shown as text (no script, the bidi override made visible).
    browser.open(f"{console('alice')}/approvals?ns={ns}")
    browser.wait("return document.querySelectorAll('article.card').length === 1;", what="one request in the inbox")
    card = browser.text("article.card")
    assert '<script>alert("x")</script>' in card and "\\u202e" in card, card
    assert browser.run("return document.querySelectorAll('main script').length;") == 0
    _accessible(browser, "approvals inbox")
    browser.screenshot(shots / "approvals.png")
    browser.type("article.card input[name=reason]", "ship it")
    browser.click("article.card button[value=approve]")
    browser.wait("return !!document.querySelector('.notice.ok');", what="the decision recorded")
    assert "approved by alice" in browser.text(".notice.ok")
    obj = aprs.get(request)
    assert obj is not None and obj["metadata"]["annotations"]["steadfast.dev/decided-by"] == "alice"
    sagas.wait_phase("gated", "Succeeded")


def test_a_compensated_saga_timeline_and_a_live_update(
    ns: str,
    kube: client.ApiClient,
    browser: Browser,
    console: Callable[[str], str],
    task_service: TaskService,
    shots: Path,
) -> None:
    sagas = Resources(kube, ns, "tasksagas", "TaskSaga")
    fail = {"headers": [{"name": "X-Fail", "value": "always"}]}
    sagas.create(
        "order-42",
        {
            "task": {"id": "order-42", "title": "Order 42: charge, then ship"},
            "steps": [
                {
                    "name": "charge",
                    "action": _http(task_service, "POST", "/records", body={"id": "order-42"}),
                    "compensation": _http(task_service, "DELETE", "/records/order-42"),
                },
                {"name": "ship", "action": _http(task_service, "POST", "/notices", **fail)},
            ],
        },
    )
    sagas.wait_phase("order-42", "Compensated")
    browser.open(f"{console('alice')}/ns/{ns}/tasksagas/order-42")
    timeline = browser.text("ol.timeline")
    assert "Step charge" in timeline and "Step ship" in timeline and "Compensation of charge" in timeline, timeline
    assert "Compensated" in browser.text("#saga-phase")
    assert "500" in timeline or "fault" in timeline  # the failed step's message
    _accessible(browser, "saga page")
    browser.screenshot(shots / "saga.png")

    # A saga whose one step takes seconds: its open page turns Succeeded by itself (a watch, no reload).
    task_service.fault("POST /dashboard", fail=0, delay=6)
    sagas.create(
        "slow",
        {"task": {"id": "slow"}, "steps": [{"name": "wait", "action": _http(task_service, "POST", "/dashboard")}]},
    )
    browser.open(f"{console('alice')}/ns/{ns}/tasksagas/slow")
    browser.wait("return document.body.getAttribute('data-live-state') === 'open';", what="the live stream")
    assert "Succeeded" not in browser.text("#saga-phase")
    browser.run("window.__notReloaded = true;")
    browser.wait(
        "var p = document.querySelector('#saga-phase'); return p && p.innerText.indexOf('Succeeded') >= 0;",
        timeout=60,
        what="the live update to Succeeded",
    )
    assert browser.run("return window.__notReloaded === true;"), "the page was reloaded"


def test_the_overview_and_another_namespace_unseen(
    ns: str,
    kube: client.ApiClient,
    browser: Browser,
    console: Callable[[str], str],
    task_service: TaskService,
    shots: Path,
) -> None:
    other = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": other}})
    try:
        hidden = Resources(kube, other, "tasksagas", "TaskSaga")
        hidden.create(
            "secret-plan",
            {
                "task": {"id": "classified-77", "title": "Classified plan"},
                "steps": [{"name": "s", "action": _http(task_service, "POST", "/records")}],
            },
        )
        mine = Resources(kube, ns, "tasksagas", "TaskSaga")
        mine.create(
            "visible",
            {"task": {"id": "visible"}, "steps": [{"name": "s", "action": _http(task_service, "POST", "/records")}]},
        )
        mine.wait_phase("visible", "Succeeded")

        browser.open(f"{console('alice')}/?ns={ns}")
        page = browser.text("main")
        assert "Counts by kind and phase" in page and "TaskSaga" in page, page
        _accessible(browser, "overview")

        for path in (f"/?ns={other}", f"/list?kind=tasksagas&ns={other}", "/", f"/ns/{other}/tasksagas/secret-plan"):
            browser.open(console("alice") + path)
            source = browser.source()
            assert "classified" not in source.lower(), path
            assert "secret-plan" not in source or path.endswith("secret-plan"), path  # there only as the URL asked
        browser.open(f"{console('alice')}/ns/{other}/tasksagas/secret-plan")
        assert "forbidden" in browser.text("main").lower()

        browser.open(f"{console('alice')}/list?kind=tasksagas&ns={ns}")
        assert "visible" in browser.text("main")
        _accessible(browser, "saga list")
    finally:
        core.delete_namespace(other)


def test_a_monitor_page_and_a_repair_from_the_saga_page(
    ns: str,
    kube: client.ApiClient,
    browser: Browser,
    console: Callable[[str], str],
    task_service: TaskService,
    shots: Path,
) -> None:
    monitors = Resources(kube, ns, "healthmonitors", "HealthMonitor")
    task_service.fault(f"GET /healthz/{ns}", fail=-1)
    monitors.create(
        "payments-api",
        {
            "target": {"http": {"method": "GET", "url": f"{task_service.url}/healthz/{ns}", "timeout": "2s"}},
            "healthyInterval": "1s",
            "unhealthyInterval": "1s",
            "failureThreshold": 2,
        },
    )
    monitors.wait_phase("payments-api", "Unhealthy")
    browser.open(f"{console('alice')}/ns/{ns}/healthmonitors/payments-api")
    assert "Unhealthy" in browser.text("#monitor-phase")
    facts = browser.text("dl.facts")
    assert "Uptime" in facts and "failed in a row" in facts, facts
    _accessible(browser, "monitor page")
    browser.screenshot(shots / "monitor.png")

    # A saga paused at a failed step: alice compensates it from its page; the webhook records her.
    sagas = Resources(kube, ns, "tasksagas", "TaskSaga")
    fail = {"headers": [{"name": "X-Fail", "value": "always"}]}
    sagas.create(
        "stuck",
        {
            "task": {"id": "stuck"},
            "steps": [
                {
                    "name": "reserve",
                    "action": _http(task_service, "POST", "/records", body={"id": "stuck"}),
                    "compensation": _http(task_service, "DELETE", "/records/stuck"),
                },
                {"name": "notify", "action": _http(task_service, "POST", "/notices", **fail)},
            ],
            "onFailure": {"action": "Pause", "pauseTimeout": "1h"},
        },
    )
    sagas.wait_phase("stuck", "Paused")
    browser.open(f"{console('alice')}/?ns={ns}")
    needs = browser.text("#needs-h + table")
    assert "payments-api" in needs and "stuck" in needs, needs
    browser.screenshot(shots / "overview.png")
    browser.open(f"{console('alice')}/ns/{ns}/tasksagas/stuck")
    assert {"Retry", "Skip", "Compensate"} <= set(browser.text("form.repair").split())
    _accessible(browser, "paused saga page")
    browser.screenshot(shots / "paused.png")
    browser.type("#repair-reason", "carrier is down for the day")
    browser.click("form.repair button[value=Compensate]")
    browser.wait("return !!document.querySelector('.notice');", what="the repair's outcome")
    assert "Compensate recorded for alice" in browser.text(".notice.ok")
    saga = sagas.wait_phase("stuck", "Compensated")
    assert saga["metadata"]["annotations"]["steadfast.dev/repaired-by"] == "alice"


def test_resolve_a_failed_compensation_naming_its_step(
    ns: str, kube: client.ApiClient, browser: Browser, console: Callable[[str], str], task_service: TaskService
) -> None:
    sagas = Resources(kube, ns, "tasksagas", "TaskSaga")
    fail = {"headers": [{"name": "X-Fail", "value": "always"}]}
    sagas.create(
        "refund",
        {
            "task": {"id": "refund"},
            "steps": [
                {
                    "name": "charge",
                    "action": _http(task_service, "POST", "/records", body={"id": "refund"}),
                    "compensation": _http(task_service, "DELETE", "/records/refund", **fail),
                },
                {"name": "ship", "action": _http(task_service, "POST", "/notices", **fail)},
            ],
        },
    )
    sagas.wait_phase("refund", "CompensationFailed", timeout=90)
    browser.open(f"{console('alice')}/ns/{ns}/tasksagas/refund")
    assert browser.run("return document.querySelector('#repair-step').value;") == "charge"
    browser.type("#repair-reason", "refunded by hand, ticket 7")
    browser.click("form.repair button[value=Resolve]")
    browser.wait("return !!document.querySelector('.notice');", what="the repair's outcome")
    assert "Resolve of step charge recorded for alice" in browser.text(".notice.ok")
    obj = sagas.get("refund")
    assert obj is not None and obj["spec"]["repair"] == {
        "action": "Resolve",
        "step": "charge",
        "reason": "refunded by hand, ticket 7",
    }


def test_retry_an_approved_action_that_failed(
    ns: str, kube: client.ApiClient, browser: Browser, console: Callable[[str], str], task_service: TaskService
) -> None:
    requests = Resources(kube, ns, "approvalrequests", "ApprovalRequest")
    fail = {"headers": [{"name": "X-Fail", "value": "always"}]}
    requests.create(
        "migrate",
        {
            "subject": {"title": "Migrate the orders table"},
            "approvers": {"users": ["alice"]},
            "timeout": "1h",
            "action": _http(task_service, "POST", "/deploy", **fail),
        },
    )
    requests.wait_status("migrate", lambda s: s.get("phase") == "Pending", "pending", timeout=60)
    browser.open(f"{console('alice')}/ns/{ns}/approvalrequests/migrate")
    browser.click("button[value=approve]")
    requests.wait_phase("migrate", "ActionFailed", timeout=60)
    browser.open(f"{console('alice')}/ns/{ns}/approvalrequests/migrate")
    assert "action failed" in browser.text("dl.facts")  # the reason the operator wrote
    browser.click("form.repair button[value=Retry]")
    browser.wait("return !!document.querySelector('.notice');", what="the retry's outcome")
    assert "Retry recorded for alice" in browser.text(".notice"), browser.text(".notice")


def test_a_schedule_and_the_runs_it_made(
    ns: str,
    kube: client.ApiClient,
    browser: Browser,
    console: Callable[[str], str],
    task_service: TaskService,
    shots: Path,
) -> None:
    """alice finds a schedule in the list and on its page its timing and its runs, each linked to its saga page;
    mallory, who may not read schedules, is refused in the API server's words."""
    run = {"task": {"id": "report"}, "steps": [{"name": "s", "action": _http(task_service, "POST", "/records")}]}
    schedules = Resources(kube, ns, "sagaschedules", "SagaSchedule")
    schedules.create(
        "nightly-report", {"schedule": "*/2 * * * * *", "concurrencyPolicy": "Forbid", "sagaTemplate": {"spec": run}}
    )
    objects = client.CustomObjectsApi(kube)

    def a_finished_run() -> str | None:
        listed = objects.list_namespaced_custom_object(
            GROUP, "v1alpha1", ns, "tasksagas", label_selector="steadfast.dev/schedule=nightly-report"
        )
        done = [i["metadata"]["name"] for i in listed["items"] if (i.get("status") or {}).get("phase") == "Succeeded"]
        return done[0] if done else None

    finished = eventually(a_finished_run, timeout=60, what="a run of the schedule Succeeded")

    browser.open(f"{console('alice')}/list?kind=sagaschedules&ns={ns}")
    listed = browser.text("main")
    assert "nightly-report" in listed and "*/2 * * * * *" in listed, listed
    _accessible(browser, "schedule list")

    browser.open(f"{console('alice')}/ns/{ns}/sagaschedules/nightly-report")
    assert "Ready" in browser.text("#schedule-state")
    runs = browser.text("#runs-h + table")
    assert finished in runs and "Succeeded" in runs, runs
    _accessible(browser, "schedule page")
    browser.screenshot(shots / "schedule.png")
    browser.click(f'#runs-h + table a[href$="/{finished}"]')
    browser.wait("return !!document.querySelector('#saga-phase');", what="the run's saga page")
    assert "Succeeded" in browser.text("#saga-phase")

    browser.open(f"{console('mallory')}/ns/{ns}/sagaschedules/nightly-report")
    assert "forbidden" in browser.text("main").lower()


def test_a_run_links_to_its_template_and_its_parameter_schema(
    ns: str,
    kube: client.ApiClient,
    browser: Browser,
    console: Callable[[str], str],
    task_service: TaskService,
    shots: Path,
) -> None:
    """From a templated run's page alice reaches its template: the typed parameters and how to name it. A
    ClusterSagaTemplate has its page at /cluster/ (seen here by the admin, who may read it)."""
    definition = {
        "description": "Open an account",
        "parameters": [
            {"name": "region", "enum": ["eu", "us"], "description": "Where the record is kept."},
            {"name": "seats", "type": "integer", "minimum": 1, "maximum": 5, "default": 1},
        ],
        "steps": [
            {"name": "record", "action": _http(task_service, "POST", "/records", body={"region": "$(params.region)"})}
        ],
    }
    Resources(kube, ns, "sagatemplates", "SagaTemplate").create("open-account", definition)
    sagas = Resources(kube, ns, "tasksagas", "TaskSaga")
    named = {"kind": "SagaTemplate", "name": "open-account"}
    sagas.create("acct-1", {"task": {"id": "acct-1"}, "template": named, "parameters": {"region": "eu"}})
    sagas.wait_phase("acct-1", "Succeeded")

    browser.open(f"{console('alice')}/ns/{ns}/tasksagas/acct-1")
    browser.click('a[href$="/sagatemplates/open-account"]')
    browser.wait("return !!document.querySelector('#params-h');", what="the template's page")
    params = browser.text("#params-h + table")
    assert "region" in params and "eu|us" in params and "1..5" in params, params
    assert "name: open-account" in browser.text("#use-h + pre")
    _accessible(browser, "template page")
    browser.screenshot(shots / "template.png")
    browser.open(f"{console('alice')}/list?kind=sagatemplates&ns={ns}")
    assert "open-account" in browser.text("main")
    _accessible(browser, "template list")

    name = f"offered-{ns}"
    objects = client.CustomObjectsApi(kube)
    body = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "ClusterSagaTemplate", "metadata": {"name": name}}
    objects.create_cluster_custom_object(GROUP, "v1alpha1", "clustersagatemplates", {**body, "spec": definition})
    try:
        browser.open(f"{console('admin')}/cluster/clustersagatemplates/{name}")
        assert "every namespace" in browser.text("dl.facts") and "eu|us" in browser.text("#params-h + table")
        browser.open(f"{console('admin')}/list?kind=clustersagatemplates")
        assert name in browser.text("main")
        browser.open(f"{console('mallory')}/cluster/clustersagatemplates/{name}")
        assert "forbidden" in browser.text("main").lower()
    finally:
        objects.delete_cluster_custom_object(GROUP, "v1alpha1", "clustersagatemplates", name)
