"""A TaskSaga's concurrency limit: at most `limit` sagas of one namespace holding the same key run at once.

`key` is a fixed name or uses placeholders over the saga's task, `$(task.id)`, `$(task.title)`,
`$(task.assignee)`, `$(task.priority)` (an unset field renders empty), e.g. "payments-$(task.assignee)". It is
rendered once, when the saga starts. Sagas over the limit wait in the phase Queued and start in creation order.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from steadfast.api.common import ApiModel

MAX_LIMIT = 10_000
TASK_FIELDS = ("id", "title", "assignee", "priority")
PLACEHOLDER = re.compile(r"\$\(task\.([A-Za-z]+)\)")


class Concurrency(ApiModel):
    """Share a limited number of slots with the namespace's other sagas of the same key."""

    key: str = Field(
        min_length=1,
        max_length=253,
        description="The name of the slots, e.g. payments or payments-$(task.assignee) ($(task.id), "
        "$(task.title), $(task.assignee), $(task.priority); an unset field renders empty). Scoped to the "
        "saga's namespace.",
    )
    limit: int | None = Field(
        None,
        ge=1,
        le=MAX_LIMIT,
        description="Sagas of this key running at once in the namespace; a SteadfastPolicy concurrency rule "
        "may set a lower one (the lowest wins). Unset: only the policies' limit applies (none: no limit).",
    )

    @field_validator("key")
    @classmethod
    def _placeholders(cls, key: str) -> str:
        unknown = sorted({m.group(1) for m in PLACEHOLDER.finditer(key)} - set(TASK_FIELDS))
        if unknown:
            raise PydanticCustomError(
                "concurrency", "concurrency.key: unknown task field(s) {names}", {"names": ", ".join(unknown)}
            )
        if "$(" in PLACEHOLDER.sub("", key):
            raise PydanticCustomError(
                "concurrency", "concurrency.key: placeholders are $(task.<id|title|assignee|priority>) only"
            )
        return key
