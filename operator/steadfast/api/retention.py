"""How long a finished TaskSaga or ApprovalRequest is kept before the operator deletes it, by outcome.

`succeeded` covers a saga that Succeeded and a request that Completed (or was Approved with no action);
`failed` every other end that needs nobody: a saga Compensated, Failed or Rejected, a request Rejected or
TimedOut. What waits for a person (Paused, CompensationFailed, AwaitingApproval, Pending, ActionFailed) and
anything unfinished is never removed, whatever is set here (steadfast.retention.rules).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from steadfast.api.common import ApiModel
from steadfast.api.duration import DurationCheck

# A year: longer is "keep", which is what leaving the field unset says.
MAXIMUM = "8760h"


class Retention(ApiModel):
    """Keep a finished resource this long after it ended, by outcome; an unset outcome falls back to the
    namespace's SteadfastPolicy `retention` rule, then the operator's default; none of them set: kept."""

    succeeded: Annotated[str, DurationCheck("retention.succeeded", exclusive=False, maximum=MAXIMUM)] | None = Field(
        None, description="After a TaskSaga Succeeded, or an ApprovalRequest Completed (Approved, without action)."
    )
    failed: Annotated[str, DurationCheck("retention.failed", exclusive=False, maximum=MAXIMUM)] | None = Field(
        None,
        description="After a TaskSaga Compensated, Failed or was Rejected, or an ApprovalRequest was Rejected or "
        "TimedOut. Paused, CompensationFailed and ActionFailed wait for a person and are never removed.",
    )

    def is_empty(self) -> bool:
        return self.succeeded is None and self.failed is None
