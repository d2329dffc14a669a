"""Output of `steadfast list`: a table for people, JSON records for programs, kind/name lines for bulk verbs."""

from __future__ import annotations

import json
from collections.abc import Sequence

from pydantic import TypeAdapter

from steadfast.api.kinds import kind_named
from steadfast.fleet.record import FleetRecord
from steadfast.text import shown

FORMATS = ("table", "json", "name")
_RECORDS = TypeAdapter(list[FleetRecord])


def age(seconds: int | None) -> str:
    """kubectl's short age: 45s, 12m, 3h, 9d."""
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _waits(record: FleetRecord) -> str:
    return "; ".join(part for part in (record.waiting_for, record.detail) if part)


def table(records: Sequence[FleetRecord], *, namespaces: bool) -> str:
    """Aligned columns; NAMESPACE only when listing several namespaces. Text users wrote is escaped (`shown`)."""
    header = ["KIND", *(["NAMESPACE"] if namespaces else []), "NAME", "PHASE", "AGE", "WAITS FOR / DETAIL"]
    rows = [
        [
            r.kind,
            *([r.namespace] if namespaces else []),
            r.name,
            r.phase or "-",
            age(r.age_seconds),
            shown(_waits(r)),
        ]
        for r in records
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def as_json(records: Sequence[FleetRecord]) -> str:
    """A JSON list of records with camelCase field names (FleetRecord)."""
    data = _RECORDS.dump_python(list(records), mode="json", by_alias=True)
    return json.dumps(data, indent=2, ensure_ascii=False)


def names(records: Sequence[FleetRecord]) -> str:
    """`tasksaga/name` lines, as `kubectl get -o name` prints them (without the namespace, like kubectl)."""
    return "\n".join(f"{kind_named(r.kind).singular}/{r.name}" for r in records)


def render(records: Sequence[FleetRecord], output: str, *, namespaces: bool) -> str:
    if output == "json":
        return as_json(records)
    if output == "name":
        return names(records)
    return table(records, namespaces=namespaces)
