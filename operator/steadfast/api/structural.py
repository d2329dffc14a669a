"""Turn pydantic's JSON Schema into a Kubernetes structural schema, and check that one is structural.

Pydantic emits `$ref`/`$defs`, `anyOf [X, null]` for optionals, `title`s, `additionalProperties:
false` and JSON-Schema-2020 numeric exclusives; a CRD wants every node inline and typed. Anything
that cannot be expressed structurally (a real union) raises here instead of producing a CRD the API
server would refuse or, worse, silently prune.
"""

from __future__ import annotations

import copy
from typing import Any

from steadfast.api.schema import VALIDATIONS

Schema = dict[str, Any]

_DROP = {"title", "$defs", "$schema", "discriminator", "examples"}
_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
_ALLOWED = {
    "type", "format", "description", "default", "enum", "required", "properties", "items",
    "additionalProperties", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "minProperties", "maxProperties",
    "multipleOf", "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "x-kubernetes-map-type",
    "x-kubernetes-embedded-resource",
}  # fmt: skip


class SchemaError(ValueError):
    """The models use a construct a structural schema cannot express."""


def to_structural(schema: Schema) -> Schema:
    """Inline `$ref`s and normalise a pydantic JSON schema into structural OpenAPI v3."""
    defs: dict[str, Schema] = schema.get("$defs", {})
    return _convert(schema, defs, "")


def _resolve(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    """Replace a `$ref` (or single-branch allOf / optional anyOf) by its target, keeping sibling keys."""
    node = dict(node)
    target: Schema | None = None
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
    elif "allOf" in node:
        branches = node.pop("allOf")
        if len(branches) != 1:
            raise SchemaError(f"{path or '<root>'}: allOf with several branches is not structural")
        target = branches[0]
    for key in ("anyOf", "oneOf"):
        if key in node:
            branches = [b for b in node.pop(key) if b != {"type": "null"}]
            if len(branches) != 1:
                raise SchemaError(f"{path or '<root>'}: a union ({key}) is not structural; use CEL one-of")
            target = branches[0]
    if target is None:
        return node
    merged = _resolve(copy.deepcopy(target), defs, path)
    for key, value in node.items():
        if key == VALIDATIONS:
            merged[VALIDATIONS] = [*merged.get(VALIDATIONS, []), *value]
        else:  # the use site (its description, default) wins over the definition
            merged[key] = value
    return merged


def _convert(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    node = _resolve(node, defs, path)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "default" and (value is None or value == []):
            continue  # "unset"; the models default it, the stored object stays small
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _convert(value, defs, f"{path}[*]")
            # `false` is implied by pruning and forbidden in structural schemas
        elif key == "properties":
            out[key] = {name: _convert(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[*]")
        elif key == "uniqueItems":
            raise SchemaError(f"{path}: uniqueItems is not allowed in CRDs; use x-kubernetes-list-type: set")
        elif key == "type" and isinstance(value, list):
            raise SchemaError(f"{path}: a list of types is not structural")
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        kinds = {type(v) for v in out["enum"]}
        if kinds == {str}:
            out["type"] = "string"
    return out


def violations(schema: Schema, path: str = "") -> list[str]:
    """Why `schema` is not structural (empty when it is), in the API server's terms."""
    problems: list[str] = []
    where = path or "<root>"
    unknown = sorted(set(schema) - _ALLOWED)
    if unknown:
        problems.append(f"{where}: keys not allowed in a structural schema: {', '.join(unknown)}")
    free = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if "type" not in schema and not free and not schema.get("x-kubernetes-int-or-string"):
        problems.append(f"{where}: no type")
    elif "type" in schema and schema["type"] not in _TYPES:
        problems.append(f"{where}: type {schema['type']!r} is not one of {sorted(_TYPES)}")
    kind = schema.get("type")
    if kind == "array" and "items" not in schema:
        problems.append(f"{where}: array without items")
    if kind != "array" and "items" in schema:
        problems.append(f"{where}: items on a non-array")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{where}: properties and additionalProperties together")
    if kind != "object" and ("properties" in schema or "additionalProperties" in schema):
        problems.append(f"{where}: properties on a non-object")
    for name in schema.get("required", []):
        if name not in schema.get("properties", {}):
            problems.append(f"{where}: required field {name!r} is not a property")
    if schema.get("x-kubernetes-list-type") == "map":
        item = schema.get("items", {})
        for key in schema.get("x-kubernetes-list-map-keys", []):
            if key not in item.get("required", []) and "default" not in item.get("properties", {}).get(key, {}):
                problems.append(f"{where}: list map key {key!r} must be required or defaulted")
    for rule in schema.get(VALIDATIONS, []):
        if not rule.get("message"):
            problems.append(f"{where}: CEL rule {rule.get('rule')!r} has no message")
    for name, sub in schema.get("properties", {}).items():
        problems += violations(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        problems += violations(schema["items"], f"{path}[*]")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += violations(schema["additionalProperties"], f"{path}[*]")
    return problems


def unbounded(schema: Schema, path: str = "") -> list[str]:
    """Strings without maxLength/enum/format and arrays without maxItems: what inflates CEL cost estimates."""
    found: list[str] = []
    kind = schema.get("type")
    if kind == "string" and not ({"maxLength", "enum", "format"} & set(schema)):
        found.append(f"{path}: string without maxLength")
    if kind == "array" and "maxItems" not in schema:
        found.append(f"{path}: array without maxItems")
    for name, sub in schema.get("properties", {}).items():
        found += unbounded(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += unbounded(schema["items"], f"{path}[*]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += unbounded(schema["additionalProperties"], f"{path}[*]")
    return found
