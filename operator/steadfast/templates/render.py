"""A templated TaskSaga's effective definition: the template's steps and gate with the saga's task and values.

Pure: the caller reads the template. The result is what the saga's workflow starts with, so the run is pinned
to the template as it was then (a template's later edit or deletion never reaches it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from pydantic import ValidationError

from steadfast.api.errors import Unstartable, invalid_spec
from steadfast.api.saga import FROM_TEMPLATE, RENDERED, TaskSagaSpec, TemplateRecord, TemplateRef
from steadfast.api.template import SagaTemplateSpec, fit


class Rendered(NamedTuple):
    spec: TaskSagaSpec  # steps and template both set; parameters hold every value the steps read
    record: TemplateRecord


def template_spec(ref: TemplateRef, body: Mapping[str, Any]) -> SagaTemplateSpec:
    """The template's spec, or Unstartable (TemplateInvalid) naming what is wrong."""
    try:
        return SagaTemplateSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        raise Unstartable("TemplateInvalid", f"{ref.kind.value} {ref.name} is not valid: {invalid_spec(exc)}") from None


def parameter_problems(saga: TaskSagaSpec, template: SagaTemplateSpec) -> list[str]:
    """Why the saga's parameters do not fit the template's declarations, each naming the parameter."""
    return fit(template.parameters, dict(saga.parameters))[1]


def render(saga: TaskSagaSpec, body: Mapping[str, Any]) -> Rendered:
    """The definition `saga` runs with the template `body` (as read now), or Unstartable saying why not."""
    ref = saga.template
    if ref is None:
        raise ValueError("not a templated saga")
    template = template_spec(ref, body)
    values, problems = fit(template.parameters, dict(saga.parameters))
    if problems:
        raise Unstartable("ParametersInvalid", f"{ref.kind.value} {ref.name}: {'; '.join(problems)}")
    data = saga.to_wire()
    given = template.to_wire()
    for key in FROM_TEMPLATE:
        data.pop(key, None)
        if key in given:
            data[key] = given[key]
    if "retention" not in data and "retention" in given:
        data["retention"] = given["retention"]  # the saga's own wins
    data["parameters"] = values
    try:
        spec = TaskSagaSpec.model_validate(data, context={RENDERED: True})
    except ValidationError as exc:
        raise Unstartable("TemplateInvalid", f"{ref.kind.value} {ref.name}: {invalid_spec(exc)}") from None
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    record = TemplateRecord(
        kind=ref.kind,
        name=ref.name,
        uid=meta.get("uid"),
        generation=int(generation) if generation is not None else None,
    )
    return Rendered(spec, record)
