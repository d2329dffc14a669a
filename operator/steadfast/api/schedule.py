"""SagaSchedule: a TaskSaga created on a cron schedule, as its creator, by a durable workflow.

The run's spec is a TaskSaga spec as it is. Its schema in the CRD is left open (an object that keeps unknown
fields): the TaskSaga spec's CEL transition rules (its immutability) would otherwise make this field immutable
too, and a schedule's saga is meant to be edited. It is validated with the TaskSaga model instead, at admission and
when the workflow starts, with the errors named from `spec.sagaTemplate.spec`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, JsonValue, ValidationError, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from steadfast.api.common import ApiModel, StatusBase, Timestamp
from steadfast.api.duration import DurationCheck
from steadfast.api.errors import describe
from steadfast.api.saga import TaskSagaSpec
from steadfast.api.schema import Cel
from steadfast.schedules.cron import MAX_LENGTH, CronError, parse

# A run is named `<schedule>-<unix seconds>` and labelled with the schedule's name: both must stay within a label
# value's 63 characters, and 10 digits last until 2286.
MAX_NAME = 52
NAME_LENGTH = Cel(
    f"self.metadata.name.size() <= {MAX_NAME}",
    f"metadata.name: at most {MAX_NAME} characters (run names add a dash and the scheduled time in seconds)",
    reason="FieldValueInvalid",
)
MAX_HISTORY = 100
# The labels every run carries (a label selector finds a schedule's runs; the time orders them).
SCHEDULE_LABEL = "steadfast.dev/schedule"
TIME_LABEL = "steadfast.dev/scheduled-time"
_RESERVED_PREFIX = "steadfast.dev/"

LooseObject = Annotated[
    dict[str, JsonValue],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class RunMetadata(ApiModel):
    """Labels and annotations each run gets (the schedule's own labels and its name are added)."""

    labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, max_length=64, description="Labels of each run."
    )
    annotations: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=64, description="Annotations of each run."
    )


class SagaTemplate(ApiModel):
    """What each run is: a TaskSaga's metadata and spec."""

    metadata: RunMetadata | None = Field(None, description="Labels and annotations of each run.")
    spec: LooseObject = Field(
        description="A TaskSaga spec (as in kind TaskSaga). Without spec.task.id, a run's task ID is its name."
    )


def run_saga_spec(spec: dict[str, Any], run_name: str) -> dict[str, Any]:
    """The spec of the run named `run_name`: the template's, with the run's name as task ID when it gives none."""
    out = dict(spec)
    task = dict(out.get("task") or {})
    task.setdefault("id", run_name)
    out["task"] = task
    return out


class SagaScheduleSpec(ApiModel):
    """When to create a TaskSaga, and which."""

    schedule: str = Field(
        min_length=1,
        max_length=MAX_LENGTH,
        description="Cron: 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first; "
        "@hourly, @daily, @weekly, @monthly, @yearly; or @every <duration> (e.g. @every 90s, aligned to the Unix "
        "epoch).",
    )
    time_zone: str | None = Field(
        None,
        max_length=64,
        description="IANA time zone of the schedule's wall clock (default UTC). A wall time skipped by daylight "
        "saving does not fire; one that happens twice fires once, at the first.",
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        ConcurrencyPolicy.ALLOW,
        description="When a run is due while earlier ones are still active: Allow starts it too, Forbid skips it, "
        "Replace deletes the active ones (their onDelete applies) and starts it.",
    )
    starting_deadline: Annotated[str | None, DurationCheck("startingDeadline", minimum="0s", exclusive=False)] = Field(
        None,
        description="A run that cannot start within this long after its scheduled time (the operator was down) "
        "is missed, not started. Unset: no limit. Whatever was missed, one run at most catches up.",
    )
    successful_runs_history_limit: int = Field(
        3, ge=0, le=MAX_HISTORY, description="Succeeded runs kept; older ones are deleted."
    )
    failed_runs_history_limit: int = Field(
        1, ge=0, le=MAX_HISTORY, description="Failed (or otherwise unsuccessful) finished runs kept."
    )
    suspend: bool = Field(
        False, description="Create no runs until set back to false; times that pass meanwhile are not caught up."
    )
    saga_template: SagaTemplate = Field(description="The TaskSaga each run is.")

    @model_validator(mode="after")
    def _checks(self) -> SagaScheduleSpec:
        problems: list[str] = []
        try:
            parse(self.schedule, self.time_zone)
        except CronError as exc:
            target = "spec.timeZone" if "time zone" in str(exc) else "spec.schedule"
            problems.append(f"{target}: {exc}")
        try:
            TaskSagaSpec.model_validate(run_saga_spec(self.saga_template.spec, "run"))
        except ValidationError as exc:
            problems += describe(exc, prefix="spec.sagaTemplate.spec")
        metadata = self.saga_template.metadata or RunMetadata()
        for where, keys in (("labels", metadata.labels), ("annotations", metadata.annotations)):
            problems += [
                f"spec.sagaTemplate.metadata.{where}.{key}: the steadfast.dev/ prefix is the operator's"
                for key in keys
                if key.startswith(_RESERVED_PREFIX)
            ]
        if problems:
            raise PydanticCustomError("schedule", "{problems}", {"problems": "; ".join(problems)})
        return self


class SagaScheduleStatus(StatusBase):
    """The last and next runs, the active ones, and what was missed or skipped."""

    last_schedule_time: Timestamp | None = Field(None, description="The scheduled time of the last run created.")
    next_schedule_time: Timestamp | None = Field(None, description="When the next run is due.")
    last_successful_time: Timestamp | None = Field(None, description="When a run last finished successfully.")
    active: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=list, description="The runs not finished yet, as of the last scheduled time."
    )
    active_count: int = Field(0, ge=0, description="How many runs are active (the length of active).")
    runs_created: int = Field(0, ge=0, description="Runs created.")
    missed_runs: int = Field(
        0, ge=0, description="Scheduled times that got no run: past the starting deadline, or caught up by a later one."
    )
    skipped_runs: int = Field(0, ge=0, description="Runs not created because earlier ones were active (Forbid).")
    last_problem: str | None = Field(None, description="Why the last due run was not created, if it was not.")


def run_name(schedule: str, scheduled: datetime) -> str:
    """The one name of the run for `scheduled`: a replay, a retry or a second replica gets the same name."""
    return f"{schedule}-{int(scheduled.astimezone(UTC).timestamp())}"
