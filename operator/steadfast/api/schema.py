"""Annotations that put Kubernetes schema extensions on pydantic fields and models.

The pydantic models are the only description of the API, so anything the CRD needs beyond plain
JSON Schema (CEL rules, list types) is attached to the models here and carried into the generated
JSON schema, from which `crd.py` builds the structural CRD schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

VALIDATIONS = "x-kubernetes-validations"


@dataclass(frozen=True)
class Cel:
    """One CEL rule for `x-kubernetes-validations`; the pydantic side must enforce the same rule.

    `message` is what kubectl shows after the field path, so it names the field in words users
    know. `reason` and `field_path` follow the apiextensions/v1 ValidationRule fields.
    """

    rule: str
    message: str
    reason: str | None = None
    field_path: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.reason:
            out["reason"] = self.reason
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = dict(handler(core_schema))
        schema[VALIDATIONS] = [*schema.get(VALIDATIONS, []), self.as_dict()]
        return schema


@dataclass(frozen=True)
class KubeSchema:
    """Extra schema keys for one field, e.g. `x-kubernetes-list-type`."""

    extra: dict[str, Any] = field(default_factory=dict)

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = dict(handler(core_schema))
        schema.update(self.extra)
        return schema


def rules(*cels: Cel) -> dict[str, Any]:
    """Model-level CEL rules, for `ConfigDict(json_schema_extra=rules(...))`."""
    return {VALIDATIONS: [c.as_dict() for c in cels]}


LIST_SET = KubeSchema({"x-kubernetes-list-type": "set"})


def list_map(*keys: str) -> KubeSchema:
    """A list the API server treats as a map keyed by `keys`: it refuses duplicate keys natively."""
    return KubeSchema({"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)})


def unchanged(name: str, *, optional: bool) -> str:
    """A CEL transition clause: field `name` of `self` equals that of `oldSelf`, absence included."""
    if not optional:
        return f"self.{name} == oldSelf.{name}"
    return f"(has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name}))"
