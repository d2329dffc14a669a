"""What a repair command asks of one resource, and what came of it: pure, no I/O.

A decision is a new value of `spec.repair`, written with a JSON merge patch as the kubeconfig user. The
admission webhook, not this module, judges whether it fits the resource's phase and who may make it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from steadfast.api.kinds import REPAIRED_BY  # stamped by the mutating webhook from the API server's authentication

Action = Literal["Retry", "Skip", "Compensate", "Resolve"]


class Decision(BaseModel):
    """The value of `spec.repair` a command writes (`None`: the field is absent)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action
    step: str | None = None
    reason: str | None = None

    def merge_patch(self) -> dict[str, Any]:
        """The JSON merge patch that makes `spec.repair` exactly this decision.

        Unset fields are sent as null, which a merge patch reads as "remove": a step or reason left by an
        earlier decision must not carry over into this one.
        """
        return {"spec": {"repair": self.model_dump()}}

    def as_stored(self) -> dict[str, Any]:
        """`spec.repair` as the API server stores it after the patch."""
        return self.model_dump(exclude_none=True)


def annotation(obj: dict[str, Any], name: str) -> str | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(name)
    return None if value is None else str(value)


def already_carries(obj: dict[str, Any], decision: Decision) -> bool:
    """True when `obj`'s spec.repair is this exact decision: the patch would change nothing, so the API
    server would see no new generation and the operator no new decision."""
    return bool(((obj.get("spec") or {}).get("repair") or {}) == decision.as_stored())


class Outcome(BaseModel):
    """What came of a decision on one resource: done (recorded, with who it was recorded for) or refused."""

    model_config = ConfigDict(frozen=True)

    name: str  # namespace/name
    done: bool
    message: str

    def line(self) -> str:
        return f"{self.name}: {self.message}"


def recorded(name: str, decision: Decision, answer: dict[str, Any]) -> Outcome:
    """The outcome of a patch the API server accepted; `answer` is the object it returned.

    An API server whose CRD has no `spec.repair` (CRDs older than the operator) accepts the patch and prunes the
    field: the answer then does not carry the decision, and nothing was decided.
    """
    if not already_carries(answer, decision):
        return Outcome(
            name=name,
            done=False,
            message="the API server accepted the patch but did not keep spec.repair: its CRD has no such field "
            "(install the CRDs of this release)",
        )
    who = annotation(answer, REPAIRED_BY) or "?"
    generation = (answer.get("metadata") or {}).get("generation")
    step = f" of step {decision.step}" if decision.step else ""
    at = f" (generation {generation})" if generation is not None else ""
    return Outcome(name=name, done=True, message=f"{decision.action}{step} recorded for {who}{at}")


def unchanged(name: str, obj: dict[str, Any]) -> Outcome:
    """The outcome when the resource already carries the decision: nothing to send."""
    by = annotation(obj, REPAIRED_BY) or "someone"
    return Outcome(
        name=name,
        done=False,
        message=(
            f"already carries this exact decision (recorded for {by}); the API server would see no change. "
            "Give a (different) --reason of your own."
        ),
    )


def summary(outcomes: list[Outcome]) -> tuple[str, int]:
    """The closing line of a bulk run and the exit code: 0 when every decision was recorded, else 1."""
    done = sum(1 for o in outcomes if o.done)
    refused = len(outcomes) - done
    return f"{done} done, {refused} refused", 0 if refused == 0 else 1
