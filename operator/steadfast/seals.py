"""Seals: what admission recorded, made unforgeable with a key only the operator holds.

The creator and decider annotations are readable text that anyone who may write the resource can also type, and
admission does not run everywhere (a webhook's namespaceSelector, a failurePolicy of Ignore, `--no-webhooks`).
So the identity the operator acts on is never the annotation itself: the mutating webhook also writes a seal, an
HMAC-SHA256 over what it vouches for (who, which resource, which spec, when), with a key kept in a Secret that
only the operator (and cluster admins) can read. The operator believes a stamp only when its seal verifies
against the resource as it is now; a resource without a valid seal has no known creator, and nothing that acts
as a creator runs for it.

What a seal binds, so that it cannot be moved:
- the kind, namespace and name (a copy onto another resource fails);
- a digest of the spec as admitted (a copy onto the same name with another spec fails; an ApprovalRequest's
  decision and any resource's repair decision are left out, each is sealed on its own);
- at CREATE, the issue time, which must lie within `WINDOW` of the creationTimestamp the API server set (an old
  seal cannot be replayed onto a re-created resource of the same name and spec later);
- at UPDATE (a HealthMonitor's restamp, a decision, a repair decision), the resource's UID and the generation
  the update produces (an older seal of the same resource no longer matches). A TaskSaga's creator seal binds no
  generation: each repair decision makes a new one, and the spec digest already binds what it was created with.

The same key makes the undo mark of Kubernetes actions (`mark`) unforgeable: a value derived from a saga's UID
alone could be computed, and planted, by anyone who can read the saga.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

WINDOW = 120  # seconds between a CREATE seal's issue and the API server's creationTimestamp
KEY_BYTES = 32
KEY_FIELD = "key"  # the Secret's data key
_APR = "ApprovalRequest"
_SAGA = "TaskSaga"
# Spec fields sealed apart from the creator's spec digest (each change is a decision with a seal of its own).
_DECIDED = {_APR: ("decision", "repair"), _SAGA: ("repair",)}


class Sealed(BaseModel):
    """What a seal vouches for. Short field names: it lives in an annotation of every resource."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["creator", "decision", "gate", "repair"]
    kind: str
    ns: str
    name: str = ""  # "" when the resource was created with generateName (no name yet at admission)
    uid: str = ""  # "" at CREATE (the API server assigns it after mutating admission)
    gen: int = 0  # the generation the sealed write produces; 0: not bound
    user: str = ""
    groups: list[str] = []
    spec: str = ""  # spec_digest of the spec as admitted
    at: int = 0  # when it was issued (seconds since the epoch)
    approved: bool | None = None  # a decision's verdict
    decision: str = ""  # a decision's (or a repair decision's) digest
    gate_of: str = ""  # role "gate": the UID of the TaskSaga whose approval gate this request is


class SealError(Exception):
    """The seal is missing, forged, or does not match the resource; the message says which."""


class Sealer:
    """Signs and checks seals with one key; the process has one (`SEALER`), loaded by `steadfast run`."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key

    @property
    def ready(self) -> bool:
        return self._key is not None

    def use(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a seal key needs at least 16 bytes")
        self._key = key

    def _mac(self, message: bytes) -> bytes:
        if self._key is None:
            raise SealError("the operator has no seal key loaded")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def seal(self, sealed: Sealed) -> str:
        payload = sealed.model_dump_json(exclude_defaults=True).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def open(self, token: str | None) -> Sealed:
        """The sealed record, if the token was made with this key; SealError otherwise."""
        if not token:
            raise SealError("no seal")
        payload_text, _, mac_text = str(token).partition(".")
        try:
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except ValueError as exc:
            raise SealError("the seal is malformed") from exc
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise SealError("the seal was not made by this operator (forged or copied from another cluster)")
        try:
            return Sealed.model_validate_json(payload)
        except ValidationError as exc:
            raise SealError("the seal is malformed") from exc

    def mark(self, text: str) -> str:
        """An unforgeable mark of `text` (e.g. a step's idempotency key), for annotations on users' objects."""
        return "sm-" + self._mac(b"mark:" + text.encode()).hex()[:40]


SEALER = Sealer()


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from exc


def digest(value: Any) -> str:
    """A stable digest of JSON data (key order and spacing do not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def spec_digest(kind: str, spec: Mapping[str, Any] | None) -> str:
    """The digest a creator seal binds: the whole spec, but the decisions people add later (sealed apart)."""
    data = dict(spec or {})
    for name in _DECIDED.get(kind, ()):
        data.pop(name, None)
    return digest(data)


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _created_at(meta: Mapping[str, Any]) -> float | None:
    value = meta.get("creationTimestamp")
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def check_binding(sealed: Sealed, body: Mapping[str, Any], *, spec: str | None = None, generation: bool = True) -> None:
    """Refuse (SealError) a seal that does not belong to `body` as it is now (`generation`: bound, if sealed)."""
    meta = _meta(body)
    if sealed.kind != body.get("kind"):
        raise SealError(f"the seal is for a {sealed.kind}, not a {body.get('kind')}")
    if sealed.ns != (meta.get("namespace") or ""):
        raise SealError("the seal is for another namespace")
    name = str(meta.get("name") or "")
    if sealed.name:
        if sealed.name != name:
            raise SealError("the seal is for another resource")
    elif not (meta.get("generateName") and name.startswith(str(meta.get("generateName")))):
        raise SealError("the seal is for another resource")
    if spec is not None and sealed.spec != spec:
        raise SealError("the spec is not the one admission sealed (changed without Steadfast's admission)")
    if sealed.uid:
        if sealed.uid != meta.get("uid"):
            raise SealError("the seal is for another resource (UID)")
    else:
        created = _created_at(meta)
        if created is None or abs(created - sealed.at) > WINDOW:
            raise SealError("the seal was not made when this resource was created")
    if generation and sealed.gen and sealed.gen != int(meta.get("generation") or 0):
        raise SealError("the seal is for another generation of this resource")


def creator_seal(
    kind: str,
    new: Mapping[str, Any] | None,
    *,
    namespace: str,
    user: str,
    groups: list[str],
    now: float,
    old: Mapping[str, Any] | None = None,
    role: Literal["creator", "gate"] = "creator",
    gate_of: str = "",
) -> str:
    """The seal admission writes for the creator (or, with `old`, a HealthMonitor's restamp at a spec change)."""
    meta = _meta(new or {})
    old_meta = _meta(old or {})
    generation = int(old_meta.get("generation") or 0) + 1 if old else (0 if kind in _DECIDED else 1)
    return SEALER.seal(
        Sealed(
            role=role,
            kind=kind,
            ns=namespace,
            name=str(meta.get("name") or old_meta.get("name") or ""),
            uid=str(old_meta.get("uid") or ""),
            gen=generation,
            user=user,
            groups=sorted(groups),
            spec=spec_digest(kind, (new or {}).get("spec")),
            at=int(now),
            gate_of=gate_of,
        )
    )


def decision_seal(old: Mapping[str, Any], new: Mapping[str, Any], *, user: str, now: float) -> str:
    """The seal admission writes with a decision: who decided what, on which request, at which generation."""
    meta = _meta(old)
    decision = (new.get("spec") or {}).get("decision") or {}
    return SEALER.seal(
        Sealed(
            role="decision",
            kind=_APR,
            ns=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            gen=int(meta.get("generation") or 0) + 1,
            user=user,
            at=int(now),
            approved=bool(decision.get("approved")),
            decision=digest(decision),
        )
    )


def repair_seal(old: Mapping[str, Any], new: Mapping[str, Any], *, user: str, now: float) -> str:
    """The seal admission writes with a repair decision: who decided what, on which resource, at which generation."""
    meta = _meta(old)
    return SEALER.seal(
        Sealed(
            role="repair",
            kind=str(old.get("kind") or new.get("kind") or ""),
            ns=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            gen=int(meta.get("generation") or 0) + 1,
            user=user,
            at=int(now),
            decision=digest((new.get("spec") or {}).get("repair") or {}),
        )
    )


def verify_creator(body: Mapping[str, Any], token: str | None) -> Sealed:
    """The creator (or gate) seal of `body`, checked against it as it is now; SealError if it does not hold."""
    sealed = SEALER.open(token)
    if sealed.role in ("decision", "repair"):
        raise SealError("a decision's seal does not name a creator")
    # A gate's request is checked against the saga's recorded gate instead (its spec gets the CRD's defaults
    # after the operator seals it).
    kind = str(body.get("kind"))
    spec = None if sealed.role == "gate" else spec_digest(kind, body.get("spec"))
    # A saga's repair decisions move its generation; a seal of the previous release bound generation 1.
    check_binding(sealed, body, spec=spec, generation=kind != _SAGA)
    return sealed


def verify_decision(body: Mapping[str, Any], token: str | None) -> Sealed:
    """The decision seal of an ApprovalRequest, checked against its current spec.decision."""
    return _verify_decided(body, token, "decision", "the decision")


def verify_repair(body: Mapping[str, Any], token: str | None) -> Sealed:
    """The repair seal of `body`, checked against its current spec.repair and generation."""
    return _verify_decided(body, token, "repair", "the repair decision")


def _verify_decided(
    body: Mapping[str, Any], token: str | None, role: Literal["decision", "repair"], what: str
) -> Sealed:
    """A decision's seal (role = the spec field it seals), bound to `body` and to that field as it is now."""
    sealed = SEALER.open(token)
    if sealed.role != role:
        raise SealError(f"not {what}'s seal")
    check_binding(sealed, body)
    if sealed.decision != digest((body.get("spec") or {}).get(role) or {}):
        raise SealError(f"{what} is not the one admission sealed")
    return sealed
