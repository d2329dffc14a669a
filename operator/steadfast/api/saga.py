"""TaskSaga: steps run in order; when one fails, the compensations of the completed ones run in reverse.

Steps that declare `dependsOn` form a graph instead (docs/parallel-steps.md): a step runs once its
dependencies have succeeded, independent ones at the same time, and compensations run in reverse
dependency order.

The spec is immutable once created (a CEL transition rule), so a running workflow never sees its
plan change under it; only `spec.repair`, a person's decision (steadfast.api.repair), may change.
"""

from __future__ import annotations

import re
from collections import Counter
from enum import StrEnum
from typing import Annotated, NamedTuple

from pydantic import (
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from steadfast.api.action import Action, refuse_expressions
from steadfast.api.approval import Approvers
from steadfast.api.common import DNS_LABEL, DNS_SUBDOMAIN, PRIORITY, ApiModel, StatusBase, Timestamp
from steadfast.api.concurrency import Concurrency
from steadfast.api.duration import DurationCheck, parse_duration
from steadfast.api.repair import MAX_DECISIONS, DecisionRecord, OnFailure, PauseStatus, Repair
from steadfast.api.retention import Retention
from steadfast.api.schema import LIST_SET, VALIDATIONS, Cel, list_map, rules, unchanged
from steadfast.expressions.language import (
    MAX_LENGTH,
    TASK,
    VARIABLES,
    ExpressionError,
    compile_expression,
    responding,
)
from steadfast.expressions.reads import reads

MAX_STEPS = 50
MAX_OUTPUTS = 16
MAX_OUTPUT_BYTES = 8192  # JSON of one step's outputs in status
OUTPUT_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
# `outputs.name` or `outputs["name"]` in an expression: which outputs it reads, to check they exist by then.
_OUTPUT_USE = re.compile(r"""\boutputs\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*(?:"([^"]*)"|'([^']*)')\s*\])""")


class Task(ApiModel):
    """The task the saga carries out; `id` becomes `result.taskId`."""

    id: str = Field(min_length=1, max_length=253, description="Task identifier.")
    title: str | None = Field(None, max_length=256, description="Human-readable title.")
    assignee: str | None = Field(None, max_length=253, description="Who the task is for.")
    priority: str | None = Field(
        None,
        max_length=63,
        pattern=PRIORITY,
        description="Priority, e.g. low, medium, high, critical (ASCII letters, digits and -_. inside; policies "
        "match it case-insensitively).",
    )


class RetryPolicy(ApiModel):
    """Retries of a step's action (the workflow SDK's RetryPolicy); the first attempt counts."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            Cel(
                "duration(self.maxInterval) >= duration(self.initialInterval)",
                "retry.maxInterval must not be shorter than retry.initialInterval",
                field_path=".maxInterval",
            )
        )
    )

    max_attempts: int = Field(3, ge=1, le=100, description="Attempts in all, at least 1.")
    initial_interval: Annotated[str, DurationCheck("retry.initialInterval")] = Field(
        "1s", description="Wait before the first retry."
    )
    backoff_coefficient: float = Field(2.0, ge=1.0, le=100.0, description="Each wait is the previous times this.")
    max_interval: Annotated[str, DurationCheck("retry.maxInterval")] = Field(
        "30s", description="Longest wait between attempts."
    )

    @model_validator(mode="after")
    def _intervals(self) -> RetryPolicy:
        if parse_duration(self.max_interval) < parse_duration(self.initial_interval):
            raise PydanticCustomError("retry", "retry.maxInterval must not be shorter than retry.initialInterval")
        return self


class Step(ApiModel):
    """One step: an action and, optionally, the compensation that undoes it."""

    name: str = Field(max_length=63, pattern=DNS_LABEL, description="Unique step name (a DNS label).")
    action: Action = Field(description="What the step does.")
    compensation: Action | None = Field(
        None,
        description=(
            "Undoes the action; recorded when the step succeeds, run in reverse order on failure (with dependsOn: "
            "after the compensations of the steps that depend on it). Unset for a "
            "kubernetes apply or patch: the step's own undo (delete what it created, restore what it changed)."
        ),
    )
    retry: RetryPolicy | None = Field(None, description="Retry policy; without it the action is tried once.")
    timeout: Annotated[str, DurationCheck("step timeout")] | None = Field(
        None, description="Time limit for the step across all its attempts."
    )
    depends_on: Annotated[list[Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]] | None, LIST_SET] = Field(
        None,
        max_length=MAX_STEPS,
        description=(
            "Names of the steps this one runs after (each must succeed first); [] for none. When any step declares "
            "dependsOn, the steps form a graph: each depends on exactly what it lists (unset or []: it starts at "
            "once) and independent steps run concurrently. When no step declares it, the steps run in order."
        ),
    )
    outputs: Annotated[
        dict[Annotated[str, Field(pattern=OUTPUT_NAME)], Annotated[str, Field(min_length=1, max_length=MAX_LENGTH)]],
        WithJsonSchema(
            {
                "type": "object",
                "maxProperties": MAX_OUTPUTS,
                "additionalProperties": {"type": "string", "minLength": 1, "maxLength": MAX_LENGTH},
                VALIDATIONS: [
                    {
                        "rule": f"self.all(k, k.matches('{OUTPUT_NAME}'))",
                        "message": "output names are CEL identifiers: a letter or _, then letters, digits or _",
                    }
                ],
            }
        ),
    ] = Field(
        default_factory=dict,
        max_length=MAX_OUTPUTS,
        description=(
            "Named values taken from the step's response, each a CEL expression over response (e.g. "
            "paymentId: response.body.id); later steps (with dependsOn: the steps that depend on this one, "
            "directly or not) and compensations use them as outputs.paymentId. "
            f"Names are unique across the saga; a step's outputs take at most {MAX_OUTPUT_BYTES} bytes of JSON."
        ),
    )


MAX_PARAMETERS = 32
# A parameter's value as a saga gives it and expressions read it (`params.NAME`): typed, never an object.
ParamValue = Annotated[
    StrictStr | StrictInt | StrictBool, WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True})
]
# Validation context of a spec rendered from a template for a run (the workflow input): steps and template
# both set, and its expressions may read the parameters it carries.
RENDERED = "rendered"


def param_problems(sources: list[tuple[str, str]], declared: frozenset[str] | None) -> list[str]:
    """Reads of `params` in (field, expression) pairs that are not of a declared parameter, from the CEL tree.

    `declared` None: an inline saga, which has no parameters at all. `params["x"]` or any other use than
    `params.NAME` is refused: what it reads could not be checked.
    """
    problems: list[str] = []
    for where, source in sources:
        try:
            found = reads(source, VARIABLES, "params")
        except ExpressionError:
            continue  # its compile error is reported by the field's own check
        for read in found:
            if declared is None:
                problems.append(f"{where}: {read.describe('params')}: only a saga made from a template has parameters")
            elif read.field is None:
                problems.append(f"{where}: params is read other than as params.NAME")
            elif read.field not in declared:
                known = ", ".join(sorted(declared)) or "none"
                problems.append(f"{where}: params.{read.field} is not a declared parameter (declared: {known})")
    return problems


# Validation context: the parameters a template declares, when its steps are checked as a saga's (api.template).
DECLARED = "declared"


def declared_params(spec: TaskSagaSpec, info: ValidationInfo) -> frozenset[str] | None:
    """The parameters `spec`'s expressions may read: a template's declarations (context DECLARED), a rendered or
    templated saga's values, or None for an inline saga (no parameters at all)."""
    context = info.context or {}
    if context.get(DECLARED) is not None:
        return frozenset(context[DECLARED])
    if context.get(RENDERED) or spec.template is not None:
        return frozenset(spec.parameters)
    return None


def _uses(action: Action, known: set[str], where: str, whose: str, params: frozenset[str] | None) -> list[str]:
    """Compile errors of `action`'s expressions, outputs they read that no step has produced by then, and
    parameters they read that are not declared."""
    problems = action.expression_problems(TASK, where)
    problems += param_problems([(where, source) for source in action.expression_sources()], params)
    used = [m for source in action.expression_sources() for m in _OUTPUT_USE.finditer(source)]
    for match in used:
        name = next(g for g in match.groups() if g is not None)
        if name not in known:
            problems.append(
                f"{where}: outputs.{name} is not {whose} output (known here: {', '.join(sorted(known)) or 'none'})"
            )
    return list(dict.fromkeys(problems))


class OutputReader(NamedTuple):
    """An expression of a later step that reads one of a step's outputs."""

    where: str  # e.g. spec.steps[2].action
    name: str  # the output it reads


def dependencies(spec: TaskSagaSpec) -> dict[str, tuple[str, ...]]:
    """What each step waits for: its dependsOn in a graph, else the step before it (in order)."""
    if not spec.is_graph():
        names = [s.name for s in spec.steps]
        return {name: tuple(names[n - 1 : n]) for n, name in enumerate(names)}
    return {s.name: tuple(s.depends_on or ()) for s in spec.steps}


def ancestors(graph: dict[str, tuple[str, ...]], step: str) -> set[str]:
    """Every step `step` waits for, directly or not (unknown names and cycles are tolerated: admission refuses
    them separately)."""
    found: set[str] = set()
    todo = list(graph.get(step, ()))
    while todo:
        name = todo.pop()
        if name not in found and name != step:
            found.add(name)
            todo.extend(graph.get(name, ()))
    return found


def output_readers(spec: TaskSagaSpec, step: str) -> list[OutputReader]:
    """Where the steps that come after `step` (in order, or depending on it in a graph), actions and compensations,
    read the outputs `step` declares: what skipping it would leave without a value."""
    names = [s.name for s in spec.steps]
    if step not in names:
        return []
    graph = dependencies(spec)
    declared = set(spec.steps[names.index(step)].outputs)
    found: list[OutputReader] = []
    for n, later in enumerate(spec.steps):
        if step not in ancestors(graph, later.name):
            continue
        for part, action in (("action", later.action), ("compensation", later.compensation)):
            if action is None:
                continue
            for source in action.expression_sources():
                for match in _OUTPUT_USE.finditer(source):
                    name = next(g for g in match.groups() if g is not None)
                    if name in declared:
                        found.append(OutputReader(f"spec.steps[{n}].{part}", name))
    return list(dict.fromkeys(found))


def _cycle(graph: dict[str, tuple[str, ...]], start: str) -> list[str] | None:
    """A path start -> ... -> start through the graph, if there is one (the shortest by breadth-first search)."""
    paths: list[list[str]] = [[start]]
    seen: set[str] = set()
    while paths:
        path = paths.pop(0)
        for nxt in graph.get(path[-1], ()):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                paths.append([*path, nxt])
    return None


def graph_problems(spec: TaskSagaSpec) -> list[str]:
    """Why the steps' dependsOn do not form a graph the saga can run, each naming the field."""
    names = {s.name for s in spec.steps}
    graph = {s.name: tuple(d for d in s.depends_on or () if d in names and d != s.name) for s in spec.steps}
    problems: list[str] = []
    reported: set[frozenset[str]] = set()
    for n, step in enumerate(spec.steps):
        listed = step.depends_on or []
        for i, dep in enumerate(listed):
            where = f"spec.steps[{n}].dependsOn[{i}]"
            if dep in listed[:i]:
                problems.append(f"{where}: {dep} is listed twice")
            elif dep == step.name:
                problems.append(f"{where}: step {dep} cannot depend on itself")
            elif dep not in names:
                problems.append(f"{where}: no step is named {dep} (steps: {', '.join(s.name for s in spec.steps)})")
            else:
                loop = _cycle(graph, step.name)
                if loop is not None and dep == loop[1] and frozenset(loop) not in reported:
                    reported.add(frozenset(loop))
                    problems.append(f"{where}: {dep} closes a cycle ({' -> '.join(loop)}); dependencies must not loop")
    return problems


class OnDelete(StrEnum):
    COMPENSATE = "Compensate"
    ABANDON = "Abandon"


class ApprovalGate(ApiModel):
    """Hold the saga until an ApprovalRequest it creates is approved (always, or for some priorities)."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            Cel(
                "self.required || (has(self.priorities) && size(self.priorities) > 0)",
                "approval needs required: true or a list of priorities",
            )
        )
    )

    required: bool = Field(False, description="Always require approval.")
    priorities: Annotated[list[Annotated[str, Field(min_length=1, max_length=63)]], LIST_SET] = Field(
        default_factory=list, max_length=16, description="Require approval when spec.task.priority is one of these."
    )
    approvers: Approvers = Field(description="Who may approve.")
    timeout: Annotated[str, DurationCheck("approval.timeout", minimum="1s", exclusive=False)] = Field(
        "72h", description="Undecided this long, the saga ends Rejected."
    )

    @model_validator(mode="after")
    def _triggers(self) -> ApprovalGate:
        if not self.required and not self.priorities:
            raise PydanticCustomError("approval", "approval needs required: true or a list of priorities")
        if len(set(self.priorities)) != len(self.priorities):
            raise PydanticCustomError("approval", "approval.priorities lists a priority twice")
        return self

    def applies_to(self, task: Task) -> bool:
        """Whether this gate holds a saga for `task`."""
        return self.required or (task.priority is not None and task.priority in self.priorities)


class TemplateKind(StrEnum):
    SAGA_TEMPLATE = "SagaTemplate"
    CLUSTER_SAGA_TEMPLATE = "ClusterSagaTemplate"


class TemplateRef(ApiModel):
    """The template a saga is made from: a SagaTemplate of its own namespace, or a ClusterSagaTemplate."""

    kind: TemplateKind = Field(
        TemplateKind.SAGA_TEMPLATE,
        description="SagaTemplate (of the saga's namespace; no other namespace can be named) or ClusterSagaTemplate.",
    )
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="The template's name.")


# Set on a saga made from a template: these come from the template, never from the saga.
FROM_TEMPLATE = ("steps", "parallelism", "approval", "onFailure", "concurrency")

# Every field but `repair` is fixed at creation: (name, optional). `parameters` too, but its typed values are free
# JSON to the schema, which CEL cannot read: the admission webhook keeps it (steadfast.webhooks.check_saga).
_FIXED_FIELDS = [
    ("task", False),
    ("steps", True),
    ("template", True),
    ("approval", True),
    ("onDelete", True),
    ("onFailure", True),
    ("retention", True),
    ("concurrency", True),
    ("parallelism", True),
]


class TaskSagaSpec(ApiModel):
    """What the saga does. Immutable once created, but for spec.repair (a person's decision)."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            Cel(
                " && ".join(unchanged(name, optional=opt) for name, opt in _FIXED_FIELDS),
                "spec is immutable once the TaskSaga is created (only spec.repair, a decision, may change)",
                reason="FieldValueForbidden",
            ),
            Cel(
                "!has(oldSelf.repair) || has(self.repair)",
                "spec.repair cannot be removed once set (set a new decision instead)",
                reason="FieldValueForbidden",
            ),
            Cel(
                "has(self.template) != (has(self.steps) && size(self.steps) > 0)",
                "a TaskSaga sets exactly one of spec.steps and spec.template",
            ),
            *(
                Cel(
                    f"!has(self.template) || !has(self.{name})",
                    f"spec.{name} comes from the template: not set beside spec.template",
                )
                for name in ("approval", "onFailure", "concurrency")
            ),
        )
    )

    task: Task = Field(description="The task this saga carries out.")
    steps: Annotated[list[Step], list_map("name")] = Field(
        default_factory=list,
        max_length=MAX_STEPS,
        description="Steps, run in order (or, when any declares dependsOn, as their dependencies allow); names are "
        "unique. Exactly one of steps and template.",
    )
    parallelism: int | None = Field(
        None,
        ge=1,
        le=MAX_STEPS,
        description="At most this many steps run at once when steps declare dependsOn (unset: as many as are ready).",
    )
    template: TemplateRef | None = Field(
        None,
        description="Run a SagaTemplate or ClusterSagaTemplate instead of inline steps: its steps, approval, "
        "onFailure and concurrency, as the template was when the saga started (status.template).",
    )
    parameters: Annotated[
        dict[Annotated[str, Field(pattern=OUTPUT_NAME)], ParamValue],
        WithJsonSchema(
            {
                "type": "object",
                "maxProperties": MAX_PARAMETERS,
                "additionalProperties": {"x-kubernetes-preserve-unknown-fields": True},
            }
        ),
    ] = Field(
        default_factory=dict,
        max_length=MAX_PARAMETERS,
        description="Values of the template's parameters (string, integer or boolean), checked against the "
        "template's declarations at admission; expressions read them as params.NAME.",
    )
    approval: ApprovalGate | None = Field(None, description="Wait for an approval before the first step.")
    on_delete: OnDelete = Field(
        OnDelete.COMPENSATE,
        description="On deletion of a running saga: Compensate completed steps first, or Abandon (terminate).",
    )
    on_failure: OnFailure | None = Field(
        None,
        description="When a step fails: compensate at once (the default, or the namespace's SteadfastPolicy "
        "default), or pause for a person's decision.",
    )
    retention: Retention | None = Field(
        None,
        description="How long the finished saga is kept before the operator deletes it (and purges its workflow "
        "state), by outcome; unset outcomes take the namespace's SteadfastPolicy default, then the operator's.",
    )
    concurrency: Concurrency | None = Field(
        None,
        description="Wait for one of a limited number of slots shared by the namespace's sagas of the same key "
        "(phase Queued), in creation order; the slot is held until the saga ends (a gated saga takes it once "
        "approved).",
    )
    repair: Repair | None = Field(
        None,
        description="A person's decision, set with kubectl patch once the saga is Paused (Retry, Skip, Compensate) "
        "or CompensationFailed (Retry, Resolve); each new value is one decision.",
    )

    @field_validator("steps")
    @classmethod
    def _unique_names(cls, steps: list[Step]) -> list[Step]:
        dupes = sorted(n for n, c in Counter(s.name for s in steps).items() if c > 1)
        if dupes:
            raise PydanticCustomError(
                "unique", "step names in spec.steps must be unique; repeated: {names}", {"names": ", ".join(dupes)}
            )
        return steps

    @model_validator(mode="after")
    def _graph(self) -> TaskSagaSpec:
        problems = graph_problems(self)
        if problems:
            raise PydanticCustomError("dependsOn", "{problems}", {"problems": "; ".join(problems)})
        return self

    @model_validator(mode="after")
    def _template(self, info: ValidationInfo) -> TaskSagaSpec:
        if (info.context or {}).get(RENDERED):
            return self  # rendered for a run: the template's steps beside its reference
        if (self.template is None) == (not self.steps):
            raise PydanticCustomError("template", "a TaskSaga sets exactly one of spec.steps and spec.template")
        if self.template is not None:
            given = [f for f in FROM_TEMPLATE if getattr(self, _attr(f)) not in (None, [])]
            if given:
                raise PydanticCustomError(
                    "template",
                    "spec.{field} comes from the template: not set beside spec.template",
                    {"field": given[0]},
                )
        elif self.parameters:
            raise PydanticCustomError("template", "spec.parameters are given to a template: set spec.template")
        return self

    @model_validator(mode="after")
    def _expressions(self, info: ValidationInfo) -> TaskSagaSpec:
        params = declared_params(self, info)
        problems: list[str] = []
        owners: dict[str, str] = {}  # output name -> the step that declares it first
        for step in self.steps:
            for name in step.outputs:
                owners.setdefault(name, step.name)
        graph = dependencies(self)  # in order: each step after the one before, so ancestors are the earlier steps
        whose = "an ancestor's (a step it depends on, directly or not)" if self.is_graph() else "an earlier step's"
        for n, step in enumerate(self.steps):
            where = f"spec.steps[{n}]"
            for name in step.outputs:
                if owners[name] != step.name:
                    problems.append(f"{where}.outputs.{name}: step {owners[name]} already declares output {name}")
            before = ancestors(graph, step.name)
            readable = {name for name, owner in owners.items() if owner in before}
            for name, source in step.outputs.items():
                try:
                    compile_expression(source, responding(TASK, step.action.answer))
                except ExpressionError as exc:
                    problems.append(f"{where}.outputs.{name}: {exc}")
            problems += step.action.sealed_problems(
                TASK, [(f"{where}.outputs.{name}", source) for name, source in step.outputs.items()]
            )
            problems += param_problems([(f"{where}.outputs.{n_}", src) for n_, src in step.outputs.items()], params)
            problems += _uses(step.action, readable, f"{where}.action", whose, params)
            if step.compensation is not None:
                own = readable | set(step.outputs)
                problems += _uses(step.compensation, own, f"{where}.compensation", f"this or {whose}", params)
        refuse_expressions(problems)
        return self

    def is_graph(self) -> bool:
        """Whether steps run as their dependsOn allow (any step declares it, even as []) rather than in order."""
        return any(s.depends_on is not None for s in self.steps)

    def needs_approval(self) -> bool:
        """Whether the approval gate holds this saga."""
        return self.approval is not None and self.approval.applies_to(self.task)


def _attr(wire: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), wire)


class SagaPhase(StrEnum):
    PENDING = "Pending"
    AWAITING_APPROVAL = "AwaitingApproval"
    QUEUED = "Queued"  # waiting for a concurrency slot
    RUNNING = "Running"
    PAUSED = "Paused"
    COMPENSATING = "Compensating"
    SUCCEEDED = "Succeeded"
    COMPENSATED = "Compensated"
    COMPENSATION_FAILED = "CompensationFailed"
    FAILED = "Failed"
    REJECTED = "Rejected"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_SAGA


_TERMINAL_SAGA = frozenset(
    {SagaPhase.SUCCEEDED, SagaPhase.COMPENSATED, SagaPhase.COMPENSATION_FAILED, SagaPhase.FAILED, SagaPhase.REJECTED}
)


class StepPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


class StepStatus(ApiModel):
    """Progress of one step."""

    name: str = Field(description="Step name.")
    phase: StepPhase = Field(description="Where the step is.")
    depends_on: list[str] | None = Field(
        None, description="The steps it runs after (spec.steps[].dependsOn), when the saga's steps form a graph."
    )
    attempts: int = Field(0, ge=0, description="Attempts made so far.")
    started_at: Timestamp | None = Field(None, description="When the first attempt started.")
    finished_at: Timestamp | None = Field(None, description="When the step succeeded or finally failed.")
    message: str | None = Field(None, description="The last error, or other detail.")
    outputs: (
        Annotated[
            dict[str, JsonValue], WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
        ]
        | None
    ) = Field(None, description="The step's declared outputs, as its response gave them (never Secret values).")


class CompensationPhase(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    RESOLVED = "Resolved"  # undone by hand, as a person recorded with spec.repair Resolve


class CompensationStatus(ApiModel):
    """Progress of one compensation; the list is in the order they started (reverse step order, or reverse
    dependency order when steps declare dependsOn)."""

    step: str = Field(description="The step being undone.")
    phase: CompensationPhase = Field(description="Where the compensation is.")
    attempts: int = Field(0, ge=0, description="Attempts made so far.")
    started_at: Timestamp | None = Field(None, description="When the first attempt started.")
    finished_at: Timestamp | None = Field(None, description="When it succeeded or finally failed.")
    message: str | None = Field(None, description="The last error, or other detail.")


class SagaResult(ApiModel):
    """The saga's outcome, once it ends."""

    status: SagaPhase = Field(
        description="The final phase: Succeeded, Compensated, CompensationFailed, Failed or Rejected."
    )
    task_id: str | None = Field(None, description="spec.task.id.")
    error: str | None = Field(None, description="Why it did not succeed.")


class QueueStatus(ApiModel):
    """Where a Queued saga waits: its concurrency key, limit and place in line."""

    key: str = Field(description="The rendered concurrency key (in the saga's namespace).")
    limit: int = Field(description="The limit that applies to this saga (its own or a policy's, the lowest).")
    position: int | None = Field(
        None, description="Place in line (1: next) as last told; it only moves forward while the saga waits."
    )
    policy: str | None = Field(None, description="The SteadfastPolicy rules (policy/rule) that set the limit.")


class TemplateRecord(ApiModel):
    """The template a saga runs, as it was when the saga started (its definition is pinned in the workflow)."""

    kind: TemplateKind = Field(description="SagaTemplate or ClusterSagaTemplate.")
    name: str = Field(description="The template's name.")
    uid: str | None = Field(None, description="The template's UID then.")
    generation: int | None = Field(None, description="The template's metadata.generation then.")


class TaskSagaStatus(StatusBase):
    """Progress of a TaskSaga: every step and compensation, visible with kubectl get -o yaml."""

    phase: SagaPhase | None = Field(None, description="Where the saga is.")
    current_step: str | None = Field(
        None,
        description="The step or compensation running now; with steps running concurrently, their names joined with "
        "commas, in spec order.",
    )
    progress: str | None = Field(
        None, description="Steps succeeded or skipped over all steps, e.g. 5/9 (set by sagas whose steps form a graph)."
    )
    steps: list[StepStatus] = Field(default_factory=list, description="One record per step, in spec order.")
    compensations: list[CompensationStatus] = Field(
        default_factory=list, description="Compensations in the order they started."
    )
    result: SagaResult | None = Field(None, description="The outcome, once the saga ends.")
    approval_request: str | None = Field(None, description="Name of the ApprovalRequest the gate created.")
    approval_policy: str | None = Field(
        None, description="The SteadfastPolicy rules (policy/rule) that gated the saga, if any."
    )
    started_at: Timestamp | None = Field(None, description="When the first step started.")
    finished_at: Timestamp | None = Field(None, description="When the saga ended.")
    retained_until: Timestamp | None = Field(
        None, description="When the operator deletes this finished saga (finishedAt + its retention for the outcome)."
    )
    pause: PauseStatus | None = Field(None, description="Where the saga is paused, while it is Paused.")
    queue: QueueStatus | None = Field(None, description="Where the saga waits for a concurrency slot, while Queued.")
    template: TemplateRecord | None = Field(
        None, description="The template the saga runs, and its generation when the saga started."
    )
    decisions: list[DecisionRecord] = Field(
        default_factory=list,
        max_length=MAX_DECISIONS,
        description=f"Repair decisions (spec.repair) as taken or refused, newest last (the last {MAX_DECISIONS}).",
    )
