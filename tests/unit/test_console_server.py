"""The web console without a cluster: page rendering (escaping, forms, uptime), the request guards (Host,
same-origin and CSRF token on POSTs, security headers) and how each mode finds the viewer's credentials."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from kubernetes import client

from steadfast.api.kinds import TASK_SAGA
from steadfast.console import identity, kube, live, pages
from steadfast.console.cli import _hosts
from steadfast.console.kube import Identity, Page
from steadfast.console.server import CSP, Console


@pytest.fixture
def kubeconfig(tmp_path: Path) -> str:
    """A kubeconfig naming an API server that is never called (nothing listens on port 9)."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "the-consoles-own-token"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return str(path)


# ---- pages ---------------------------------------------------------------------------------------------------


def test_user_text_is_escaped_and_invisible_characters_shown() -> None:
    assert pages.esc('<script>alert("x")</script>') == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    assert pages.esc("evil\u202egpj.exe") == "evil\\u202egpj.exe"
    assert pages.esc("a' onmouseover='x") == "a&#x27; onmouseover=&#x27;x"


def _request(title: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "deploy", "annotations": {"steadfast.dev/requested-by": "bob"}},
        "spec": {"subject": {"title": title, "ticket": "<b>T-1</b>"}, "approvers": {"users": ["alice"]}},
        "status": {"phase": "Pending", "expiresAt": "2026-12-06T15:00:00+00:00"},
    }


def test_the_inbox_shows_a_subject_as_text_with_a_labelled_form_and_the_token() -> None:
    body = pages.inbox([_request("<img src=x onerror=alert(1)>")], [], "tok123", "ns")
    assert "<img" not in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    assert "&lt;b&gt;T-1&lt;/b&gt;" in body
    assert '<input type="hidden" name="csrf" value="tok123">' in body
    label = re.search(r'<label for="(reason-[^"]+)">', body)
    assert label and f'id="{label.group(1)}"' in body
    assert 'value="approve"' in body and 'value="reject"' in body


def test_the_layout_has_landmarks_one_h1_and_no_inline_script() -> None:
    page = pages.layout("Title <x>", "<p>body</p>", who=Identity("alice"), live="/live?kind=tasksagas")
    assert page.count("<h1>") == 1 and "<header>" in page and "<nav" in page and '<main id="main"' in page
    assert "Title &lt;x&gt;" in page and 'lang="en"' in page
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/console.js" defer>']
    assert "style=" not in page and "<style" not in page
    assert 'data-live="/live?kind=tasksagas"' in page


def test_repair_forms_only_where_the_phase_allows() -> None:
    assert pages.repair_forms("ns", "s", "Running", {}, "t") == ""
    paused = pages.repair_forms("ns", "s", "Paused", {}, "t")
    assert [b for b in ("Retry", "Skip", "Compensate", "Resolve") if f'value="{b}"' in paused] == [
        "Retry",
        "Skip",
        "Compensate",
    ]
    compensations = [
        {"step": "charge", "phase": "Failed"},
        {"step": "<b>", "phase": "Failed"},
        {"step": "ok", "phase": "Succeeded"},
    ]
    failed = pages.repair_forms("ns", "s", "CompensationFailed", {"compensations": compensations}, "t")
    assert 'value="Retry"' in failed and 'value="Resolve"' in failed and 'value="Skip"' not in failed
    assert re.findall(r'<option value="([^"]*)">', failed) == ["charge", "&lt;b&gt;"]
    assert '<label for="repair-step">' in failed and '<select id="repair-step" name="step">' in failed
    request = pages.repair_forms("ns", "r", "ActionFailed", {}, "t", plural="approvalrequests")
    assert 'action="/ns/ns/approvalrequests/r/repair"' in request and re.findall(
        r'name="action" value="(\w+)"', request
    ) == ["Retry"]


def test_a_saga_timeline_shows_steps_then_compensations_with_durations() -> None:
    saga = {
        "metadata": {"namespace": "ns", "name": "order-42"},
        "spec": {"task": {"id": "order-42"}},
        "status": {
            "phase": "Compensated",
            "steps": [
                {
                    "name": "charge",
                    "phase": "Succeeded",
                    "attempts": 1,
                    "startedAt": "2026-12-06T10:00:00+00:00",
                    "finishedAt": "2026-12-06T10:00:02.500000+00:00",
                    "outputs": {"id": "c-1"},
                },
                {"name": "ship", "phase": "Failed", "attempts": 3, "message": "HTTP 500 <from carrier>"},
            ],
            "compensations": [{"step": "charge", "phase": "Succeeded", "attempts": 1}],
        },
    }
    body = pages.saga(saga, [], "t")
    assert body.index("Step charge") < body.index("Step ship") < body.index("Compensation of charge")
    assert "took 2.5 s" in body and "attempts 3" in body and "HTTP 500 &lt;from carrier&gt;" in body
    assert "&quot;id&quot;: &quot;c-1&quot;" in body
    assert "Repair" not in body  # Compensated: nothing to repair
    assert "Template" not in body  # an inline saga


def test_a_graph_saga_from_a_template_shows_progress_dependencies_and_the_pinned_template() -> None:
    saga = {
        "metadata": {"namespace": "ns", "name": "onboard-44"},
        "spec": {"task": {"id": "44"}, "template": {"kind": "SagaTemplate", "name": "onboard"}},
        "status": {
            "phase": "Running",
            "progress": "2/4",
            "template": {"kind": "SagaTemplate", "name": "onboard", "generation": 3},
            "steps": [
                {"name": "reserve", "phase": "Succeeded", "dependsOn": []},
                {"name": "notify", "phase": "Running", "dependsOn": ["reserve"]},
                {"name": "dashboard", "phase": "Running", "dependsOn": ["reserve", "<b>"]},
            ],
        },
    }
    body = pages.saga(saga, [], "t")
    assert "<dd>2/4</dd>" in body
    assert 'SagaTemplate <a href="/ns/ns/sagatemplates/onboard">onboard</a> (generation 3;' in body
    assert "after reserve</p>" in body and "after reserve, &lt;b&gt;" in body


def test_uptime_over_the_transitions_the_api_server_keeps() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

    def at(minutes: int) -> str:
        return (now - timedelta(minutes=minutes)).isoformat()

    status = {"healthy": True, "lastTransitionTime": at(10)}
    events = [{"reason": "Healthy", "lastTimestamp": at(40)}, {"reason": "Unhealthy", "lastTimestamp": at(20)}]
    # healthy 40->20 and 10->0 minutes ago, unhealthy 20->10: 30 of 40 minutes
    assert pages.uptime(status, events, now).startswith("75.0% since")
    assert pages.uptime({"healthy": None}, [], now).startswith("unknown")


def test_list_page_links_the_next_page_with_the_filters() -> None:
    page = Page(items=[{"kind": "TaskSaga", "metadata": {"namespace": "a", "name": "s1"}}], next="tok", remaining=9)
    body = pages.listing("tasksagas", page, namespace="a", phase="Paused", selector="team=x")
    assert 'href="/list?kind=tasksagas&amp;ns=a&amp;phase=Paused&amp;selector=team%3Dx&amp;cont=tok"' in body
    every = pages.listing("tasksagas", page, namespace=None, phase=None, selector=None)
    assert 'href="/list?kind=tasksagas&amp;ns=&amp;cont=tok"' in every  # every namespace stays every namespace
    assert "(9 more)" in body and '<option value="Paused" selected>' in body


def _schedule(**spec: Any) -> dict[str, Any]:
    return {
        "kind": "SagaSchedule",
        "metadata": {"namespace": "ops", "name": "nightly", "annotations": {"steadfast.dev/requested-by": "dave"}},
        "spec": {"schedule": "0 2 * * *", "sagaTemplate": {"spec": {"steps": [{"name": "a"}]}}, **spec},
        "status": {
            "conditions": [{"type": "Ready", "status": "False", "reason": "RunRefused"}],
            "active": ["nightly-2"],
            "activeCount": 1,
            "runsCreated": 2,
            "missedRuns": 1,
            "lastProblem": "<b>no creator</b>",
        },
    }


def test_a_schedule_page_shows_its_timing_its_runs_and_why_it_is_not_ready() -> None:
    run = {
        "metadata": {"namespace": "ops", "name": "nightly-2", "creationTimestamp": "2026-12-06T02:00:00Z"},
        "status": {"phase": "Running"},
    }
    body = pages.schedule(_schedule(timeZone="Europe/Berlin", suspend=True), [run], [])
    assert "0 2 * * * (Europe/Berlin)" in body and "(suspended)" in body and "RunRefused" in body
    assert '<a href="/ns/ops/tasksagas/nightly-2">nightly-2</a>' in body and "1 inline step</dd>" in body
    assert "&lt;b&gt;no creator&lt;/b&gt;" in body and "<b>no creator" not in body  # a status is escaped too
    assert "2 created, 1 missed" in body and "dave" in body
    templated = _schedule(sagaTemplate={"spec": {"template": {"kind": "ClusterSagaTemplate", "name": "announce"}}})
    assert "template ClusterSagaTemplate announce" in pages.schedule(templated, [], [])


class _Paged:
    """An API client answering collection GETs from `items`, `size` a page (names ascending, as the API server)."""

    def __init__(self, items: list[dict[str, Any]], size: int) -> None:
        self.items, self.size, self.calls = items, size, 0

    def call_api(self, path: str, method: str, *, query_params: list[tuple[str, Any]], **_: Any) -> Any:
        self.calls += 1
        start = int(dict(query_params).get("continue") or 0)
        more = start + self.size < len(self.items)
        body = {
            "items": self.items[start : start + self.size],
            "metadata": {"continue": str(start + self.size) if more else ""},
        }
        return type("Response", (), {"data": json.dumps(body)})()


def test_a_schedules_page_shows_its_newest_runs_of_all_it_keeps() -> None:
    """The API server lists runs oldest first; the page reads every page and keeps the newest."""
    made = [
        {"metadata": {"name": f"nightly-{i:03}", "creationTimestamp": f"2026-12-06T00:{i // 60:02}:{i % 60:02}Z"}}
        for i in range(120)
    ]
    api = _Paged(made, size=50)
    shown, kept = kube.runs(cast(client.ApiClient, api), _schedule(), shown=5)
    assert kept == 120 and api.calls == 3
    assert [r["metadata"]["name"] for r in shown] == [f"nightly-{i:03}" for i in range(119, 114, -1)]
    assert "Runs kept (120, the newest 5 shown)" in pages.schedule(_schedule(), shown, [], kept)


def test_the_schedules_list_links_each_schedule_and_pages_without_a_phase() -> None:
    page = Page(items=[_schedule()], next="tok", remaining=None)
    body = pages.schedules(page, namespace="ops", selector=None)
    assert '<a href="/ns/ops/sagaschedules/nightly">nightly</a>' in body and "RunRefused" in body
    assert 'href="/list?kind=sagaschedules&amp;ns=ops&amp;cont=tok"' in body and 'name="phase"' not in body
    assert '<a href="/list?kind=sagaschedules">Schedules</a>' in pages.layout("x", "", who=None)


def _template(namespace: str | None) -> dict[str, Any]:
    params = [
        {"name": "region", "type": "string", "enum": ["eu", "us"], "description": "Where <b>it</b> runs"},
        {"name": "size", "type": "integer", "minimum": 1, "maximum": 9, "default": 3},
    ]
    steps = [{"name": "a", "action": {"http": {"url": "https://x/$(params.region)"}}}]
    steps.append({"name": "b", "dependsOn": ["a"], "action": {"http": {"url": "https://y"}}})
    return {
        "apiVersion": "steadfast.dev/v1alpha1",
        "kind": "SagaTemplate" if namespace else "ClusterSagaTemplate",
        "metadata": {"name": "onboard", "generation": 4, **({"namespace": namespace} if namespace else {})},
        "spec": {"description": "Onboard a team", "parameters": params, "steps": steps},
    }


def test_a_template_page_shows_the_parameter_schema_and_how_to_use_it() -> None:
    body = pages.template(_template("ops"), [])
    assert "<td>region</td><td>string</td><td>yes</td><td>-</td><td>eu|us</td>" in body
    assert "<td>size</td><td>integer</td><td>no</td><td>3</td><td>1..9</td>" in body
    assert "Where &lt;b&gt;it&lt;/b&gt; runs" in body and "<li>b · after a</li>" in body
    assert "    kind: SagaTemplate\n    name: onboard\n" in body and "region: &lt;string&gt;" in body
    usage = html.unescape(body.split("<pre>")[-1].split("</pre>")[0])
    assert "size:" not in usage  # only the required ones need a value
    saga = yaml.safe_load(usage)
    assert saga["kind"] == "TaskSaga" and saga["spec"]["parameters"] == {"region": "<string>"}
    saga["spec"]["parameters"]["region"] = "eu"
    TASK_SAGA.parse_spec(saga["spec"])  # what the page says to apply is a TaskSaga the model takes
    cluster = pages.template(_template(None), [])
    assert "every namespace" in cluster and "namespace:" not in cluster.split("Use it")[1]


def test_template_lists_link_namespaced_and_cluster_templates_where_they_live() -> None:
    page = Page(items=[_template("ops")], next=None, remaining=None)
    body = pages.templates("sagatemplates", page, namespace="ops", selector=None)
    assert '<a href="/ns/ops/sagatemplates/onboard">onboard</a>' in body and "region, size" in body
    assert "kind=clustersagatemplates" in body
    cluster = pages.templates(
        "clustersagatemplates", Page([_template(None)], None, None), namespace=None, selector=None
    )
    assert '<a href="/cluster/clustersagatemplates/onboard">onboard</a>' in cluster and 'id="ns"' not in cluster

    def run_of(kind: str, name: str) -> dict[str, Any]:
        return {"metadata": {"namespace": "ops", "name": "s"}, "status": {"template": {"kind": kind, "name": name}}}

    mine, offered = run_of("SagaTemplate", "onboard"), run_of("ClusterSagaTemplate", "announce")
    assert '<a href="/ns/ops/sagatemplates/onboard">onboard</a>' in pages.saga(mine, [], "t")
    assert '<a href="/cluster/clustersagatemplates/announce">announce</a>' in pages.saga(offered, [], "t")


def test_an_event_is_one_line_of_json_whatever_the_names_hold() -> None:
    event = live.sse("change", {"name": "a\n\nevent: x"})
    assert event.count(b"\n\n") == 1 and event.startswith(b"event: change\ndata: {")


# ---- credentials -----------------------------------------------------------------------------------------------


def test_token_mode_passes_the_viewers_token_and_never_its_own(kubeconfig: str) -> None:
    creds = identity.Credentials("token", kubeconfig=kubeconfig)
    with pytest.raises(identity.Unauthenticated):
        creds.viewer({}, "10.0.0.1")
    with pytest.raises(identity.Unauthenticated):
        creds.viewer({"authorization": "Basic eDp5"}, "10.0.0.1")
    alice = creds.viewer({"authorization": "Bearer alice-token"}, "10.0.0.1")
    assert alice.api.configuration.api_key == {"authorization": "Bearer alice-token"}
    assert alice.api.configuration.host == "https://127.0.0.1:9"
    bob = creds.viewer({"authorization": "Bearer bob-token"}, "10.0.0.1")
    assert bob.key != alice.key and "bob-token" not in bob.key
    assert creds.viewer({"authorization": "Bearer alice-token"}, "10.0.0.2").api is alice.api


def test_proxy_mode_trusts_identity_headers_only_from_the_proxy(kubeconfig: str) -> None:
    creds = identity.Credentials("proxy", kubeconfig=kubeconfig)
    claimed = {"x-forwarded-user": "admin", "x-forwarded-groups": "system:masters"}
    with pytest.raises(identity.Untrusted):
        creds.viewer(claimed, "10.1.2.3")
    with pytest.raises(identity.Untrusted):
        creds.viewer(claimed, None)
    with pytest.raises(identity.Unauthenticated):
        creds.viewer({}, "127.0.0.1")
    for forged in (
        {"x-forwarded-user": "system:admin"},
        {"x-forwarded-user": "eve", "x-forwarded-groups": "system:masters"},
    ):
        with pytest.raises(identity.Untrusted, match="Kubernetes' own identities"):
            creds.viewer(forged, "127.0.0.1")
    viewer = creds.viewer({"x-forwarded-user": "alice", "x-forwarded-groups": "sre, approvers"}, "127.0.0.1")
    assert viewer.key.startswith("proxy:") and "alice" not in viewer.key
    sent: list[Any] = []

    def record(method: str, url: str, *args: Any, headers: Any = None, **kw: Any) -> None:
        sent.append(headers)

    fresh = client.ApiClient(client.Configuration())
    fresh.rest_client.pool_manager.request = record
    identity._impersonating(fresh, "alice", ["approvers", "sre"])
    fresh.rest_client.pool_manager.request("GET", "https://x/", headers={"Accept": "application/json"})
    headers = sent[0]
    assert headers["Impersonate-User"] == "alice"
    assert headers.getlist("Impersonate-Group") == ["approvers", "sre"]


def test_kubeconfig_mode_serves_only_its_own_address() -> None:
    hosts = _hosts("127.0.0.1:8090", "kubeconfig", None)
    assert "127.0.0.1:8090" in hosts and "localhost:8090" in hosts and "evil.example:8090" not in hosts
    assert _hosts("0.0.0.0:8090", "token", None) == frozenset()


# ---- guards ------------------------------------------------------------------------------------------------


def _serve(console: Console, check: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with TestClient(TestServer(console.app())) as http:
            await check(http)

    asyncio.run(main())


def test_every_answer_carries_the_security_headers_and_401_asks_for_a_token(kubeconfig: str) -> None:
    console = Console(identity.Credentials("token", kubeconfig=kubeconfig))

    async def check(http: TestClient[Any, Any]) -> None:
        answer = await http.get("/")
        assert answer.status == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert answer.headers["Content-Security-Policy"] == CSP and "script-src 'self'" in CSP
        assert "'unsafe-inline'" not in CSP and "frame-ancestors 'none'" in CSP
        assert answer.headers["X-Frame-Options"] == "DENY"
        script = await http.get("/static/console.js")
        assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
        assert (await http.get("/static/../identity.py")).status == 404

    _serve(console, check)


def test_a_post_needs_the_same_origin_and_the_viewers_token(kubeconfig: str) -> None:
    console = Console(identity.Credentials("token", kubeconfig=kubeconfig))
    auth = {"Authorization": "Bearer alice-token"}
    token = console.csrf(console.credentials.viewer({"authorization": "Bearer alice-token"}, None))
    other = console.csrf(console.credentials.viewer({"authorization": "Bearer bob-token"}, None))
    url = "/ns/ns/approvalrequests/deploy/decide"

    async def check(http: TestClient[Any, Any]) -> None:
        origin = f"http://{http.host}:{http.port}"
        form = {"verdict": "approve", "csrf": token}
        cases = [
            ({**auth}, form, "cross-origin"),
            ({**auth, "Origin": "https://evil.example"}, form, "cross-origin"),
            ({**auth, "Origin": origin}, {**form, "csrf": ""}, "CSRF"),
            ({**auth, "Origin": origin}, {**form, "csrf": other}, "CSRF"),  # bob's token is worthless to alice
        ]
        for headers, data, why in cases:
            answer = await http.post(url, headers=headers, data=data)
            assert answer.status == 403 and why in await answer.text(), (headers, data)

    _serve(console, check)


def test_only_sagas_and_requests_take_repair_decisions(kubeconfig: str) -> None:
    """A repair POST naming a schedule or a monitor is refused by the console before anything reaches the API."""
    console = Console(identity.Credentials("token", kubeconfig=kubeconfig))
    auth = {"Authorization": "Bearer alice-token"}
    token = console.csrf(console.credentials.viewer({"authorization": "Bearer alice-token"}, None))

    async def check(http: TestClient[Any, Any]) -> None:
        origin = f"http://{http.host}:{http.port}"
        for plural in ("sagaschedules", "healthmonitors"):
            answer = await http.post(
                f"/ns/ns/{plural}/x/repair",
                headers={**auth, "Origin": origin},
                data={"action": "Retry", "csrf": token},
            )
            assert answer.status == 404 and "only TaskSagas and ApprovalRequests" in await answer.text(), plural

    _serve(console, check)


def test_a_kinds_page_is_found_only_at_its_scope(kubeconfig: str) -> None:
    """/cluster/ serves cluster-scoped kinds and /ns/ namespaced ones; the other way is 404 before any API call."""
    console = Console(identity.Credentials("token", kubeconfig=kubeconfig))

    async def check(http: TestClient[Any, Any]) -> None:
        auth = {"Authorization": "Bearer alice-token"}
        for path in ("/cluster/tasksagas/x", "/ns/a/clustersagatemplates/x", "/cluster/sagatemplates/x"):
            answer = await http.get(path, headers=auth)
            text = await answer.text()
            assert answer.status == 404 and ("cluster-scoped" in text or "is namespaced" in text), (path, text)

    _serve(console, check)


def test_a_rebound_host_is_refused_before_anything_else(kubeconfig: str) -> None:
    console = Console(identity.Credentials("token", kubeconfig=kubeconfig), allowed_hosts=frozenset({"127.0.0.1:1"}))

    async def check(http: TestClient[Any, Any]) -> None:
        answer = await http.get("/", headers={"Host": "attacker.example:8090"})
        assert answer.status == 421 and answer.headers["X-Frame-Options"] == "DENY"

    _serve(console, check)


def test_live_pages_per_viewer_are_bounded(kubeconfig: str) -> None:
    console = Console(identity.Credentials("token", kubeconfig=kubeconfig))
    console.max_streams_per_viewer = 0

    async def check(http: TestClient[Any, Any]) -> None:
        answer = await http.get("/live?kind=tasksagas", headers={"Authorization": "Bearer alice-token"})
        assert answer.status == 429 and "too many live pages" in await answer.text()

    _serve(console, check)
