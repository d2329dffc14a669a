"""Secrets: where a referable Secret may be sent (`send-to`), and what may be read of a response to a request
that carried one (only its status and duration, checked on the expression's tree at admission)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from steadfast.api import ApprovalRequestSpec, HealthMonitorSpec, TaskSagaSpec, describe
from steadfast.egress_rules import ClusterView
from steadfast.expressions.language import TASK, responding
from steadfast.expressions.reads import reads
from steadfast.secret_refs import REFERABLE_LABEL, SEND_TO, Allowed, Destination, StoredSecret, refusal

# ---- what an expression reads of `response`, from its tree --------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "seen"),
    [
        ("response.status == 200", ["response.status"]),
        ("response.durationMs < 300 && response.status < 500", ["response.durationMs", "response.status"]),
        ("task.id == 'x'", []),
        ('"response.body" == task.id', []),  # in a string: not a read
        ("size(response.body) > 3", ["response.body"]),
        ('response.body.matches("^Bearer s")', ["response.body"]),
        ("string(bytes(response.headers['x-echo']))", ["response.headers"]),
        ('response["body"] == 1', ["response other than by a field"]),
        (".response.body == 1", ["response.body"]),  # root-scoped name
        ("response // a comment\n  .body == 1", ["response.body"]),
        ("has(response.body)", ["response.body"]),
        ("[response.body].exists(x, x == 1)", ["response.body"]),
        ('{"k": response.body}.k == 1', ["response.body"]),
        ("size(response) > 0", ["response other than by a field"]),
        ("[1].exists(response, response > 0)", ["response other than by a field"]),  # a local of that name counts
    ],
)
def test_reads_come_from_the_tree_not_the_text(source: str, seen: list[str]) -> None:
    found = sorted({r.describe("response") for r in reads(source, responding(TASK), "response")})
    assert found == sorted(set(seen))


# ---- admission: a response to a request with a Secret may be read only as status and duration --------------------

SECRET_HEADER = [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "notify", "key": "token"}}}]
URL = "http://notify.team-a.svc/send"


def _errors(model: type[BaseModel], raw: Any) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(raw)
    return "\n".join(describe(info.value))


def _saga(action: dict[str, Any], **step: Any) -> dict[str, Any]:
    return {"task": {"id": "1"}, "steps": [{"name": "send", "action": {"http": action}, **step}]}


@pytest.mark.parametrize(
    "output",
    [
        "string(bytes(response.body))",
        'response.body.echo.matches("^Bearer a")',
        "size(response.headers['x-echo'])",
        "response",
    ],
)
def test_outputs_over_a_secret_bearing_response_are_refused_naming_the_field(output: str) -> None:
    text = _errors(TaskSagaSpec, _saga({"url": URL, "headers": SECRET_HEADER}, outputs={"leak": output}))
    assert "spec.steps[0].outputs.leak: reads response" in text
    assert "header Authorization from Secret notify" in text
    assert "only as response.status and response.durationMs" in text


def test_status_and_duration_of_a_secret_bearing_response_stay_usable() -> None:
    spec = _saga(
        {"url": URL, "headers": SECRET_HEADER, "successWhen": "response.status in [200, 202]"},
        outputs={"code": "response.status", "took": "response.durationMs"},
    )
    TaskSagaSpec.model_validate(spec)
    # Without a Secret the whole response is readable, as before.
    TaskSagaSpec.model_validate(_saga({"url": URL, "successWhen": "response.body.ok"}, outputs={"b": "response.body"}))


def test_every_place_a_secret_is_sent_is_sealed() -> None:
    leak = {"url": URL, "headers": SECRET_HEADER, "successWhen": 'response.body.token.startsWith("a")'}
    sealed = "reads response.body, but the request carries a Secret"
    saga = _saga({"url": URL}, compensation={"http": leak})
    assert f"spec.steps[0].compensation.http.successWhen: {sealed}" in _errors(TaskSagaSpec, saga)
    assert f"spec.steps[0].action.http.successWhen: {sealed}" in _errors(TaskSagaSpec, _saga(leak))
    monitor = {"target": {"http": {"url": URL, "headers": SECRET_HEADER}}, "conditions": ["size(response.body) > 9"]}
    assert f"spec.conditions[0]: {sealed}" in _errors(HealthMonitorSpec, monitor)
    webhook = {"target": {"http": {"url": URL}}, "alert": {"webhook": {"http": leak}}}
    assert f"spec.alert.webhook.http.successWhen: {sealed}" in _errors(HealthMonitorSpec, webhook)
    for field in ("notify", "action"):
        request = {"subject": {"title": "t"}, "approvers": {"users": ["ann"]}, field: {"http": leak}}
        assert f"spec.{field}.http.successWhen: {sealed}" in _errors(ApprovalRequestSpec, request)


# ---- send-to ----------------------------------------------------------------------------------------------------


def _to(url_host: str, port: int = 80, address: str = "203.0.113.7", scheme: str = "http") -> Destination:
    return Destination(scheme, url_host, port, ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("entry", "allowed", "refused"),
    [
        ("hooks.example.com", [_to("hooks.example.com"), _to("hooks.example.com", 8443)], [_to("example.com")]),
        ("*.example.com", [_to("a.example.com"), _to("a.b.example.com")], [_to("example.com"), _to("xexample.com")]),
        ("https://api.example.com", [_to("api.example.com", 443, scheme="https")], [_to("api.example.com")]),
        ("api.example.com:8080", [_to("api.example.com", 8080)], [_to("api.example.com")]),
        ("10.0.0.7", [_to("anything.example", address="10.0.0.7")], [_to("10.0.0.8", address="10.0.0.8")]),
        ("[fd00::7]:80", [_to("x", address="fd00::7")], [_to("x", 81, address="fd00::7")]),
        ("HOOKS.Example.com.", [_to("hooks.example.com")], []),
        ("*", [_to("anywhere.example")], []),
    ],
)
def test_send_to_entries(entry: str, allowed: list[Destination], refused: list[Destination]) -> None:
    rule = Allowed.parse(entry)
    assert all(rule.matches(to) for to in allowed)
    assert not any(rule.matches(to) for to in refused)


@pytest.mark.parametrize("entry", ["http://a.com/path", "ftp://a.com", "a.com:99999", "user@a.com", "*a.com", "a..b"])
def test_unreadable_send_to_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match=r"is not|outside"):
        Allowed.parse(entry)


def _secret(**annotations: str) -> StoredSecret:
    return StoredSecret("team-a", "notify", {REFERABLE_LABEL: "true"}, annotations, {"token": "czNjcjN0"})


def test_send_to_lists_are_separated_by_commas_or_spaces_and_fail_closed() -> None:
    secret = _secret(**{SEND_TO: "hooks.example.com,  *.team-a.svc\n127.0.0.1:8089"})
    assert refusal(secret, _to("notify.team-a.svc"), None) is None
    assert refusal(secret, _to("127.0.0.1", 8089, "127.0.0.1"), None) is None
    elsewhere = refusal(secret, _to("evil.example"), None)
    assert elsewhere is not None and "allows only hooks.example.com, *.team-a.svc, 127.0.0.1:8089" in elsewhere
    broken = refusal(_secret(**{SEND_TO: "hooks.example.com, ftp://x"}), _to("hooks.example.com"), None)
    assert broken is not None and "annotation cannot be read" in broken
    nowhere = refusal(_secret(**{SEND_TO: " "}), _to("hooks.example.com"), None)
    assert nowhere is not None and "allows only nothing" in nowhere


def test_the_default_is_a_service_of_the_secrets_namespace_by_address() -> None:
    view = ClusterView(
        {ipaddress.ip_address("10.96.0.10"): ("team-a", "notify"), ipaddress.ip_address("10.96.0.11"): ("b", "x")},
        {},
        [],
    )
    assert refusal(_secret(), _to("notify.team-a.svc", address="10.96.0.10"), view) is None
    # The name does not decide: a look-alike name resolving elsewhere, or another namespace's Service, is refused.
    for to in (_to("notify.team-a.svc", address="203.0.113.7"), _to("x.b.svc", address="10.96.0.11")):
        reason = refusal(_secret(), to, view)
        assert reason is not None and "goes only to Services of its own namespace (team-a)" in reason
    unlabelled = StoredSecret("team-a", "notify", {}, {SEND_TO: "*"}, {})
    assert "is not referable" in (refusal(unlabelled, _to("a.b"), view) or "")


def test_a_value_that_cannot_be_a_header_is_refused_without_quoting_it() -> None:
    bad = StoredSecret("team-a", "notify", data={"a": "c2VjcmV0CngtaW5qZWN0ZWQ6IDE=", "b": "/w=="})  # "secret\n..."
    for key, why in (("a", "line break"), ("b", "not UTF-8"), ("c", "has no key")):
        with pytest.raises(ValueError, match=why) as caught:
            bad.header_value(key)
        assert "secret" not in str(caught.value).replace("Secret", "")
    assert _secret().header_value("token") == "s3cr3t"
