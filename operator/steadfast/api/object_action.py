"""The `kubernetes` action: apply, patch, delete or wait for one object, as the user who asked.

Only the model lives here; running it (impersonation, discovery, shared watches) is the operator's
`objects` and `waits` modules. The object is named in full (apiVersion, kind, metadata.name): a step must
touch the same object on every retry and after a restart, so generated names are refused.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, JsonValue, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from steadfast.api import kube_names
from steadfast.api.common import MAX_BODY_DEPTH, ApiModel, json_depth
from steadfast.api.duration import DurationCheck
from steadfast.expressions.language import (
    MAX_LENGTH,
    OPEN,
    problems_in,
    sources_in,
    strings_of,
)

# Defined here rather than imported from api.action, which imports this module.
_NAME_MAX = 253


class ObjectOperation(StrEnum):
    APPLY = "apply"
    PATCH = "patch"
    DELETE = "delete"
    WAIT = "wait"


_NAMED = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "required": ["apiVersion", "kind", "metadata"],
    "properties": {
        "apiVersion": {"type": "string", "minLength": 1, "maxLength": _NAME_MAX},
        "kind": {"type": "string", "minLength": 1, "maxLength": 63},
        "metadata": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": _NAME_MAX},
                "namespace": {"type": "string", "maxLength": 63},
            },
        },
    },
}

KubeObject = Annotated[dict[str, JsonValue], WithJsonSchema(_NAMED)]

# Secrets are never read or written by these actions: their data would reach conditions, outputs and status.
# Header values take a Secret through `valueFrom` instead. Admission refuses the literal spelling early; the
# operator refuses the resource itself (group "", resource "secrets") after rendering and discovery, whatever
# the spelling (steadfast.objects).
REFUSED_KINDS = frozenset({("v1", "Secret")})
SECRETS_REFUSED = "kubernetes actions do not touch Secrets; send a Secret's value with http valueFrom"

# What a condition or an output over the object sees.
OBJECT = "object"


class ObjectAction(ApiModel):
    """One Kubernetes object: apply it (server-side apply), merge-patch it, delete it, or wait for it.

    Requests impersonate the resource's creator (recorded at admission), so RBAC decides what may be done
    exactly as for `kubectl`. The object goes to the resource's namespace unless metadata.namespace names
    another the creator may write to. `successWhen` makes the action wait (watching, not polling) until it
    holds over `object`; `failureWhen` ends the wait as a failure; `timeout` bounds the wait.
    """

    operation: ObjectOperation = Field(ObjectOperation.APPLY, description="apply, patch, delete or wait.")
    object: KubeObject = Field(
        description=(
            "The object: apiVersion, kind and metadata.name always; for apply the whole manifest, for patch the "
            "fields to merge. Strings may hold $(expression) placeholders."
        )
    )
    success_when: str | None = Field(
        None,
        max_length=MAX_LENGTH,
        description=(
            "CEL condition over the object that means done, e.g. object.status.succeeded >= 1; the action waits "
            "until it holds (required for wait)."
        ),
    )
    failure_when: str | None = Field(
        None,
        max_length=MAX_LENGTH,
        description="CEL condition over the object that means it will not succeed, e.g. object.status.failed > 0.",
    )
    timeout: Annotated[str, DurationCheck("kubernetes.timeout", maximum="168h")] = Field(
        "5m", description="How long to wait for successWhen, e.g. 10m."
    )

    @property
    def api_version(self) -> str:
        return str(self.object.get("apiVersion") or "")

    @property
    def kind(self) -> str:
        return str(self.object.get("kind") or "")

    @property
    def metadata(self) -> dict[str, Any]:
        found = self.object.get("metadata")
        return found if isinstance(found, dict) else {}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or "")

    def templates(self, where: str) -> list[tuple[str, str]]:
        return [(f"{where}.object{path}", text) for path, text in strings_of(self.object)]

    def expression_problems(self, scope: frozenset[str], where: str) -> list[str]:
        conditions = [(f"{where}.successWhen", self.success_when), (f"{where}.failureWhen", self.failure_when)]
        return problems_in(self.templates(where), conditions, scope | {OBJECT})

    def expression_sources(self) -> list[str]:
        return sources_in(self.templates(""), [self.success_when, self.failure_when])

    @model_validator(mode="before")
    @classmethod
    def _depth(cls, data: Any) -> Any:
        if isinstance(data, dict) and json_depth(data.get("object")) > MAX_BODY_DEPTH:
            raise PydanticCustomError(
                "body_depth", f"kubernetes.object is nested more than {MAX_BODY_DEPTH} levels deep"
            )
        return data

    @model_validator(mode="after")
    def _named(self) -> ObjectAction:
        meta = self.metadata
        if not self.api_version or not self.kind or not isinstance(self.object.get("metadata"), dict):
            raise PydanticCustomError("object", "kubernetes.object needs apiVersion, kind and metadata.name")
        if not isinstance(meta.get("name"), str) or not meta["name"]:
            raise PydanticCustomError(
                "object",
                "kubernetes.object.metadata.name is required: a step must reach the same object on every retry "
                "(generateName is not supported)",
            )
        templated = frozenset(f for f in kube_names.FIELDS if OPEN in str(kube_names.field_value(self.object, f) or ""))
        found = kube_names.problems(self.object, "kubernetes.object", skip=templated)
        if found:
            raise PydanticCustomError("object", "; ".join(found))
        if (self.api_version, self.kind) in REFUSED_KINDS:
            raise PydanticCustomError("object", SECRETS_REFUSED)
        if self.operation == ObjectOperation.WAIT and self.success_when is None:
            raise PydanticCustomError("object", "kubernetes.operation wait needs successWhen")
        if self.operation in (ObjectOperation.DELETE, ObjectOperation.WAIT):
            extra = sorted(set(self.object) - {"apiVersion", "kind", "metadata"})
            if extra or set(meta) - {"name", "namespace"}:
                raise PydanticCustomError(
                    "object",
                    "kubernetes.object for {op} names an object only (apiVersion, kind, metadata.name and "
                    "metadata.namespace), not {extra}",
                    {"op": self.operation.value, "extra": ", ".join(extra) or "other metadata"},
                )
        return self
