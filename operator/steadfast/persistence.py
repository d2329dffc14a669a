"""Where kopf keeps what it has handled, chosen so that handling a resource costs no write of its own.

By default kopf patches every object at least three times on creation: a finalizer, progress annotations
and the last-handled configuration. Each patch is an API server write, a watch event back to every
watcher and an admission call. Here:

- the finalizer is set by the admission webhook on CREATE (steadfast.webhooks), so kopf finds it present;
- a kind whose spec the CRD makes immutable needs no diff base: there is no later change to diff. Once it
  has status and no retry of its start is pending, the resource counts as handled; before that, every event
  is its creation (starting is idempotent, so a repeat costs one refused gRPC call, not a twin instance).
  Its few mutable fields (`Kind.mutable_spec`: a saga's spec.repair) are the whole diff base, recorded only
  once one is set;
- progress annotations carry no "kopf-managed" marker: it only tells other kopf operators which prefix is
  ours, and writing it is what turned a handler's first success into a patch.

A handler that fails still records its retries in annotations, and kinds with field handlers keep their
last-handled configuration in an annotation, as kopf does. That record is a copy of the spec, and Kubernetes
holds all of an object's annotations together to 256 KiB: a resource whose record would not fit could never
be handled again (kopf's patch is refused), so admission refuses it first (`bookkeeping_problem`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

from steadfast.api.kinds import Kind

PREFIX = "steadfast.dev"
START = "start"  # the id of the handler that starts a resource's workflow (steadfast.binding)
LAST_HANDLED = "last-handled-configuration"
ANNOTATIONS_LIMIT = 256 * 1024  # Kubernetes: bytes of all of an object's annotations together, keys and values
# Room kept for the progress records kopf writes while handlers run or retry (a few hundred bytes each).
PROGRESS_RESERVE = 4 * 1024
_PROGRESS_FIELDS = frozenset(kopf.ProgressRecord.__annotations__)


class ProgressStorage(kopf.AnnotationsProgressStorage):
    def __init__(self) -> None:
        super().__init__(prefix=PREFIX)

    def store(self, *, key: Any, record: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        super().store(key=key, record=record, body=body, patch=patch)
        marker = f"{PREFIX}/kopf-managed"
        annotations = patch.get("metadata", {}).get("annotations", {})
        if marker in annotations and marker not in body.metadata.annotations:
            del annotations[marker]
            if not annotations:  # an empty stanza left behind would still make kopf send the patch
                del patch["metadata"]["annotations"]
                if not patch["metadata"]:
                    del patch["metadata"]


class DiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    def __init__(self, immutable: Iterable[Kind], progress: kopf.ProgressStorage) -> None:
        super().__init__(prefix=PREFIX, key="last-handled-configuration")
        self._immutable = {(k.api_version, k.kind): k.mutable_spec for k in immutable if k.spec_immutable}
        self._progress = progress

    def _is_immutable(self, body: kopf.Body) -> bool:
        return (body.get("apiVersion"), body.get("kind")) in self._immutable

    def _mutable(self, body: kopf.Body) -> tuple[str, ...]:
        return self._immutable.get((str(body.get("apiVersion")), str(body.get("kind"))), ())

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        # No handler follows a change of an immutable kind but of its few mutable fields (a saga's spec.repair),
        # so its essence is just those: kopf then deep-copies next to nothing on each of the kind's watch events
        # (most of them are our own status writes coming back), and the record kept in annotations stays small.
        # (kopf passes the fields of the kind's field handlers as `extra_fields`: for an immutable kind those are
        # its mutable fields, already all of the essence.)
        if self._is_immutable(body) and (self._mutable(body) or not extra_fields):
            spec = body.get("spec") or {}
            kept = {name: spec[name] for name in self._mutable(body) if spec.get(name) is not None}
            return cast(kopf.BodyEssence, {"spec": kept} if kept else {})
        return super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if not self._is_immutable(body):
            return super().fetch(body=body)
        if not body.get("status") or self._progress.fetch(key=cast(Any, START), body=body) is not None:
            return None  # not started, or its start failed and kopf is retrying it (a status says why)
        if not self._mutable(body):
            return self.build(body=body)
        # None recorded (started by a release that kept none): nothing of the mutable fields was handled yet.
        return super().fetch(body=body) or cast(kopf.BodyEssence, {})

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        # An immutable kind's record is written only once a mutable field is set (a decision): an empty one is
        # what `fetch` assumes anyway, and writing it would cost every resource a patch at its creation.
        if not self._is_immutable(body) or (self._mutable(body) and essence):
            super().store(body=body, patch=patch, essence=essence)


def annotation_bytes(kind: Kind, obj: Mapping[str, Any]) -> int:
    """The bytes `obj`'s annotations would hold once the operator has recorded it as handled.

    Computed by letting this module's own storage write its record into a patch, as kopf does after a handler.
    """
    body = kopf.Body(cast(Any, obj))
    storage = DiffBaseStorage([kind], ProgressStorage())
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    annotations = {**((obj.get("metadata") or {}).get("annotations") or {})}
    annotations.update(patch.get("metadata", {}).get("annotations", {}))
    return sum(len(k.encode()) + len(str(v).encode()) for k, v in annotations.items() if v is not None)


def bookkeeping_problem(
    kind: Kind,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    *,
    defined: bool,
    added: Mapping[str, str] | None = None,
) -> str | None:
    """Why `new` (with the `added` annotations admission is about to stamp) cannot be kept track of, if it cannot.

    `defined`: a creation or a change of the spec, which must leave PROGRESS_RESERVE for kopf's progress
    records (having no marker, they are copied into its record too); those present now count against it.
    Any other update (`old` given) is refused only if it makes the bookkeeping grow past the limit itself:
    kopf's own progress records may use the reserve, and an edit that shrinks the bookkeeping or leaves it as
    it was (removing the finalizer) must pass even for a resource admitted before this check existed.
    """
    if added:
        meta = dict(new.get("metadata") or {})
        meta["annotations"] = {**(meta.get("annotations") or {}), **added}
        new = {**new, "metadata": meta}
    reserve = PROGRESS_RESERVE if defined else 0
    size = annotation_bytes(kind, new)
    progress = size - annotation_bytes(kind, _without_progress(new)) if defined else 0
    if size - min(progress, reserve) + reserve <= ANNOTATIONS_LIMIT:
        return None
    if not defined and old is not None and size <= annotation_bytes(kind, old):
        return None
    spec = len(json.dumps(new.get("spec") or {}, separators=(",", ":")).encode())
    copy = "" if kind.spec_immutable else f", with the copy of the spec the operator keeps in {PREFIX}/{LAST_HANDLED},"
    room = f" and {reserve} bytes kept for its progress records" if reserve else ""
    return (
        f"this {kind.kind} is too large for the operator to keep track of: its annotations would hold {size} bytes"
        f"{copy}{room}, over Kubernetes' limit of {ANNOTATIONS_LIMIT} bytes (256 KiB) for all annotations of an "
        f"object together; the spec is {spec} bytes of JSON: make it smaller (kubectl apply also keeps a copy of the "
        "whole object, in kubectl.kubernetes.io/last-applied-configuration, unless --server-side)"
    )


def _without_progress(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """`obj` without the progress records kopf keeps in annotations under our prefix."""

    def progress(key: str, value: Any) -> bool:
        if not key.startswith(f"{PREFIX}/") or not isinstance(value, str):
            return False
        try:
            record = json.loads(value)
        except ValueError:
            return False
        return isinstance(record, dict) and "started" in record and set(record) <= _PROGRESS_FIELDS

    meta = dict(obj.get("metadata") or {})
    meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items() if not progress(k, v)}
    return {**obj, "metadata": meta}
