"""Validation errors as the one-line messages users see (`spec.steps[1].name: ...`), like kubectl's."""

from __future__ import annotations

from pydantic import ValidationError


def _path(loc: tuple[int | str, ...], prefix: str) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def describe(exc: ValidationError, prefix: str = "spec") -> list[str]:
    """One `path: message` line per error, with wire (camelCase) field names.

    A model-wide error whose message already names its field (an expression's, `spec.steps[0].outputs.id: ...`)
    is shown as it is, not behind a second `spec: `.
    """
    out = []
    for e in exc.errors(include_url=False):
        message = str(e["msg"])
        named = not e["loc"] and prefix and message.startswith((f"{prefix}.", f"{prefix}["))
        out.append(message if named else f"{_path(tuple(e['loc']), prefix)}: {message}")
    return out


def invalid_spec(exc: ValidationError) -> str:
    """The one message for a spec the models refuse: admission's refusal and the Stalled condition's message."""
    return "; ".join(describe(exc, prefix="spec"))


class Unstartable(ValueError):
    """A resource that cannot start as it is (its template is gone, its parameters no longer fit): the operator
    marks it Stalled with `reason` and runs nothing."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
