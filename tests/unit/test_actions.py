"""Actions: the idempotency key every request carries; placeholders, conditions and outputs over HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from steadfast.actions import ActionRunner, idempotency_key
from steadfast.api.action import Action
from steadfast.egress import EgressPolicy
from steadfast.expressions.sandbox import Sandbox


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


def test_echoed_secret_values_never_reach_outputs(
    service: str, runner: ActionRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "_header_value", lambda namespace, secret, key: "Bearer s3cr3t-t0ken")
    action = _action(
        url=service + "/x",
        headers=[{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "token", "key": "t"}}}],
    )
    outcome = runner.run(action, namespace="a", key="k7", outputs={"auth": "response.body.echo.auth"})
    assert outcome.ok
    assert outcome.outputs == {"auth": "[redacted]"}
    assert _Service.seen[-1]["auth"] == "Bearer s3cr3t-t0ken"  # the service itself got the value


def test_a_placeholder_that_fails_stops_the_request_before_it_is_sent(service: str, runner: ActionRunner) -> None:
    before = len(_Service.seen)
    outcome = runner.run(
        _action(url=service + "/records/$(outputs.recordId)"), namespace="a", key="k8", variables={"outputs": {}}
    )
    assert not outcome.ok
    assert outcome.message.startswith("cannot render the request: $(outputs.recordId):")
    assert len(_Service.seen) == before
