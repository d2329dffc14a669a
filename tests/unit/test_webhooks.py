"""The saga's admission rules and the webhook server's certificate (approval admission: test_approval_admission)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509

from steadfast.api.kinds import REQUESTED_BY, REQUESTED_GROUPS, SEAL
from steadfast.api.monitor import HealthMonitorSpec
from steadfast.api.saga import TaskSagaSpec
from steadfast.identity import User
from steadfast.webhooks import check_expressions, check_saga, make_certificate, saga_stamps

OPERATOR = "system:serviceaccount:steadfast:operator"
DAVE = User("dave", frozenset({"sre"}))
MALLORY = User("mallory")


def test_saga_creator_is_stamped_and_kept() -> None:
    new = {"kind": "TaskSaga", "metadata": {"name": "s"}, "spec": {}}
    stamps = saga_stamps("CREATE", DAVE, new, namespace="team-a")
    assert (stamps[REQUESTED_BY], stamps[REQUESTED_GROUPS]) == ("dave", '["sre"]') and stamps[SEAL]
    erin = saga_stamps("CREATE", User("erin", frozenset({"b", "a"})), new, namespace="team-a")
    assert erin[REQUESTED_GROUPS] == '["a","b"]'
    assert saga_stamps("UPDATE", DAVE, new, namespace="team-a") == {}
    created = {"metadata": {"annotations": stamps}}
    assert check_saga("CREATE", DAVE, None, created) is None
    assert "authenticated creator 'mallory'" in (check_saga("CREATE", MALLORY, None, created) or "")
    changed = {"metadata": {"annotations": {**stamps, REQUESTED_BY: "mallory"}}}
    assert check_saga("UPDATE", MALLORY, created, changed) is not None
    more_groups = {"metadata": {"annotations": {**stamps, REQUESTED_GROUPS: '["sre","system:masters"]'}}}
    assert REQUESTED_GROUPS in (check_saga("UPDATE", DAVE, created, more_groups) or "")
    resealed = {"metadata": {"annotations": {**stamps, SEAL: "x.y"}}}
    assert SEAL in (check_saga("UPDATE", DAVE, created, resealed) or "")
    assert check_saga("UPDATE", User(OPERATOR), created, created) is None


def test_certificate_serves_loopback_and_chains_to_its_ca(tmp_path: Path) -> None:
    cert_path, key_path, ca_path = make_certificate(tmp_path, ["127.0.0.1"])
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    ca = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    cert.verify_directly_issued_by(ca)
    assert oct(Path(key_path).stat().st_mode & 0o777) == "0o600"


def _saga(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"task": {"id": "t-1"}, "steps": list(steps)}}


def _step(name: str, url: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "action": {"http": {"url": url}}, **more}


def test_expressions_are_compiled_at_admission_naming_field_and_position() -> None:
    good = _saga(
        _step("create", "http://tasks/records", outputs={"recordId": "response.body.id"}),
        _step(
            "notify",
            "http://tasks/notify/$(outputs.recordId)",
            compensation={"http": {"url": "http://tasks/records/$(outputs.recordId)", "method": "DELETE"}},
        ),
    )
    assert check_expressions(TaskSagaSpec, good) is None
    typo = _saga(_step("create", "http://tasks/records/$(tsak.id)"))
    problem = check_expressions(TaskSagaSpec, typo) or ""
    assert problem.startswith("spec.steps[0].action.http.url: $(tsak.id) at offset 21: 1:")
    assert "undeclared reference to 'tsak.id'" in problem
    syntax = _saga(_step("create", "http://tasks/r", outputs={"id": "response.body.id +"}))
    assert (check_expressions(TaskSagaSpec, syntax) or "").startswith("spec.steps[0].outputs.id: 1:19: Syntax error")


def test_outputs_must_come_from_an_earlier_step_and_names_are_unique() -> None:
    forward = _saga(
        _step("a", "http://tasks/$(outputs.later)"),
        _step("b", "http://tasks/b", outputs={"later": "response.body.id"}),
    )
    assert "spec.steps[0].action: outputs.later is not an earlier step's output" in (
        check_expressions(TaskSagaSpec, forward) or ""
    )
    own = _saga(
        _step(
            "a",
            "http://tasks/a",
            outputs={"id": "response.body.id"},
            compensation={"http": {"url": "http://tasks/a/$(outputs.id)"}},
        )
    )
    assert check_expressions(TaskSagaSpec, own) is None  # a compensation may use its own step's outputs
    twice = _saga(
        _step("a", "http://tasks/a", outputs={"id": "response.body.id"}),
        _step("b", "http://tasks/b", outputs={"id": "response.body.id"}),
    )
    assert "step a already declares output id" in (check_expressions(TaskSagaSpec, twice) or "")


def test_monitor_conditions_are_compiled_and_other_problems_left_to_the_schema() -> None:
    monitor = {"spec": {"target": {"http": {"url": "http://svc/h"}}, "conditions": ["response.bdy.status == 1"]}}
    assert "spec.conditions[0]: 1:" in (check_expressions(HealthMonitorSpec, monitor) or "")
    schema_problem = {"spec": {"target": {"http": {"url": "not a url"}}}}
    assert check_expressions(HealthMonitorSpec, schema_problem) is None
