"""Admission of repair decisions: who decided (stamped and sealed), whether RBAC lets them, whether it fits.

Pure functions of (operation, user, old, new), tested without a cluster, but for the RBAC question, which only
the API server can answer: `Authorizer` asks it with a SubjectAccessReview for the verb `repair` on the resource
(a custom verb, as Kubernetes' own `approve` of CertificateSigningRequests: the chart's roles grant it to
namespace editors and admins, never to viewers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from pydantic import ValidationError

from steadfast import identity, seals
from steadfast.api.kinds import GROUP, REPAIR_SEAL, REPAIR_VERB, REPAIRED_BY, SEAL
from steadfast.api.repair import Repair
from steadfast.api.saga import TaskSagaSpec
from steadfast.identity import User
from steadfast.repair.rules import REQUEST, SAGA, Situation, misfit, saga_situation

log = logging.getLogger(__name__)

# (userinfo of the admission request, plural, namespace, name) -> whether RBAC allows the verb `repair`.
MayRepair = Callable[[Mapping[str, Any], str, str, str], bool]


def repair_stamps(
    operation: str, user: User, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> dict[str, str]:
    """The decider's annotation and seal, when spec.repair changes."""
    if operation != "UPDATE" or identity.spec_of(new).get("repair") == identity.spec_of(old).get("repair"):
        return {}
    return {
        REPAIRED_BY: user.name,
        REPAIR_SEAL: seals.repair_seal(old or {}, new or {}, user=user.name, now=time.time()),
    }


def check_repair(
    operation: str,
    userinfo: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    *,
    plural: str,
    may_repair: MayRepair,
) -> str | None:
    """Why this change of spec.repair (or of its stamps) must be refused, or None to allow it."""
    user = User.from_userinfo(userinfo)
    kind = str((new or old or {}).get("kind") or "")
    name = identity.name_of(new or old)
    if operation == "CREATE":
        for key in (REPAIRED_BY, REPAIR_SEAL):
            if key in identity.annotations_of(new):
                return f"annotation {key} is recorded by Steadfast when someone repairs; it cannot be set by hand"
        if identity.spec_of(new).get("repair") is not None:
            return f"{kind} {name}: spec.repair is a decision about a running {kind}; it cannot be set at creation"
        return None
    if operation != "UPDATE":
        return None
    raw = identity.spec_of(new).get("repair")
    if raw == identity.spec_of(old).get("repair"):
        return identity.stamp_unchanged(REPAIRED_BY, old, new) or identity.stamp_unchanged(REPAIR_SEAL, old, new)
    if identity.annotations_of(new).get(REPAIRED_BY) != user.name:
        return f"annotation {REPAIRED_BY} must be the authenticated decider {user.name!r}; it cannot be set by hand"
    meta = identity.meta_of(old)
    if not may_repair(userinfo, plural, str(meta.get("namespace") or ""), str(meta.get("name") or "")):
        return (
            f"{user.name} may not repair {kind} {name}: that needs the RBAC verb {REPAIR_VERB!r} on {plural}.{GROUP} "
            f"(check with: kubectl auth can-i {REPAIR_VERB} {plural}.{GROUP}/{meta.get('name')} -n "
            f"{meta.get('namespace')})"
        )
    try:
        repair = Repair.model_validate(raw or {})
    except ValidationError:
        return None  # the model's own message comes from the spec check (422)
    status = identity.status_of(old)
    if kind == SAGA:
        try:
            spec: TaskSagaSpec | None = TaskSagaSpec.model_validate(identity.spec_of(old))
        except ValidationError:
            spec = None
        situation = saga_situation(name, status, creator=_creator(old))
        return misfit(situation, repair.action, repair.step, user=user.name, spec=spec)
    if kind == REQUEST:
        return misfit(
            Situation(REQUEST, name, str(status.get("phase") or "")), repair.action, repair.step, user=user.name
        )
    return f"{kind} {name}: spec.repair is not a field of this kind"


def _creator(body: Mapping[str, Any] | None) -> str | None:
    """The sealed creator, if a seal holds (the readable annotation alone proves nothing)."""
    try:
        return seals.verify_creator(body or {}, identity.annotations_of(body).get(SEAL)).user
    except seals.SealError:
        return None


class Authorizer:
    """Asks the API server whether a user may `repair` a resource (SubjectAccessReview, as the operator); another
    `verb` for other questions (`get` of the template a saga names). An empty namespace: a cluster-scoped one."""

    def __init__(self, api: client.ApiClient, verb: str = REPAIR_VERB) -> None:
        self._api = client.AuthorizationV1Api(api)
        self._verb = verb

    def __call__(self, userinfo: Mapping[str, Any], plural: str, namespace: str, name: str) -> bool:
        spec: dict[str, Any] = {
            "user": userinfo.get("username"),
            "groups": list(userinfo.get("groups") or []),
            "resourceAttributes": {"group": GROUP, "resource": plural, "verb": self._verb, "name": name},
        }
        if namespace:
            spec["resourceAttributes"]["namespace"] = namespace
        if userinfo.get("uid"):
            spec["uid"] = userinfo["uid"]
        if userinfo.get("extra"):
            spec["extra"] = {k: list(v) for k, v in dict(userinfo["extra"]).items()}
        review = self._api.create_subject_access_review(
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        )
        allowed = bool(review.status and review.status.allowed)
        log.debug(
            "SubjectAccessReview %s %s %s/%s for %s: %s", self._verb, plural, namespace, name, spec["user"], allowed
        )
        return allowed
