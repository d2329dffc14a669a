"""Actions: the idempotency key every request carries; placeholders, conditions and outputs over HTTP; Secrets."""

from __future__ import annotations

import base64
import ipaddress
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from kubernetes import client

from steadfast.actions import ActionRunner, idempotency_key
from steadfast.api.action import Action
from steadfast.cluster_view import ClusterWatch
from steadfast.egress import EgressPolicy
from steadfast.egress_rules import ClusterView
from steadfast.expressions.sandbox import Sandbox
from steadfast.secret_refs import REFERABLE_LABEL, SEND_TO, StoredSecret


def test_idempotency_key_is_stable_and_distinct() -> None:
    key = idempotency_key("uid-1", "step-a", "action")
    assert key == idempotency_key("uid-1", "step-a", "action")
    assert key != idempotency_key("uid-1", "step-a", "compensation")
    assert key != idempotency_key("uid-2", "step-a", "action")


# ---- requests rendered from variables, responses read by conditions and outputs (a real loopback server) ----


class _Service(BaseHTTPRequestHandler):
    """Answers every request with JSON: what it received, plus the fields a test asks for."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        got = {
            "path": self.path,
            "body": body,
            "auth": self.headers.get("Authorization"),
            "x": self.headers.get("X-Id"),
        }
        _Service.seen.append(got)
        status = 418 if self.path.startswith("/teapot") else 200
        payload = json.dumps({"id": "rec-42", "status": "DEGRADED", "echo": got, "big": "z" * 9000}).encode()
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/stolen")
        elif self.path.startswith("/reason"):  # the reason phrase carries the Authorization header, encoded
            self.send_response(401, base64.b64encode(str(got["auth"]).encode()).decode())
        else:
            self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def runner() -> Iterator[ActionRunner]:
    box = Sandbox(children=1, deadline=10.0)
    yield ActionRunner(None, EgressPolicy.parse(allow=["127.0.0.0/8"]), sandbox=box)
    box.close()


def _action(**http: Any) -> Action:
    return Action.model_validate({"http": http})


def test_placeholders_fill_url_headers_and_body_and_outputs_come_back(service: str, runner: ActionRunner) -> None:
    action = _action(
        method="POST",
        url=service + "/records/$(task.id)",
        headers=[{"name": "X-Id", "value": "$(outputs.paymentId)"}],
        body={"amount": "$(outputs.amount)", "note": "for $(task.id)", "$(task.id)": True, "literal": "$$(x)"},
    )
    outcome = runner.run(
        action,
        namespace="team-a",
        key="k1",
        variables={"task": {"id": "t/1"}, "outputs": {"paymentId": "p-9", "amount": 12.5}},
        outputs={"recordId": "response.body.id", "sawAmount": "response.body.echo.body.amount"},
    )
    assert outcome.ok, outcome.message
    sent = _Service.seen[-1]
    assert sent["path"] == "/records/t%2F1"  # a value cannot add a path segment
    assert sent["x"] == "p-9"
    assert sent["body"] == {"amount": 12.5, "note": "for t/1", "t/1": True, "literal": "$(x)"}
    assert outcome.outputs == {"recordId": "rec-42", "sawAmount": 12.5}


def test_failed_success_condition_shows_the_value_not_the_body(service: str, runner: ActionRunner) -> None:
    outcome = runner.run(
        _action(url=service + "/health", successWhen='response.body.status == "UP"'), namespace="a", key="k2"
    )
    assert not outcome.ok
    assert outcome.failed_condition == 'response.body.status == "UP" (was "DEGRADED")'
    assert "rec-42" not in outcome.message and "zzzz" not in outcome.message


def test_monitor_conditions_must_all_hold(service: str, runner: ActionRunner) -> None:
    ok = runner.run(
        _action(url=service + "/health"), namespace="a", key="k3", conditions=["response.durationMs < 60000"]
    )
    assert ok.ok and ok.failed_condition is None
    slow = runner.run(
        _action(url=service + "/health"),
        namespace="a",
        key="k3",
        conditions=["response.status == 200", "response.durationMs < 0"],
    )
    assert not slow.ok
    assert slow.failed_condition is not None and slow.failed_condition.startswith("response.durationMs < 0 (was ")


def test_an_unexpected_status_reports_code_and_reason_never_the_body(service: str, runner: ActionRunner) -> None:
    outcome = runner.run(_action(url=service + "/teapot"), namespace="a", key="k4")
    assert not outcome.ok and outcome.status_code == 418
    assert outcome.message.endswith(": HTTP 418 I'm a Teapot")
    accepted = runner.run(_action(url=service + "/teapot", expectedStatus=[418]), namespace="a", key="k4")
    assert accepted.ok and "rec-42" not in accepted.message and "DEGRADED" not in accepted.message


def test_outputs_over_8_kib_fail_the_attempt(service: str, runner: ActionRunner) -> None:
    outcome = runner.run(_action(url=service + "/x"), namespace="a", key="k5", outputs={"all": "response.body"})
    assert not outcome.ok
    assert "more than the 8192 allowed" in outcome.message
    assert outcome.outputs is None


def test_an_output_the_response_lacks_fails_with_its_name(service: str, runner: ActionRunner) -> None:
    outcome = runner.run(_action(url=service + "/x"), namespace="a", key="k6", outputs={"pid": "response.body.pid"})
    assert not outcome.ok and "output pid:" in outcome.message


# ---- Secrets: sent only where their writer allows, and nothing of the answer comes back but status ----------

TOKEN = "Bearer s3cr3t-t0ken"


def _secret(annotations: dict[str, str] | None = None, *, referable: bool = True) -> StoredSecret:
    labels = {REFERABLE_LABEL: "true"} if referable else {}
    data = {"t": base64.b64encode(TOKEN.encode()).decode()}
    return StoredSecret("team-a", "token", labels, annotations or {}, data)


class _Cluster(ClusterWatch):
    """A cluster whose Services the test names."""

    def __init__(self, services: dict[str, tuple[str, str]]) -> None:
        super().__init__(client.ApiClient)
        self._view = ClusterView({ipaddress.ip_address(ip): s for ip, s in services.items()}, {}, [])

    def view(self, timeout: float = 10.0) -> ClusterView | None:
        return self._view


def _secret_runner(secret: StoredSecret, services: dict[str, tuple[str, str]] | None = None) -> ActionRunner:
    box = Sandbox(children=1, deadline=10.0)
    return ActionRunner(
        None,
        EgressPolicy.parse(allow=["127.0.0.0/8"]),
        sandbox=box,
        cluster=_Cluster(services) if services is not None else None,
        secrets=lambda namespace, name: secret,
    )


def _with_token(url: str, **http: Any) -> Action:
    header = {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "token", "key": "t"}}}
    return _action(url=url, headers=[header], **http)


def test_a_secret_goes_where_its_send_to_allows_and_only_the_status_comes_back(service: str) -> None:
    port = service.rsplit(":", 1)[1]
    before = len(_Service.seen)
    for elsewhere in ("127.0.0.1:1", "https://127.0.0.1", "*.svc, localhost", ""):
        runner = _secret_runner(_secret({SEND_TO: elsewhere}))
        refused = runner.run(_with_token(service + "/x"), namespace="team-a", key="s1")
        assert not refused.ok and f"may not be sent to http://127.0.0.1:{port}" in refused.message
    assert len(_Service.seen) == before
    runner = _secret_runner(_secret({SEND_TO: f"example.com, http://127.0.0.1:{port}"}))
    before = len(_Service.seen)
    outcome = runner.run(
        _with_token(service + "/x", successWhen="response.status == 200"),
        namespace="team-a",
        key="s1",
        outputs={"code": "response.status", "took": "response.durationMs"},
    )
    assert outcome.ok, outcome.message
    assert outcome.outputs is not None and outcome.outputs["code"] == 200
    assert _Service.seen[-1]["auth"] == TOKEN and len(_Service.seen) == before + 1  # the service got it
    # Conditions and outputs that read more were refused at admission; at run time the body is not there.
    echoed = runner.run(
        _with_token(service + "/x"), namespace="team-a", key="s1", outputs={"auth": "string(bytes(response.body))"}
    )
    assert not echoed.ok and "output auth:" in echoed.message
    assert "s3cr3t" not in echoed.message and "czNjcjN0" not in echoed.message


def test_without_send_to_a_secret_goes_only_to_its_namespaces_services(service: str) -> None:
    before = len(_Service.seen)
    nowhere = _secret_runner(_secret()).run(_with_token(service + "/x"), namespace="team-a", key="s2")
    assert not nowhere.ok and "does not know the cluster's Services" in nowhere.message
    other = _secret_runner(_secret(), {"10.96.0.9": ("team-a", "notify")})  # 127.0.0.1 is no Service
    refused = other.run(_with_token(service + "/x"), namespace="team-a", key="s2")
    assert not refused.ok
    assert "goes only to Services of its own namespace (team-a)" in refused.message
    assert len(_Service.seen) == before  # nothing was sent
    own = _secret_runner(_secret(), {"127.0.0.1": ("team-a", "notify")})
    assert own.run(_with_token(service + "/x"), namespace="team-a", key="s2").ok
    assert _Service.seen[-1]["auth"] == TOKEN


def test_an_unlabelled_secret_is_never_sent(service: str) -> None:
    runner = _secret_runner(_secret({SEND_TO: "*"}, referable=False))
    before = len(_Service.seen)
    outcome = runner.run(_with_token(service + "/x"), namespace="team-a", key="s3")
    assert not outcome.ok and "is not referable" in outcome.message and len(_Service.seen) == before


def test_a_redirect_is_not_followed_with_the_secret(service: str) -> None:
    runner = _secret_runner(_secret({SEND_TO: "127.0.0.1"}))
    before = len(_Service.seen)
    outcome = runner.run(_with_token(service + "/redirect"), namespace="team-a", key="s4")
    assert not outcome.ok and outcome.status_code == 302
    assert [s["path"] for s in _Service.seen[before:]] == ["/redirect"]  # /stolen was never asked


def test_a_sealed_answer_shows_no_text_of_the_server(service: str) -> None:
    runner = _secret_runner(_secret({SEND_TO: "127.0.0.1"}))
    outcome = runner.run(_with_token(service + "/reason"), namespace="team-a", key="s5")
    assert not outcome.ok and outcome.message.endswith(": HTTP 401"), outcome.message
    plain = runner.run(_action(url=service + "/reason"), namespace="team-a", key="s5")
    assert plain.message.endswith(": HTTP 401 " + base64.b64encode(b"None").decode())  # unsealed: the reason


def test_a_placeholder_that_fails_stops_the_request_before_it_is_sent(service: str, runner: ActionRunner) -> None:
    before = len(_Service.seen)
    outcome = runner.run(
        _action(url=service + "/records/$(outputs.recordId)"), namespace="a", key="k8", variables={"outputs": {}}
    )
    assert not outcome.ok
    assert outcome.message.startswith("cannot render the request: $(outputs.recordId):")
    assert len(_Service.seen) == before
