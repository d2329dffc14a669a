"""Repair: a person's decision about a saga that went wrong, or an approved action that failed.

Decisions are a patch of `spec.repair` (the only part of the spec that may change), stamped and sealed with the
authenticated user at admission and checked there against the resource's phase (steadfast.repair.admission).
Each new value is one decision; the generation it produces identifies it, so a redelivered event or a GitOps
re-sync (which leaves a field it does not own alone) never acts twice.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from steadfast.api.common import DNS_LABEL, ApiModel, Timestamp
from steadfast.api.duration import DurationCheck
from steadfast.api.schema import Cel, rules

MAX_DECISIONS = 20  # kept in status, newest last


class RepairAction(StrEnum):
    RETRY = "Retry"
    SKIP = "Skip"
    COMPENSATE = "Compensate"
    RESOLVE = "Resolve"


class Repair(ApiModel):
    """What a person decided; set with `kubectl patch` (or `steadfast retry|skip|compensate|resolve`)."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            Cel(
                "!(self.action in ['Skip', 'Resolve']) || (has(self.reason) && size(self.reason) > 0)",
                "spec.repair.reason is required to Skip or Resolve",
                field_path=".reason",
            ),
            Cel(
                "self.action != 'Resolve' || has(self.step)",
                "spec.repair.step is required to Resolve: the step whose compensation was undone by hand",
                field_path=".step",
            ),
        )
    )

    action: RepairAction = Field(
        description="Retry (the failed step, or the failed compensations), Skip (the failed step), Compensate "
        "(a paused saga, now) or Resolve (a failed compensation, undone by hand)."
    )
    step: str | None = Field(
        None, max_length=63, pattern=DNS_LABEL, description="The step it is about (required to Resolve)."
    )
    reason: str | None = Field(None, max_length=1024, description="Why (required to Skip or Resolve).")

    @model_validator(mode="after")
    def _needs(self) -> Repair:
        if self.action in (RepairAction.SKIP, RepairAction.RESOLVE) and not self.reason:
            raise PydanticCustomError("repair", "spec.repair.reason is required to Skip or Resolve")
        if self.action == RepairAction.RESOLVE and not self.step:
            raise PydanticCustomError(
                "repair", "spec.repair.step is required to Resolve: the step whose compensation was undone by hand"
            )
        return self


class DecisionRecord(ApiModel):
    """One repair decision as the workflow took it (or refused it)."""

    action: RepairAction = Field(description="What was decided.")
    step: str | None = Field(None, description="The step it was about.")
    reason: str | None = Field(None, description="Why, as the person wrote it.")
    user: str | None = Field(None, description="Who decided (recorded by admission, never typed).")
    at: Timestamp | None = Field(None, description="When the workflow took it.")
    generation: int = Field(0, ge=0, description="The generation of the spec.repair change.")
    result: str | None = Field(None, description="What it did, or why it was refused.")


class FailureAction(StrEnum):
    COMPENSATE = "Compensate"
    PAUSE = "Pause"


class OnFailure(ApiModel):
    """What a saga does when a step fails: compensate at once, or pause for a person to decide."""

    action: FailureAction = Field(
        FailureAction.COMPENSATE,
        description="Compensate at once (the default), or Pause: wait for a decision (spec.repair: Retry, Skip or "
        "Compensate) until pauseTimeout, then compensate.",
    )
    pause_timeout: Annotated[str, DurationCheck("onFailure.pauseTimeout", minimum="1s", exclusive=False)] = Field(
        "24h", description="How long a paused saga waits for a decision before it compensates."
    )


class PauseStatus(ApiModel):
    """Where a paused saga stopped and until when it waits."""

    step: str = Field(description="The step that failed.")
    since: Timestamp | None = Field(None, description="When it paused.")
    expires_at: Timestamp | None = Field(None, description="When it compensates if nobody decides.")
