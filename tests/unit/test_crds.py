"""Generated CRDs: committed files are current, schemas are structural, and the CRD carries the contract."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from steadfast.api import KINDS, TASK_SAGA, crd
from steadfast.api.duration import DURATION_PATTERN
from steadfast.api.structural import SchemaError, to_structural, unbounded, violations

REPO_CRDS = Path(__file__).resolve().parents[2] / "crds"


@functools.cache
def _crds() -> dict[str, dict[str, Any]]:
    return {kind.kind: yaml.safe_load(crd.render(kind)) for kind in KINDS}


def _schema(kind: str) -> dict[str, Any]:
    version = _crds()[kind]["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[*]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}[*]")


def _at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    found = dict(_walk(schema))
    return found[path]


# -- drift ----------------------------------------------------------------------------------------


def test_committed_crds_match_the_models() -> None:
    drifted = crd.drift(REPO_CRDS)
    assert not drifted, f"crds/ is out of date ({', '.join(drifted)}): run `steadfast crds`"


def test_drift_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert crd.main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(crd.render_all())
    assert crd.main(["--check", str(tmp_path)]) == 0

    # A model change without regenerating: the check fails and names the file.
    changed = dataclasses.replace(TASK_SAGA, description="changed")
    monkeypatch.setattr(crd, "KINDS", (changed, *KINDS[1:]))
    assert crd.main(["--check", "--out", str(tmp_path)]) == 1
    assert "tasksagas.steadfast.dev.yaml" in capsys.readouterr().err
    monkeypatch.undo()

    # An edited, a missing and a stale file are all drift; writing repairs them.
    (tmp_path / "healthmonitors.steadfast.dev.yaml").write_text("# edited\n")
    (tmp_path / "approvalrequests.steadfast.dev.yaml").unlink()
    (tmp_path / "old.steadfast.dev.yaml").write_text(crd.HEADER)
    assert crd.drift(tmp_path) == [
        "approvalrequests.steadfast.dev.yaml",
        "healthmonitors.steadfast.dev.yaml",
        "old.steadfast.dev.yaml",
    ]
    assert crd.main([str(tmp_path)]) == 0
    assert crd.drift(tmp_path) == []


def test_output_is_deterministic() -> None:
    assert crd.render_all() == crd.render_all()
    assert all(text.startswith(crd.HEADER) for text in crd.render_all().values())


# -- structural -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_schema_is_structural(kind: str) -> None:
    schema = _schema(kind)
    assert violations(schema) == []
    for path, node in _walk(schema):
        assert not {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "nullable", "title"} & set(node), path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields") is True, path


def test_checker_catches_non_structural_schemas() -> None:
    bad = {
        "type": "object",
        "properties": {
            "untyped": {"description": "no type"},
            "ref": {"$ref": "#/$defs/X"},
            "union": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "closed": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
            "list": {"type": "array"},
            "rule": {"type": "string", "x-kubernetes-validations": [{"rule": "self != ''"}]},
        },
    }
    found = "\n".join(violations(bad))
    for needle in [
        ".untyped: no type",
        ".ref: keys not allowed",
        ".union: keys not allowed",
        ".closed:",
        ".list: array without items",
        ".rule: CEL rule",
    ]:
        assert needle in found


def test_real_unions_are_refused() -> None:
    with pytest.raises(SchemaError, match="union"):
        to_structural({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}})


@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_spec_strings_and_lists_are_bounded(kind: str) -> None:
    """maxLength/maxItems keep the API server's CEL cost estimates within budget."""
    assert unbounded(_schema(kind)["properties"]["spec"], "spec") == []


def test_free_json_only_in_bodies_objects_and_step_outputs() -> None:
    """Free JSON is what users send (bodies, Kubernetes objects, a template's typed parameter values, which
    admission checks) and what came back (a step's outputs in status)."""
    allowed = (".http.body", ".kubernetes.object", ".kubernetes.object.metadata", ".spec.parameters[*]")
    for kind in KINDS:
        free = [p for p, n in _walk(_schema(kind.kind)) if n.get("x-kubernetes-preserve-unknown-fields")]
        assert free and all(p.endswith(allowed) or p == ".status.steps[*].outputs" for p in free), free
        objects = [n for p, n in _walk(_schema(kind.kind)) if p.endswith(".kubernetes.object")]
        assert objects and all(n["required"] == ["apiVersion", "kind", "metadata"] for n in objects)


# -- the contract in the CRD ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_names_subresources_and_columns(kind: Any) -> None:
    doc = _crds()[kind.kind]
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1" and doc["kind"] == "CustomResourceDefinition"
    assert doc["metadata"]["name"] == f"{kind.plural}.steadfast.dev"
    spec = doc["spec"]
    assert spec["group"] == "steadfast.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["categories"] == ["steadfast"] and spec["names"]["shortNames"] == list(kind.short_names)
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert "Phase" in columns and columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    root = version["schema"]["openAPIV3Schema"]
    assert root["required"] == ["spec"] and root["description"]
    assert "default" not in str([n for _, n in _walk(root["properties"]["status"])])


def test_saga_rules() -> None:
    schema = _schema("TaskSaga")
    spec = schema["properties"]["spec"]
    spec_rules = {r["message"]: r["rule"] for r in spec["x-kubernetes-validations"]}
    fixed = spec_rules["spec is immutable once the TaskSaga is created (only spec.repair, a decision, may change)"]
    assert "self.steps == oldSelf.steps" in fixed and "self.template == oldSelf.template" in fixed
    assert "repair" not in fixed
    assert spec_rules["a TaskSaga sets exactly one of spec.steps and spec.template"]
    assert spec_rules["spec.repair cannot be removed once set (set a new decision instead)"] == (
        "!has(oldSelf.repair) || has(self.repair)"
    )
    steps = spec["properties"]["steps"]
    assert steps["x-kubernetes-list-type"] == "map" and steps["x-kubernetes-list-map-keys"] == ["name"]
    assert steps["maxItems"] == 50
    assert _at(schema, ".spec.steps[*].retry.maxAttempts")["minimum"] == 1
    assert _at(schema, ".spec.onDelete")["default"] == "Compensate"
    url = _at(schema, ".spec.steps[*].action.http.url")
    assert url["pattern"].startswith("^https?://") and "isURL(self)" in url["x-kubernetes-validations"][0]["rule"]
    action = _at(schema, ".spec.steps[*].action")
    assert (
        action["x-kubernetes-validations"][0]["rule"]
        == "(has(self.http) ? 1 : 0) + (has(self.kubernetes) ? 1 : 0) == 1"
    )
    assert _at(schema, ".spec.steps[*].action.kubernetes.operation")["enum"] == ["apply", "patch", "delete", "wait"]
    assert _at(schema, ".spec.steps[*].action.http.timeout")["default"] == "10s"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_a_kind_is_treated_as_immutable_only_when_its_crd_refuses_spec_changes(kind: Any) -> None:
    """The operator keeps no diff base for a kind with spec_immutable but its mutable_spec fields: the CRD must
    back that up with a rule fixing every other field of the spec."""
    spec = _schema(kind.kind)["properties"]["spec"]
    rules = [r["rule"] for r in spec.get("x-kubernetes-validations", [])]
    # A TaskSaga's parameters hold typed values CEL cannot read: the admission webhook keeps them fixed.
    fixed = [f for f in spec["properties"] if f not in kind.mutable_spec and f != "parameters"]
    fixing = [r for r in rules if r == "self == oldSelf" or all(f"self.{f} == oldSelf.{f}" in r for f in fixed)]
    assert bool(fixing) == kind.spec_immutable
    for mutable in kind.mutable_spec:
        assert all(f"self.{mutable} ==" not in r for r in fixing)


def test_monitor_durations_and_defaults() -> None:
    schema = _schema("HealthMonitor")
    for field, default in [("healthyInterval", "60m"), ("unhealthyInterval", "5m")]:
        node = _at(schema, f".spec.{field}")
        assert node["default"] == default and node["pattern"] == DURATION_PATTERN
        (rule,) = node["x-kubernetes-validations"]
        assert "duration(self) >= duration('1s')" in rule["rule"] and field in rule["message"]
    assert _at(schema, ".spec.failureThreshold") == {
        "default": 1, "description": _at(schema, ".spec.failureThreshold")["description"],
        "maximum": 1000, "minimum": 1, "type": "integer",
    }  # fmt: skip


def test_approval_rules() -> None:
    schema = _schema("ApprovalRequest")
    root_rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert any("oldSelf.status.phase == 'Pending'" in r for r in root_rules)
    spec_rules = {r["message"]: r["rule"] for r in schema["properties"]["spec"]["x-kubernetes-validations"]}
    assert spec_rules["spec.decision cannot be removed once set"] == "!has(oldSelf.decision) || has(self.decision)"
    assert "decision" not in spec_rules["only spec.decision may change after an ApprovalRequest is created"]
    assert _at(schema, ".spec.timeout")["default"] == "72h"
    assert _at(schema, ".spec.approvers.users")["x-kubernetes-list-type"] == "set"


def test_every_rule_has_a_message_and_no_backslash() -> None:
    """A backslash in a CEL string literal is an escape; `\\.` does not compile (the API server refuses the CRD)."""
    for kind in KINDS:
        root = _schema(kind.kind)
        for path, node in _walk(root):
            for rule in node.get("x-kubernetes-validations", []):
                assert rule["message"].strip(), f"{kind.kind}{path}: {rule['rule']}"
                assert "\\" not in rule["rule"], f"{kind.kind}{path}: {rule['rule']}"
