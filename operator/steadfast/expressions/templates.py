"""Rendering strings with `$(...)` placeholders: every placeholder of a request in one sandbox batch."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from steadfast.expressions.language import OPEN, ExpressionError, placeholders
from steadfast.expressions.sandbox import Sandbox

Escape = Callable[[str], str]


def text_of(value: Any) -> str:
    """A value as it reads inside a string: strings as they are, everything else as JSON (true, 3, null)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def needs_rendering(texts: Sequence[str]) -> bool:
    return any(OPEN in text for text in texts)


def render(texts: Sequence[tuple[str, Escape | None]], variables: Mapping[str, Any], sandbox: Sandbox) -> list[Any]:
    """Each text with its placeholders replaced by their values (escaped by its `Escape`, if any).

    A text that is exactly one placeholder becomes the value itself (a number stays a number); `$$(` is a
    literal `$(`. The first failing placeholder raises ExpressionError naming it.
    """
    scope = frozenset(variables)
    found = [list(placeholders(text)) for text, _ in texts]
    sources = list(dict.fromkeys(p.source for places in found for p in places))
    results = dict(zip(sources, sandbox.evaluate([(s, scope) for s in sources], variables), strict=True))
    for source in sources:
        error = results[source].error
        if error is not None:
            raise ExpressionError(f"$({source}): {error}")
    out: list[Any] = []
    for (text, escape), places in zip(texts, found, strict=True):
        if len(places) == 1 and places[0].offset == 0 and len(text) == len(places[0].source) + len(OPEN) + 1:
            value = results[places[0].source].value
            out.append(escape(text_of(value)) if escape else value)
            continue
        pieces: list[str] = []
        at = 0
        for place in places:
            pieces.append(text[at : place.offset].replace("$" + OPEN, OPEN))
            value = text_of(results[place.source].value)
            pieces.append(escape(value) if escape else value)
            at = place.offset + len(OPEN) + len(place.source) + 1
        pieces.append(text[at:].replace("$" + OPEN, OPEN))
        out.append("".join(pieces))
    return out


def map_strings(value: Any, change: Callable[[str], Any]) -> Any:
    """JSON data with every string (keys first, then values, in order) passed through `change`.

    Keys stay strings. Bodies are at most 32 levels deep (the schema's limit), so recursion is safe.
    """
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {text_of(change(k)): map_strings(v, change) for k, v in value.items()}
    if isinstance(value, list):
        return [map_strings(v, change) for v in value]
    return value


def strings_in(value: Any) -> list[str]:
    """Every string of JSON data, in the order `map_strings` visits them."""
    found: list[str] = []

    def note(text: str) -> str:
        found.append(text)
        return text

    map_strings(value, note)
    return found
