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
    """One `path: message` line per error, with wire (camelCase) field names."""
    return [f"{_path(tuple(e['loc']), prefix)}: {e['msg']}" for e in exc.errors(include_url=False)]
