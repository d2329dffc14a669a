"""SagaTemplate and ClusterSagaTemplate: a saga's definition apart from its runs, with typed parameters.

A TaskSaga names a template (`spec.template`) and gives values for its parameters (`spec.parameters`); its
steps read them as `params.NAME`. No workflow runs a template: the operator reads it when a saga made from it
starts, and records the rendered definition in that saga's workflow input (steadfast.templates), so editing or
deleting the template later never changes a saga that started.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from steadfast.api.common import ApiModel, StatusBase
from steadfast.api.concurrency import Concurrency
from steadfast.api.errors import invalid_spec
from steadfast.api.repair import OnFailure
from steadfast.api.retention import Retention
from steadfast.api.saga import (
    DECLARED,
    MAX_PARAMETERS,
    MAX_STEPS,
    OUTPUT_NAME,
    RENDERED,
    ApprovalGate,
    ParamValue,
    Step,
    TaskSagaSpec,
)
from steadfast.api.schema import list_map

MAX_ENUM = 64
MAX_TEXT = 1024  # characters of a string parameter's value


class ParameterType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"


_PYTHON_TYPE: dict[ParameterType, type] = {
    ParameterType.STRING: str,
    ParameterType.INTEGER: int,
    ParameterType.BOOLEAN: bool,
}


class Parameter(ApiModel):
    """One typed parameter of a template; a saga's value is checked against it at admission and at start."""

    name: str = Field(
        max_length=63, pattern=OUTPUT_NAME, description="Name; steps read the value as params.NAME (a CEL identifier)."
    )
    type: ParameterType = Field(ParameterType.STRING, description="string, integer or boolean.")
    description: str | None = Field(None, max_length=1024, description="What the parameter is for.")
    required: bool | None = Field(
        None, description="Whether a saga must give a value; unset: required unless there is a default."
    )
    default: ParamValue | None = Field(None, description="The value when a saga gives none (of the parameter's type).")
    enum: list[ParamValue] = Field(
        default_factory=list, max_length=MAX_ENUM, description="The allowed values (strings or integers)."
    )
    pattern: str | None = Field(
        None, max_length=512, description="A regular expression a string value must match (anchor it with ^...$)."
    )
    minimum: int | None = Field(None, description="The smallest integer value.")
    maximum: int | None = Field(None, description="The largest integer value.")
    min_length: int | None = Field(None, ge=0, le=MAX_TEXT, description="The fewest characters of a string value.")
    max_length: int | None = Field(None, ge=0, le=MAX_TEXT, description="The most characters of a string value.")

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None

    @model_validator(mode="after")
    def _consistent(self) -> Parameter:
        where = f"parameter {self.name}"
        if self.required is False and self.default is None:
            raise PydanticCustomError(
                "parameter", "{where}: a parameter that is not required needs a default", {"where": where}
            )
        if self.type != ParameterType.STRING and (
            self.pattern or self.min_length is not None or self.max_length is not None
        ):
            raise PydanticCustomError(
                "parameter", "{where}: pattern, minLength and maxLength are for strings", {"where": where}
            )
        if self.type != ParameterType.INTEGER and (self.minimum is not None or self.maximum is not None):
            raise PydanticCustomError("parameter", "{where}: minimum and maximum are for integers", {"where": where})
        if self.type == ParameterType.BOOLEAN and self.enum:
            raise PydanticCustomError("parameter", "{where}: a boolean has no enum", {"where": where})
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise PydanticCustomError("parameter", "{where}: minimum is above maximum", {"where": where})
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise PydanticCustomError("parameter", "{where}: minLength is above maxLength", {"where": where})
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise PydanticCustomError(
                    "parameter", "{where}: pattern does not compile: {error}", {"where": where, "error": str(exc)}
                ) from None
        for value in self.enum:
            if problem := self.misfit(value, enum=False):
                raise PydanticCustomError(
                    "parameter", "{where}: enum value {problem}", {"where": where, "problem": problem}
                )
        if self.default is not None and (problem := self.misfit(self.default)):
            raise PydanticCustomError("parameter", "{where}: default {problem}", {"where": where, "problem": problem})
        return self

    def misfit(self, value: object, *, enum: bool = True) -> str | None:
        """Why `value` does not fit this parameter (a phrase after its name), or None."""
        wanted = _PYTHON_TYPE[self.type]
        if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
            return (
                f"must be a{'n' if self.type == ParameterType.INTEGER else ''} {self.type.value}, not {_shown(value)}"
            )
        if enum and self.enum and value not in self.enum:
            return f"must be one of {', '.join(str(v) for v in self.enum)}"
        if isinstance(value, str):
            if self.min_length is not None and len(value) < self.min_length:
                return f"must be at least {self.min_length} characters long"
            if len(value) > (self.max_length if self.max_length is not None else MAX_TEXT):
                return f"must be at most {self.max_length if self.max_length is not None else MAX_TEXT} characters long"
            if self.pattern is not None and re.search(self.pattern, value) is None:
                return f"must match {self.pattern}"
        elif isinstance(value, int) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                return f"must be at least {self.minimum}"
            if self.maximum is not None and value > self.maximum:
                return f"must be at most {self.maximum}"
        return None


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def fit(declared: list[Parameter], given: dict[str, object]) -> tuple[dict[str, str | int | bool], list[str]]:
    """The values a saga runs with (its own, then defaults) and why they do not fit, each naming the parameter."""
    by_name = {p.name: p for p in declared}
    problems = [
        f"spec.parameters.{name}: not a parameter of the template (it has: {', '.join(by_name) or 'none'})"
        for name in given
        if name not in by_name
    ]
    values: dict[str, str | int | bool] = {}
    for parameter in declared:
        if parameter.name in given:
            value = given[parameter.name]
            if problem := parameter.misfit(value):
                problems.append(f"spec.parameters.{parameter.name}: {problem}")
            elif isinstance(value, str | int | bool):
                values[parameter.name] = value
        elif parameter.default is not None:
            values[parameter.name] = parameter.default
        elif parameter.is_required:
            problems.append(f"spec.parameters.{parameter.name}: required by the template, not given")
    return values, problems


class SagaTemplateSpec(ApiModel):
    """A saga's definition with typed parameters; TaskSagas name it and give the values."""

    description: str | None = Field(None, max_length=4096, description="What a saga made from this template does.")
    parameters: Annotated[list[Parameter], list_map("name")] = Field(
        default_factory=list, max_length=MAX_PARAMETERS, description="Typed parameters; steps read them as params.NAME."
    )
    steps: Annotated[list[Step], list_map("name")] = Field(
        min_length=1,
        max_length=MAX_STEPS,
        description="Steps, run in order (or, when any declares dependsOn, as their dependencies allow); names are "
        "unique.",
    )
    parallelism: int | None = Field(
        None,
        ge=1,
        le=MAX_STEPS,
        description="At most this many steps run at once when steps declare dependsOn (unset: as many as are ready).",
    )
    approval: ApprovalGate | None = Field(None, description="Wait for an approval before the first step.")
    on_failure: OnFailure | None = Field(None, description="When a step fails: compensate at once or pause.")
    retention: Retention | None = Field(
        None, description="How long finished sagas are kept, by outcome (a saga's own spec.retention wins)."
    )
    concurrency: Concurrency | None = Field(
        None, description="Share a limited number of slots with the namespace's other sagas of the same key."
    )

    @field_validator("parameters")
    @classmethod
    def _unique_parameters(cls, parameters: list[Parameter]) -> list[Parameter]:
        seen: set[str] = set()
        for p in parameters:
            if p.name in seen:
                raise PydanticCustomError("unique", "parameter {name} is declared twice", {"name": p.name})
            seen.add(p.name)
        return parameters

    @model_validator(mode="after")
    def _steps(self) -> SagaTemplateSpec:
        """The steps are checked as a saga's are (names, outputs, expressions), reading the declared parameters."""
        try:
            TaskSagaSpec.model_validate(
                {"task": {"id": "template"}, "steps": self.steps, "parallelism": self.parallelism},
                context={RENDERED: True, DECLARED: [p.name for p in self.parameters]},
            )
        except ValidationError as exc:
            raise PydanticCustomError("steps", "{problems}", {"problems": invalid_spec(exc)}) from None
        return self


class SagaTemplateStatus(StatusBase):
    """A template has no workflow; its schema is its spec (`steadfast template params NAME`)."""
