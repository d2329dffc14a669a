"""Kubernetes-style durations (`30s`, `5m`, `1h30m`, `500ms`): one grammar for pydantic and the CRD.

The wire value stays the string the user wrote, so objects round-trip unchanged; code that needs a
number calls `parse_duration`. The grammar is the subset of Go's `time.ParseDuration` (which CEL's
`duration()` uses) without signs and `µs`, so the API server and the models accept the same text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from steadfast.api.schema import VALIDATIONS

DURATION_PATTERN = r"^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$"  # no backslash: it is also a CEL string
DURATION_MAX_LENGTH = 32
_WHOLE = re.compile(DURATION_PATTERN)
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
_GO_MAX_NANOS = 2**63 - 1
EXAMPLES = "such as 30s, 5m, 1h30m or 500ms"


def parse_duration(text: str) -> timedelta:
    """Parse `1h30m`-style text; raises ValueError on anything CEL's `duration()` would refuse."""
    if len(text) > DURATION_MAX_LENGTH or not _WHOLE.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration {EXAMPLES}")
    seconds = sum((Decimal(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text)), Decimal(0))
    if seconds * 1_000_000_000 > _GO_MAX_NANOS:  # Go (and CEL) keep durations in int64 nanoseconds
        raise ValueError(f"{text!r} is longer than the longest duration, about 2562047h")
    return timedelta(microseconds=int((seconds * 1_000_000).to_integral_value()))


def format_duration(value: timedelta) -> str:
    """The shortest `1h2m3.5s`-style text for `value` (what Go's Duration.String prints)."""
    micros = value // timedelta(microseconds=1)
    if micros < 0:
        raise ValueError("durations are never negative")
    if micros == 0:
        return "0s"
    if micros < 1_000_000:
        return f"{micros / 1000:g}ms" if micros % 1000 == 0 else f"{micros}us"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    secs = Decimal(rest) / Decimal(1_000_000)
    return out + f"{secs.normalize():f}s"


@dataclass(frozen=True)
class DurationCheck:
    """Validates a duration string between `minimum` and `maximum`, and emits the same CRD rules.

    `field` is the wire name used in messages; `minimum="0s"` with `exclusive=True` means "positive".
    """

    field: str
    minimum: str = "0s"
    exclusive: bool = True
    maximum: str = "8760h"

    def _limits_message(self) -> str:
        low = f"longer than {self.minimum}" if self.exclusive else f"at least {self.minimum}"
        return f"{self.field} must be a duration {low} and at most {self.maximum}, {EXAMPLES}"

    def cel_rule(self) -> str:
        op = ">" if self.exclusive else ">="
        # The matches() guard turns malformed text into this message instead of a conversion error.
        return (
            f"self.matches('{DURATION_PATTERN}') && "
            f"duration(self) {op} duration('{self.minimum}') && "
            f"duration(self) <= duration('{self.maximum}')"
        )

    def validate(self, value: str) -> str:
        try:
            parsed = parse_duration(value)
        except ValueError:
            raise PydanticCustomError(
                "duration",
                "{field} must be a duration {examples}, not {value}",
                {"field": self.field, "value": repr(value), "examples": EXAMPLES},
            ) from None
        low = parse_duration(self.minimum)
        too_low = parsed <= low if self.exclusive else parsed < low
        if too_low or parsed > parse_duration(self.maximum):
            raise PydanticCustomError("duration_range", self._limits_message())
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.validate, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = dict(handler(schema))
        out.update(pattern=DURATION_PATTERN, maxLength=DURATION_MAX_LENGTH)
        out[VALIDATIONS] = [
            *out.get(VALIDATIONS, []),
            {"rule": self.cel_rule(), "message": self._limits_message()},
        ]
        return out
