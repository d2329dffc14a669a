"""HealthMonitor: an eternal check, rare while healthy and frequent while not, alerting once per transition.

The spec may change while the monitor runs (new intervals apply from the next sleep), so unlike a
TaskSaga it has no immutability rule.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from steadfast.api.action import Action, refuse_expressions
from steadfast.api.common import ApiModel, StatusBase, Timestamp
from steadfast.api.duration import DurationCheck
from steadfast.api.object_action import ObjectOperation
from steadfast.expressions.language import ALERT, MAX_LENGTH, MONITOR, ExpressionError, compile_expression, responding

MAX_CONDITIONS = 16


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class Alert(ApiModel):
    """How transitions are announced. A Kubernetes Event is always emitted; the webhook is extra."""

    webhook: Action | None = Field(
        None,
        description=(
            "Called on each transition. Without an http.body it sends monitor, namespace, state, severity, "
            "lastError, checkCount; placeholders see monitor.* and alert.state, alert.severity, alert.lastError."
        ),
    )
    severity: Severity = Field(Severity.WARNING, description="Severity carried by alerts.")
    send_on_recovery: bool = Field(False, description="Also alert when the target becomes healthy again.")


class HealthMonitorSpec(ApiModel):
    """What to check and how often."""

    target: Action = Field(
        description=(
            "The check; success (and every condition) means healthy. Placeholders see monitor.name, "
            "monitor.namespace, monitor.checkCount."
        )
    )
    conditions: list[Annotated[str, Field(min_length=1, max_length=MAX_LENGTH)]] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description=(
            "CEL conditions that must all hold as well, over response.status, response.headers, response.body "
            'and response.durationMs, e.g. response.body.status == "UP", response.durationMs < 300.'
        ),
    )
    healthy_interval: Annotated[str, DurationCheck("healthyInterval", minimum="1s", exclusive=False)] = Field(
        "60m", description="Wait between checks while healthy (at least 1s)."
    )
    unhealthy_interval: Annotated[str, DurationCheck("unhealthyInterval", minimum="1s", exclusive=False)] = Field(
        "5m", description="Wait between checks while unhealthy (at least 1s)."
    )
    failure_threshold: int = Field(
        1, ge=1, le=1000, description="Consecutive failures before the state flips to unhealthy."
    )
    success_threshold: int = Field(
        1, ge=1, le=1000, description="Consecutive successes before the state flips back to healthy."
    )
    alert: Alert | None = Field(None, description="Alerting on transitions.")
    suspend: bool = Field(False, description="Stop checking until set back to false; counters are kept.")

    @model_validator(mode="after")
    def _expressions(self) -> HealthMonitorSpec:
        problems = self.target.expression_problems(MONITOR, "spec.target")
        watched = self.target.kubernetes
        if watched is not None and watched.operation != ObjectOperation.WAIT:
            problems.append(
                "spec.target.kubernetes.operation: a monitor only reads its target; use wait (healthy while "
                "successWhen holds)"
            )
        for n, condition in enumerate(self.conditions):
            try:
                compile_expression(condition, responding(MONITOR, self.target.answer))
            except ExpressionError as exc:
                problems.append(f"spec.conditions[{n}]: {exc}")
        problems += self.target.sealed_problems(
            MONITOR, [(f"spec.conditions[{n}]", c) for n, c in enumerate(self.conditions)]
        )
        if self.alert is not None and self.alert.webhook is not None:
            problems += self.alert.webhook.expression_problems(ALERT, "spec.alert.webhook")
        refuse_expressions(problems)
        return self


class MonitorPhase(StrEnum):
    UNKNOWN = "Unknown"
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    SUSPENDED = "Suspended"


class HealthMonitorStatus(StatusBase):
    """The monitor's state after its last check."""

    healthy: bool | None = Field(None, description="The current state; unset before the first verdict.")
    phase: MonitorPhase | None = Field(None, description="Unknown, Healthy, Unhealthy or Suspended.")
    check_count: int = Field(0, ge=0, description="Checks made since creation.")
    consecutive_failures: int = Field(0, ge=0, description="Failed checks in a row.")
    consecutive_successes: int = Field(0, ge=0, description="Successful checks in a row.")
    last_check_time: Timestamp | None = Field(None, description="When the last check finished.")
    next_check_time: Timestamp | None = Field(None, description="When the next check is due.")
    last_transition_time: Timestamp | None = Field(None, description="When the state last flipped.")
    last_error: str | None = Field(None, description="Why the last failed check failed.")
    failed_condition: str | None = Field(
        None, description='The condition the last check failed, with the value seen: x == "UP" (was "DOWN").'
    )
    alerts_sent: int = Field(0, ge=0, description="Alerts sent since creation.")
    continued_as_new: int = Field(
        0, ge=0, description="Times the workflow continued as new (the generation of the run)."
    )
