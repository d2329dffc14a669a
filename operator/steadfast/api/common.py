"""The base model and the status pieces every kind shares (conditions, observedGeneration, instance ID)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from steadfast.api.schema import list_map

# Names the API server checks as DNS labels/subdomains; bounded so CEL cost estimates stay small.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A priority as a label value is written (ASCII letters, digits, `-_.` inside): policies match it case-insensitively,
# so "High" is "high", and " high" or a look-alike with a Cyrillic letter is refused rather than slipping past a rule.
PRIORITY = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
# Timestamps must carry a zone: a naive one would serialise without one, and the API server's
# date-time format (RFC 3339) refuses it.
Timestamp = AwareDatetime
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


MAX_BODY_DEPTH = 32  # levels of free JSON (an HTTP body, a Kubernetes object) a spec may hold


def json_depth(value: Any) -> int:
    """Nesting depth of JSON data (a scalar is 0), computed without recursion: bodies are free JSON."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[Any] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, snake_case in Python, unknown fields refused.

    Unknown fields are refused because kubectl's strict field validation refuses them too, so a
    typo fails the same way in the operator and at the API server.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict for the API server: camelCase keys, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    """The kstatus condition types the operator sets on every kind."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class Condition(ApiModel):
    """A status condition in the shape of metav1.Condition, so generic tools (kstatus, kubectl wait) read it."""

    type: str = Field(max_length=316, description="Condition type, e.g. Ready, Reconciling, Stalled.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        None, ge=0, description="The .metadata.generation the condition was set from."
    )
    last_transition_time: Timestamp | None = Field(
        None, description="When the status last changed from one value to another."
    )
    reason: str | None = Field(None, max_length=1024, description="CamelCase reason for the last transition.")
    message: str | None = Field(None, max_length=32768, description="Human-readable details.")


class ReportOrder(ApiModel):
    """Which workflow snapshot a status is. Each replica's status writer runs some of a workflow's reports;
    this lets the API server refuse an older snapshot that arrives after a newer one (see steadfast.status)."""

    run: int = Field(ge=0, description="When the workflow run that wrote the status started, in ms since the epoch.")
    sequence: int = Field(ge=0, description="The snapshot's number within that run.")

    def key(self) -> tuple[int, int]:
        return (self.run, self.sequence)


class StatusBase(ApiModel):
    """Status fields shared by all kinds; the one status writer fills them."""

    observed_generation: int | None = Field(
        None, ge=0, description="The .metadata.generation the operator last acted on."
    )
    conditions: Annotated[list[Condition], list_map("type")] = Field(
        default_factory=list, max_length=16, description="Ready, Reconciling and Stalled (kstatus)."
    )
    workflow_instance_id: str | None = Field(
        None, description="The workflow instance that runs this resource (derived from kind, namespace, name, UID)."
    )
    report: ReportOrder | None = Field(
        None, description="The workflow snapshot this status was written from; orders writes of several replicas."
    )

    def to_patch(self, *, only_given: bool = False) -> dict[str, Any]:
        """The status as a merge patch; `only_given` sends just the fields given, leaving the rest as they are.

        Unset fields are sent as null, a merge patch's "remove": a field cleared here is cleared on the object
        (the API server drops nulls inside lists, which the schema does not allow).
        """
        return self.model_dump(mode="json", by_alias=True, include=self.model_fields_set if only_given else None)

    def condition(self, type_: str) -> Condition | None:
        """The condition of `type_`, if set."""
        return next((c for c in self.conditions if c.type == type_), None)
