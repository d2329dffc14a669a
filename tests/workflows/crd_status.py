"""Every status a workflow reports, checked against the status schema of the CRD the API server has.

The API server silently prunes fields its schema does not know and refuses wrong types, so a snapshot that
does not fit would be lost in a cluster without any test noticing. The schema is the one `steadfast crds`
writes (generated from the pydantic models); a `null` in a snapshot is a merge patch's "remove", so it is
dropped before checking, as the API server would.
"""

from __future__ import annotations

import functools
from typing import Any

from jsonschema import Draft7Validator

from steadfast.api import crd
from steadfast.api.kinds import KINDS, SCHEDULE_KINDS


def _closed(schema: Any) -> Any:
    """Objects with known properties take no others (what pruning means), unless the schema keeps unknowns."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@functools.cache
def _validator(kind: str) -> Draft7Validator:
    found = next(k for k in (*KINDS, *SCHEDULE_KINDS) if k.kind == kind)
    return Draft7Validator(_closed(crd.open_api_schema(found)["properties"]["status"]))


def status_problems(kind: str, status: dict[str, Any]) -> list[str]:
    """Why `status` would not be stored as it is on a `kind` resource (empty when it would)."""
    errors = _validator(kind).iter_errors(_without_nulls(status))
    return sorted(f"status.{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)
