"""Saga templates: typed parameters, reads of undeclared parameters, the rendered (pinned) definition."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import ValidationError

from steadfast.api.errors import Unstartable, invalid_spec
from steadfast.api.policy import SteadfastPolicySpec
from steadfast.api.saga import RENDERED, TaskSagaSpec, TemplateRef
from steadfast.api.template import SagaTemplateSpec, fit
from steadfast.expressions.language import TASK, compile_expression
from steadfast.templates.admission import TemplateAdmission
from steadfast.templates.cli import table
from steadfast.templates.render import render

TEMPLATE: dict[str, Any] = {
    "description": "Onboard an employee",
    "parameters": [
        {"name": "region", "enum": ["eu", "us"], "description": "Where the account lives."},
        {"name": "seats", "type": "integer", "minimum": 1, "maximum": 10, "default": 1},
        {"name": "vip", "type": "boolean", "default": False},
        {"name": "team", "pattern": "^[a-z]+$", "maxLength": 12},
    ],
    "steps": [
        {
            "name": "account",
            "action": {
                "http": {
                    "method": "POST",
                    "url": "http://accounts.team-a.svc/$(params.region)/accounts",
                    "body": {"seats": "$(params.seats)", "vip": "$(params.vip)", "team": "$(params.team)"},
                }
            },
            "outputs": {"id": "response.body.id"},
        }
    ],
    "approval": {"required": True, "approvers": {"users": ["boss"]}},
    "retention": {"succeeded": "1h"},
}
SAGA: dict[str, Any] = {
    "task": {"id": "42", "priority": "high"},
    "template": {"kind": "ClusterSagaTemplate", "name": "onboard"},
    "parameters": {"region": "eu", "team": "web"},
}
BODY: dict[str, Any] = {"metadata": {"name": "onboard", "uid": "u-1", "generation": 3}, "spec": TEMPLATE}


def _template(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(TEMPLATE)
    spec.update(changes)
    return spec


def _refusal(model: type[SagaTemplateSpec] | type[TaskSagaSpec], spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(spec)
    return invalid_spec(caught.value)


def test_a_template_and_a_saga_naming_it_are_valid() -> None:
    SagaTemplateSpec.model_validate(TEMPLATE)
    saga = TaskSagaSpec.model_validate(SAGA)
    assert saga.template is not None and saga.template.name == "onboard" and not saga.steps


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"region": "mars", "team": "web"}, "spec.parameters.region: must be one of eu, us"),
        ({"team": "web"}, "spec.parameters.region: required by the template, not given"),
        ({"region": "eu", "team": "web", "colour": "red"}, "spec.parameters.colour: not a parameter of the template"),
        ({"region": "eu", "team": "web", "seats": "2"}, "spec.parameters.seats: must be an integer, not a string"),
        ({"region": "eu", "team": "web", "seats": 11}, "spec.parameters.seats: must be at most 10"),
        ({"region": "eu", "team": "web", "seats": True}, "spec.parameters.seats: must be an integer, not a boolean"),
        ({"region": "eu", "team": "Web"}, "spec.parameters.team: must match ^[a-z]+$"),
        ({"region": "eu", "team": "a" * 13}, "spec.parameters.team: must be at most 12 characters long"),
        ({"region": "eu", "team": "web", "vip": "yes"}, "spec.parameters.vip: must be a boolean, not a string"),
    ],
)
def test_parameters_that_do_not_fit_are_named(given: dict[str, Any], expected: str) -> None:
    template = SagaTemplateSpec.model_validate(TEMPLATE)
    _, problems = fit(template.parameters, given)
    assert any(p.startswith(expected) for p in problems), problems


def test_defaults_fill_in() -> None:
    template = SagaTemplateSpec.model_validate(TEMPLATE)
    values, problems = fit(template.parameters, {"region": "us", "team": "ops"})
    assert not problems and values == {"region": "us", "seats": 1, "vip": False, "team": "ops"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"url": "http://accounts.team-a.svc/$(params.zone)"}, "params.zone is not a declared parameter"),
        ({"url": 'http://accounts.team-a.svc/$(params["region"])'}, "params is read other than as params.NAME"),
    ],
)
def test_a_template_reading_an_undeclared_parameter_is_refused(change: dict[str, Any], expected: str) -> None:
    steps = copy.deepcopy(TEMPLATE["steps"])
    steps[0]["action"]["http"].update(change)
    message = _refusal(SagaTemplateSpec, _template(steps=steps))
    assert message.startswith("spec.steps[0].action: ") and expected in message, message


@pytest.mark.parametrize(
    ("parameter", "expected"),
    [
        ({"name": "n", "type": "integer", "default": "x"}, "parameter n: default must be an integer"),
        ({"name": "n", "required": False}, "parameter n: a parameter that is not required needs a default"),
        ({"name": "n", "type": "integer", "pattern": "x"}, "parameter n: pattern, minLength and maxLength"),
        ({"name": "n", "type": "integer", "minimum": 3, "maximum": 2}, "parameter n: minimum is above maximum"),
        ({"name": "n", "enum": ["a", 1]}, "parameter n: enum value must be a string"),
        ({"name": "n", "pattern": "("}, "parameter n: pattern does not compile"),
    ],
)
def test_inconsistent_declarations_are_refused(parameter: dict[str, Any], expected: str) -> None:
    message = _refusal(SagaTemplateSpec, _template(parameters=[*TEMPLATE["parameters"], parameter]))
    assert expected in message, message


def test_an_inline_saga_has_no_parameters() -> None:
    inline = {
        "task": {"id": "1"},
        "steps": [{"name": "a", "action": {"http": {"method": "GET", "url": "http://x.team-a.svc/$(params.region)"}}}],
    }
    assert "only a saga made from a template has parameters" in _refusal(TaskSagaSpec, inline)
    assert "spec.parameters are given to a template" in _refusal(TaskSagaSpec, {**inline, "parameters": {"a": "b"}})


@pytest.mark.parametrize("field", ["steps", "approval", "onFailure", "concurrency"])
def test_what_comes_from_the_template_is_refused_beside_it(field: str) -> None:
    values = {
        "steps": TEMPLATE["steps"],
        "approval": TEMPLATE["approval"],
        "onFailure": {"action": "Pause"},
        "concurrency": {"key": "k", "limit": 1},
    }
    message = _refusal(TaskSagaSpec, {**SAGA, field: values[field]})
    assert field in message, message


def test_rendering_pins_the_template_with_the_sagas_task_and_values() -> None:
    saga = TaskSagaSpec.model_validate({**SAGA, "retention": {"succeeded": "5m"}})
    spec, record = render(saga, BODY)
    assert [s.name for s in spec.steps] == ["account"] and spec.task.id == "42"
    assert spec.approval is not None and spec.approval.required
    assert spec.retention is not None and spec.retention.succeeded == "5m"  # the saga's own wins
    assert spec.parameters == {"region": "eu", "seats": 1, "vip": False, "team": "web"}
    assert (record.kind.value, record.name, record.uid, record.generation) == (
        "ClusterSagaTemplate",
        "onboard",
        "u-1",
        3,
    )
    # The workflow reads it back as rendered (both steps and template, reads of its parameters).
    again = TaskSagaSpec.model_validate(spec.to_wire(), context={RENDERED: True})
    assert again == spec


def test_rendering_refuses_values_that_no_longer_fit() -> None:
    saga = TaskSagaSpec.model_validate({**SAGA, "parameters": {"region": "mars", "team": "web"}})
    with pytest.raises(Unstartable) as caught:
        render(saga, BODY)
    assert caught.value.reason == "ParametersInvalid" and "spec.parameters.region: must be one of eu, us" in str(
        caught.value
    )


def test_params_is_a_variable_of_the_task_scope() -> None:
    compile_expression('params.region == "eu"', TASK)


# -- admission: who may run which template, golden paths --------------------------------------------


def _admission(
    *, allowed: bool = True, exists: bool = True, policies: list[tuple[str, SteadfastPolicySpec]] | None = None
) -> tuple[TemplateAdmission, list[tuple[str, str, str]]]:
    asked: list[tuple[str, str, str]] = []

    def read(ref: TemplateRef, namespace: str) -> dict[str, Any] | None:
        return copy.deepcopy(BODY) if exists else None

    def may_get(userinfo: Mapping[str, Any], plural: str, namespace: str, name: str) -> bool:
        asked.append((plural, namespace, name))
        return allowed

    return TemplateAdmission(read, may_get, lambda: policies or [], lambda namespace: {"team": "web"}), asked


USER = {"username": "dev", "groups": ["devs"]}


def test_admission_reads_a_cluster_template_only_for_who_may_get_it() -> None:
    check, asked = _admission(allowed=False)
    problem = check(USER, "team-a", {"spec": SAGA})
    assert problem is not None and problem.startswith("spec.template: dev may not get ClusterSagaTemplate onboard")
    assert asked == [("clustersagatemplates", "", "onboard")]
    check, asked = _admission()
    assert check(USER, "team-a", {"spec": SAGA}) is None


def test_admission_names_a_missing_template_and_misfit_parameters() -> None:
    local = {**SAGA, "template": {"name": "onboard"}}
    check, asked = _admission(exists=False)
    assert check(USER, "team-a", {"spec": local}) == "spec.template: SagaTemplate onboard not found in namespace team-a"
    assert asked == [("sagatemplates", "team-a", "onboard")]
    check, _ = _admission()
    problem = check(USER, "team-a", {"spec": {**SAGA, "parameters": {"region": "mars", "team": "web"}}})
    assert problem == "spec.parameters.region: must be one of eu, us"


def test_golden_paths_refuse_inline_steps_and_other_templates_naming_the_rule() -> None:
    policy = SteadfastPolicySpec.model_validate(
        {
            "templates": [
                {
                    "name": "onboarding",
                    "namespaceSelector": {"matchLabels": {"team": "web"}},
                    "allowed": [{"name": "onboard"}],
                }
            ]
        }
    )
    check, _ = _admission(policies=[("golden", policy)])
    assert check(USER, "team-a", {"spec": SAGA}) is None
    inline = {"task": {"id": "1"}, "steps": TEMPLATE["steps"][:1]}
    inline["steps"] = [{"name": "a", "action": {"http": {"method": "GET", "url": "http://x.team-a.svc/"}}}]
    problem = check(USER, "team-a", {"spec": inline})
    assert problem == (
        "inline spec.steps are not allowed in this namespace: SteadfastPolicy golden rule onboarding requires "
        "TaskSagas made from one of: ClusterSagaTemplate onboard"
    )
    other = check(USER, "team-a", {"spec": {**SAGA, "template": {"name": "onboard"}}})
    assert other is not None and other.startswith("spec.template SagaTemplate onboard is not allowed")


def test_the_cli_shows_each_parameter_with_its_constraints() -> None:
    shown = table(SagaTemplateSpec.model_validate(TEMPLATE)).splitlines()
    assert shown[0].split() == ["NAME", "TYPE", "REQUIRED", "DEFAULT", "ALLOWED", "DESCRIPTION"]
    assert shown[1].split() == ["region", "string", "yes", "-", "eu|us", "Where", "the", "account", "lives."]
    assert shown[2].split() == ["seats", "integer", "no", "1", "1..10"]
    assert shown[3].split() == ["vip", "boolean", "no", "false", "-"]
    assert shown[4].split() == ["team", "string", "yes", "-", "length", "..12", "~^[a-z]+$"]


def test_a_template_of_parallel_steps_renders_a_graph_with_its_parallelism() -> None:
    """dependsOn and parallelism (#28) come with the template; a cycle in one is refused when it is applied."""
    fan_out = {"http": {"method": "POST", "url": "http://svc.team-a.svc/$(params.region)"}}
    steps = [
        {"name": "db", "dependsOn": [], "action": fan_out},
        {"name": "queue", "dependsOn": [], "action": fan_out},
        {"name": "deploy", "dependsOn": ["db", "queue"], "action": fan_out},
    ]
    body = {**BODY, "spec": _template(steps=steps, parallelism=2)}
    spec, _ = render(TaskSagaSpec.model_validate(SAGA), body)
    assert spec.is_graph() and spec.parallelism == 2
    assert [s.depends_on for s in spec.steps] == [[], [], ["db", "queue"]]
    cyclic = [{**steps[0], "dependsOn": ["deploy"]}, *steps[1:]]
    assert "closes a cycle" in _refusal(SagaTemplateSpec, _template(steps=cyclic))
    assert "parallelism" in _refusal(TaskSagaSpec, {**SAGA, "parallelism": 2})  # the template's, not the run's
