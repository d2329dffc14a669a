"""The saga's admission rules and the webhook server's certificate (approval admission: test_approval_admission)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from pydantic import ValidationError

from steadfast import persistence
from steadfast.api.errors import invalid_spec
from steadfast.api.kinds import (
    APPROVAL_REQUEST,
    HEALTH_MONITOR,
    KINDS,
    REQUESTED_BY,
    REQUESTED_GROUPS,
    SEAL,
    TASK_SAGA,
    Kind,
)
from steadfast.identity import User
from steadfast.webhooks import check_saga, check_spec, make_certificate, saga_stamps

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
    # A templated saga's values: typed free JSON to the CRD, kept fixed here.
    given = {**created, "spec": {"parameters": {"region": "eu"}}}
    other = {**created, "spec": {"parameters": {"region": "us"}}}
    assert check_saga("UPDATE", DAVE, given, other) == "spec.parameters is immutable once the TaskSaga is created"
    assert check_saga("UPDATE", DAVE, given, given) is None


def test_certificate_serves_loopback_and_chains_to_its_ca(tmp_path: Path) -> None:
    cert_path, key_path, ca_path = make_certificate(tmp_path, ["127.0.0.1"])
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    ca = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    cert.verify_directly_issued_by(ca)
    assert oct(Path(key_path).stat().st_mode & 0o777) == "0o600"


def check_saga_spec(obj: Mapping[str, Any]) -> str | None:
    return check_spec(TASK_SAGA, "CREATE", None, obj)


def check_monitor_spec(obj: Mapping[str, Any]) -> str | None:
    return check_spec(HEALTH_MONITOR, "CREATE", None, obj)


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
    assert check_saga_spec(good) is None
    typo = _saga(_step("create", "http://tasks/records/$(tsak.id)"))
    problem = check_saga_spec(typo) or ""
    assert problem.startswith("spec.steps[0].action.http.url: $(tsak.id) at offset 21: 1:")
    assert "undeclared reference to 'tsak.id'" in problem
    syntax = _saga(_step("create", "http://tasks/r", outputs={"id": "response.body.id +"}))
    assert (check_saga_spec(syntax) or "").startswith("spec.steps[0].outputs.id: 1:19: Syntax error")


def test_outputs_must_come_from_an_earlier_step_and_names_are_unique() -> None:
    forward = _saga(
        _step("a", "http://tasks/$(outputs.later)"),
        _step("b", "http://tasks/b", outputs={"later": "response.body.id"}),
    )
    assert "spec.steps[0].action: outputs.later is not an earlier step's output" in (check_saga_spec(forward) or "")
    own = _saga(
        _step(
            "a",
            "http://tasks/a",
            outputs={"id": "response.body.id"},
            compensation={"http": {"url": "http://tasks/a/$(outputs.id)"}},
        )
    )
    assert check_saga_spec(own) is None  # a compensation may use its own step's outputs
    twice = _saga(
        _step("a", "http://tasks/a", outputs={"id": "response.body.id"}),
        _step("b", "http://tasks/b", outputs={"id": "response.body.id"}),
    )
    assert "step a already declares output id" in (check_saga_spec(twice) or "")


def test_monitor_conditions_are_compiled_and_every_other_problem_refused_too() -> None:
    monitor = {"spec": {"target": {"http": {"url": "http://svc/h"}}, "conditions": ["response.bdy.status == 1"]}}
    assert "spec.conditions[0]: 1:" in (check_monitor_spec(monitor) or "")
    schema_problem = {"spec": {"target": {"http": {"url": "not a url"}}}}
    assert (check_monitor_spec(schema_problem) or "").startswith("spec.target.http.url: ")


def _stalled_message(kind: Kind, spec: Any) -> str:
    """What the binding writes into the Stalled (InvalidSpec) condition."""
    with pytest.raises(ValidationError) as caught:
        kind.parse_spec(spec)
    return invalid_spec(caught.value)


SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
WAIT_WITH_DATA = {"operation": "wait", "successWhen": "true", "object": {**SECRET, "kind": "ConfigMap", "data": {}}}
INVALID = [
    (TASK_SAGA, {"task": {"id": "t"}, "steps": [{"name": "s", "action": {"kubernetes": {"object": SECRET}}}]}),
    (HEALTH_MONITOR, {"target": {"kubernetes": WAIT_WITH_DATA}}),
    (APPROVAL_REQUEST, {"subject": {"title": "t"}, "approvers": {"users": ["a"]}, "action": {"kubernetes": {}}}),
]


@pytest.mark.parametrize(("kind", "spec"), INVALID, ids=[k.kind for k, _ in INVALID])
def test_admission_refuses_what_the_models_refuse_with_the_stalled_message(kind: Kind, spec: Any) -> None:
    expected = _stalled_message(kind, spec)
    assert check_spec(kind, "CREATE", None, {"spec": spec}) == expected
    valid = {"spec": {"target": {"http": {"url": "http://svc/h"}}}}
    if kind is HEALTH_MONITOR:  # a change to an invalid spec is refused as a creation would be
        assert check_spec(kind, "UPDATE", valid, {"spec": spec}) == expected


@pytest.mark.parametrize(("kind", "spec"), INVALID, ids=[k.kind for k, _ in INVALID])
def test_an_older_invalid_resource_can_still_be_relabelled_and_deleted(kind: Kind, spec: Any) -> None:
    """Admitted under an older release: metadata edits (the finalizer's removal at deletion) must pass."""
    old = {"metadata": {"finalizers": ["steadfast.dev/finalizer"]}, "spec": spec}
    new = {"metadata": {"labels": {"a": "b"}}, "spec": spec}
    assert check_spec(kind, "UPDATE", old, new) is None


def _monitor(size: int, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "steadfast.dev/v1alpha1",
        "kind": "HealthMonitor",
        "metadata": {"name": "m", "annotations": annotations},
        "spec": {"target": {"http": {"url": "http://svc/h", "body": {"pad": "x" * size}}}},
    }


def test_a_spec_whose_record_would_not_fit_the_annotations_is_refused() -> None:
    limit = persistence.ANNOTATIONS_LIMIT
    small = _monitor(1000)
    assert check_spec(HEALTH_MONITOR, "CREATE", None, small) is None
    big = _monitor(limit - persistence.PROGRESS_RESERVE)
    problem = check_spec(HEALTH_MONITOR, "CREATE", None, big) or ""
    assert "too large for the operator to keep track of" in problem and f"limit of {limit} bytes" in problem
    # kubectl's client-side apply keeps a second copy: half the size no longer fits then
    half = _monitor(limit // 2 - 1000)
    assert check_spec(HEALTH_MONITOR, "CREATE", None, half) is None
    applied = _monitor(limit // 2 - 1000, **{"kubectl.kubernetes.io/last-applied-configuration": "x" * (limit // 2)})
    assert check_spec(HEALTH_MONITOR, "CREATE", None, applied) is not None
    # kopf's own progress records may use the reserve; an edit that grows the bookkeeping past the limit may not
    fits = _monitor(limit - persistence.PROGRESS_RESERVE - 2000)
    assert check_spec(HEALTH_MONITOR, "CREATE", None, fits) is None
    progress = _monitor(limit - persistence.PROGRESS_RESERVE - 2000, **{"steadfast.dev/start": "x" * 1000})
    assert check_spec(HEALTH_MONITOR, "CREATE", None, progress) is not None  # no room left for retries
    assert check_spec(HEALTH_MONITOR, "UPDATE", fits, progress) is None  # but kopf may write them

    # a spec change while kopf's progress records are there: they count against the reserve, not on top of it
    def running(size: int, **fields: Any) -> dict[str, Any]:
        record = {"started": "2026-01-01T00:00:00Z", "purpose": "update", "message": "x" * 500, **fields}
        return _monitor(size, **{"steadfast.dev/signal-x": json.dumps(record)})

    base = limit - persistence.PROGRESS_RESERVE - 400
    assert check_spec(HEALTH_MONITOR, "UPDATE", running(base), running(base + 10)) is None
    assert check_spec(HEALTH_MONITOR, "UPDATE", running(base, extra=""), running(base + 10, extra="")) is not None
    grown = _monitor(limit - persistence.PROGRESS_RESERVE, note="x" * persistence.PROGRESS_RESERVE)
    assert check_spec(HEALTH_MONITOR, "UPDATE", big, grown) is not None
    # an older over-large resource can still lose its finalizer (the size does not grow)
    finalized = {**grown, "metadata": {**grown["metadata"], "finalizers": ["f"]}}
    assert check_spec(HEALTH_MONITOR, "UPDATE", finalized, grown) is None


def test_the_size_counts_the_copy_of_the_spec_kopf_keeps() -> None:
    """A monitor's record copies its spec (and labels and annotations); a saga's immutable spec is not copied."""
    obj = _monitor(10_000, a="b")
    sizes = {kind.kind: persistence.annotation_bytes(kind, {**obj, "kind": kind.kind}) for kind in KINDS}
    assert sizes["TaskSaga"] == len("a") + len("b")
    record = len(json.dumps({"spec": obj["spec"], "metadata": {"annotations": {"a": "b"}}}, separators=(",", ":")))
    marker = len("steadfast.dev/kopf-managed") + len("yes")
    key = len("steadfast.dev/last-handled-configuration")
    assert sizes["HealthMonitor"] == 2 + key + record + 1 + marker
