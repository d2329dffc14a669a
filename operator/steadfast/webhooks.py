"""Admission for approvals: who asked, who decided, who may decide, and that a decision is final.

Identity comes from the API server's admission request (`userInfo`), never from a field users type:
a mutating webhook stamps the authenticated creator (`steadfast.dev/requested-by`) and decider
(`steadfast.dev/decided-by`) as annotations, and a validating webhook refuses any change the stamps do
not back. The rules are pure functions of (operation, user, old, new) so they are tested without a
cluster; the kopf glue and the TLS server that `steadfast run` serves on loopback are at the bottom.

On CREATE the mutating webhooks also set the operator's finalizer, so that kopf need not patch every new
resource to add it (see steadfast.persistence).

The webhooks fail closed (failurePolicy Fail) and stay registered when the operator stops: while it is
down, ApprovalRequests and TaskSagas cannot be created or changed, so no decision ever skips the checks.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client

from steadfast import certs
from steadfast.api.action import BODY_DEPTH_MESSAGE, MAX_BODY_DEPTH, json_depth
from steadfast.api.kinds import APPROVAL_REQUEST, DECIDED_BY, FINALIZER, HEALTH_MONITOR, REQUESTED_BY, TASK_SAGA

log = logging.getLogger(__name__)

CONFIGURATION_NAME = "steadfast.dev"  # the Validating/MutatingWebhookConfiguration kopf keeps up to date
OPERATIONS = ["CREATE", "UPDATE"]  # never DELETE: removing a resource must not need the operator


@dataclass(frozen=True)
class User:
    """The authenticated user of an admission request."""

    name: str
    groups: frozenset[str] = frozenset()

    @classmethod
    def from_userinfo(cls, info: Mapping[str, Any]) -> User:
        return cls(str(info.get("username") or ""), frozenset(info.get("groups") or ()))


def _meta(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("metadata") or {}


def _annotations(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return _meta(obj).get("annotations") or {}


def _spec(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("spec") or {}


def _status(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("status") or {}


def _name(obj: Mapping[str, Any] | None) -> str:
    meta = _meta(obj)
    return f"{meta.get('namespace', '')}/{meta.get('name') or meta.get('generateName', '')}"


def _stamp_unchanged(key: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> str | None:
    if _annotations(old).get(key) != _annotations(new).get(key):
        return (
            f"annotation {key} is recorded by Steadfast's admission webhook from the authenticated user; "
            "it cannot be set, changed or removed by hand"
        )
    return None


# ---- ApprovalRequest -----------------------------------------------------------------------------


def approval_stamps(
    operation: str, user: User, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, *, operator: str
) -> dict[str, str]:
    """The annotations the mutating webhook sets: the creator on CREATE, the decider when a decision changes.

    Only the operator itself may name another requester (a saga gate's request is on the saga creator's behalf).
    """
    if operation == "CREATE":
        if user.name == operator and _annotations(new).get(REQUESTED_BY):
            return {}
        return {REQUESTED_BY: user.name}
    if operation == "UPDATE" and _spec(new).get("decision") != _spec(old).get("decision"):
        return {DECIDED_BY: user.name}
    return {}


def may_decide(user: User, approvers: Mapping[str, Any]) -> bool:
    """Listed by name, or a member of a listed group."""
    return user.name in (approvers.get("users") or []) or bool(user.groups & set(approvers.get("groups") or []))


def _parse_time(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def check_approval(
    operation: str,
    user: User,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    *,
    operator: str,
    now: dt.datetime,
) -> str | None:
    """Why this ApprovalRequest change must be refused (the message kubectl shows), or None to allow it."""
    name = _name(new or old)
    if operation == "CREATE":
        return _check_create(user, new, operator=operator, name=name)
    if operation != "UPDATE":
        return None
    for key in (REQUESTED_BY,):
        if problem := _stamp_unchanged(key, old, new):
            return problem
    old_decision, new_decision = _spec(old).get("decision"), _spec(new).get("decision")
    if old_decision == new_decision:
        return _stamp_unchanged(DECIDED_BY, old, new)
    return _check_decision(user, old, new, name=name, now=now)


def _check_create(user: User, new: Mapping[str, Any] | None, *, operator: str, name: str) -> str | None:
    annotations = _annotations(new)
    if DECIDED_BY in annotations:
        return f"annotation {DECIDED_BY} is recorded by Steadfast when an approver decides; it cannot be set by hand"
    if _spec(new).get("decision") is not None:
        return (
            f"ApprovalRequest {name}: spec.decision cannot be set at creation; approvers decide with "
            "kubectl patch (or steadfast approve/reject) once the request is Pending"
        )
    requester = annotations.get(REQUESTED_BY)
    if user.name != operator:
        if requester != user.name:
            return f"annotation {REQUESTED_BY} must be the authenticated creator {user.name!r}, not {requester!r}"
        owners = [o for o in _meta(new).get("ownerReferences") or [] if o.get("kind") == TASK_SAGA.kind]
        if owners:
            return (
                f"ApprovalRequest {name}: only the Steadfast operator creates ApprovalRequests owned by a "
                "TaskSaga (they are its approval gate)"
            )
    typed = (_spec(new).get("subject") or {}).get("requester")
    if typed and typed != requester:
        return (
            f"ApprovalRequest {name}: spec.subject.requester is {typed!r} but the request is made by "
            f"{requester!r} (the authenticated creator); leave it out or make it match"
        )
    return None


def _check_decision(
    user: User, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, *, name: str, now: dt.datetime
) -> str | None:
    status = _status(old)
    phase = status.get("phase")
    if not phase:
        return f"ApprovalRequest {name} is not open yet (no status): wait until it is Pending, then decide"
    if phase != "Pending":
        after = "after a timeout" if phase == "TimedOut" else "once it is decided"
        return f"ApprovalRequest {name} is {phase}: a decision is final and none is accepted {after}"
    expires = _parse_time(status.get("expiresAt"))
    if expires is not None and now >= expires:
        return f"ApprovalRequest {name} expired at {status['expiresAt']}: no decision is accepted after the timeout"
    if _annotations(new).get(DECIDED_BY) != user.name:
        return f"annotation {DECIDED_BY} must be the authenticated decider {user.name!r}; it cannot be set by hand"
    approvers = _spec(old).get("approvers") or {}
    if not may_decide(user, approvers):
        listed = ", ".join([*(approvers.get("users") or []), *(f"group {g}" for g in approvers.get("groups") or [])])
        return (
            f"{user.name} may not decide ApprovalRequest {name}: only the approvers listed in spec.approvers "
            f"may ({listed})"
        )
    approved = bool((_spec(new).get("decision") or {}).get("approved"))
    if approved and user.name == _annotations(old).get(REQUESTED_BY):
        return f"{user.name} requested ApprovalRequest {name} and may not approve it; another approver must"
    recorded = {a.get("user") for a in status.get("approvals") or []}
    if user.name in recorded:
        return f"{user.name} has already decided ApprovalRequest {name}; each approver decides once"
    previous = _annotations(old).get(DECIDED_BY)
    if previous and previous not in recorded:
        return f"the decision of {previous} on ApprovalRequest {name} is still being recorded; retry in a few seconds"
    return None


# ---- every kind: nesting -------------------------------------------------------------------------


def check_depth(new: Mapping[str, Any] | None) -> str | None:
    """Refuse http bodies nested deeper than the models allow, naming where.

    Bodies are free JSON that the API server stores at any depth; parsing one thousands of levels deep
    recursively (kopf's watch, pydantic) fails or crashes, so such a spec must never be stored. The rest of
    a spec has a depth bounded by its schema. Walked without recursion.
    """
    stack: list[tuple[Any, str]] = [((new or {}).get("spec"), "spec")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, Mapping):
            http = value.get("http")
            if isinstance(http, Mapping) and json_depth(http.get("body")) > MAX_BODY_DEPTH:
                return f"{path}.{BODY_DEPTH_MESSAGE}"
            stack.extend((v, f"{path}.{k}") for k, v in value.items() if k != "http")
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
    return None


# ---- TaskSaga ------------------------------------------------------------------------------------


def saga_stamps(operation: str, user: User) -> dict[str, str]:
    """The saga's creator is recorded at CREATE: its approval gate's requester, who may not approve it."""
    return {REQUESTED_BY: user.name} if operation == "CREATE" else {}


def check_saga(operation: str, user: User, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> str | None:
    if operation == "CREATE":
        requester = _annotations(new).get(REQUESTED_BY)
        if requester != user.name:
            return f"annotation {REQUESTED_BY} must be the authenticated creator {user.name!r}, not {requester!r}"
        return None
    return _stamp_unchanged(REQUESTED_BY, old, new) if operation == "UPDATE" else None


# ---- kopf glue -----------------------------------------------------------------------------------


def register(registry: kopf.OperatorRegistry, *, operator: str) -> None:
    """Register the admission handlers; `operator` is the operator's own user name (from the API server)."""
    common: dict[str, Any] = {"operations": OPERATIONS, "persistent": True, "registry": registry}
    apr = (APPROVAL_REQUEST.group, APPROVAL_REQUEST.version, APPROVAL_REQUEST.plural)
    sagas = (TASK_SAGA.group, TASK_SAGA.version, TASK_SAGA.plural)

    def stamp(patch: kopf.Patch, annotations: dict[str, str]) -> None:
        if annotations:
            patch.setdefault("metadata", {}).setdefault("annotations", {}).update(annotations)

    def finalize(patch: kopf.Patch, operation: str) -> None:
        def add(body: Any) -> None:
            finalizers = body.setdefault("metadata", {}).setdefault("finalizers", [])
            if FINALIZER not in finalizers:
                finalizers.append(FINALIZER)

        if operation == "CREATE":
            patch.fns.append(add)

    def refuse(problem: str | None, code: int = 403) -> None:
        if problem:
            raise kopf.AdmissionError(problem, code=code)

    def user(kw: Mapping[str, Any]) -> User:
        return User.from_userinfo(kw["userinfo"])

    monitors = (HEALTH_MONITOR.group, HEALTH_MONITOR.version, HEALTH_MONITOR.plural)

    @kopf.on.mutate(*monitors, id="monitor-rules", **common)
    def _monitor_rules(**kw: Any) -> None:
        refuse(check_depth(kw["new"]), 422)
        finalize(kw["patch"], kw["operation"])

    @kopf.on.mutate(*apr, id="approval-identity", **common)
    def _approval_identity(**kw: Any) -> None:
        stamp(kw["patch"], approval_stamps(kw["operation"], user(kw), kw["old"], kw["new"], operator=operator))
        finalize(kw["patch"], kw["operation"])

    @kopf.on.validate(*apr, id="approval-rules", **common)
    def _approval_rules(**kw: Any) -> None:
        refuse(check_depth(kw["new"]), 422)
        refuse(
            check_approval(
                kw["operation"], user(kw), kw["old"], kw["new"], operator=operator, now=dt.datetime.now(dt.UTC)
            )
        )

    # A saga needs the stamp on CREATE and the check that nobody edits it on UPDATE; the check on CREATE
    # would only see what the mutation just wrote. Half the admission calls for the busiest kind.
    @kopf.on.mutate(*sagas, id="saga-identity", **{**common, "operations": ["CREATE"]})
    def _saga_identity(**kw: Any) -> None:
        refuse(check_depth(kw["new"]), 422)  # a saga's spec never changes, so CREATE is the one place to look
        stamp(kw["patch"], saga_stamps(kw["operation"], user(kw)))
        finalize(kw["patch"], kw["operation"])

    @kopf.on.validate(*sagas, id="saga-rules", **{**common, "operations": ["UPDATE"]})
    def _saga_rules(**kw: Any) -> None:
        refuse(check_saga(kw["operation"], user(kw), kw["old"], kw["new"]))


def whoami(api: client.ApiClient) -> str:
    """The operator's own user name, as the API server authenticates it (SelfSubjectReview)."""
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    return str(review.status.user_info.username)


# ---- the webhook server --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--no-webhooks",
        action="store_true",
        default=env("STEADFAST_NO_WEBHOOKS") == "1",
        help="serve no admission webhooks: approvals then cannot be decided (no authenticated "
        "approver can be recorded)",
    )
    parser.add_argument(
        "--webhook-addr",
        default=env("STEADFAST_WEBHOOK_ADDR"),
        help="listen address (default 127.0.0.1 outside a cluster, 0.0.0.0 in one)",
    )
    parser.add_argument(
        "--webhook-host",
        default=env("STEADFAST_WEBHOOK_HOST"),
        help="host name the API server calls (default: the listen address)",
    )
    parser.add_argument(
        "--webhook-port",
        type=int,
        default=int(env("STEADFAST_WEBHOOK_PORT") or 0) or None,
        help="port (default: a free port outside a cluster, 9443 in one)",
    )
    parser.add_argument(
        "--webhook-cert",
        default=env("STEADFAST_WEBHOOK_CERT"),
        help="serving certificate (PEM); default: a certificate made at startup",
    )
    parser.add_argument("--webhook-key", default=env("STEADFAST_WEBHOOK_KEY"), help="its private key (PEM)")
    parser.add_argument(
        "--webhook-ca",
        default=env("STEADFAST_WEBHOOK_CA"),
        help="CA bundle the API server verifies the certificate with",
    )
    parser.add_argument(
        "--webhook-managed",
        action=argparse.BooleanOptionalAction,
        default=(env("STEADFAST_WEBHOOK_MANAGED") or "true").lower() not in ("false", "0", "no"),
        help="create and update the webhook configurations ourselves (default); in a cluster the "
        "Helm chart ships them, so the chart turns this off",
    )


def configure(
    args: argparse.Namespace, settings: kopf.OperatorSettings, registry: kopf.OperatorRegistry, api: client.ApiClient
) -> None:
    """Register the admission handlers and a kopf webhook server that keeps its configurations up to date."""
    if args.no_webhooks:
        log.warning("admission webhooks disabled: ApprovalRequest decisions will be ignored")
        return
    operator = whoami(api)
    register(registry, operator=operator)
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not os.environ.get("KUBECONFIG")
    addr = args.webhook_addr or ("0.0.0.0" if in_cluster else "127.0.0.1")
    host = args.webhook_host or addr
    cert, key, ca = args.webhook_cert, args.webhook_key, args.webhook_ca
    if not (cert and key):
        if ca:
            raise SystemExit("--webhook-ca needs --webhook-cert and --webhook-key")
        directory = tempfile.mkdtemp(prefix="steadfast-webhook-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)  # a private key: not left behind
        cert, key, ca = make_certificate(Path(directory), [host, addr])
    settings.admission.server = kopf.WebhookServer(
        addr=addr,
        port=args.webhook_port or (9443 if in_cluster else None),
        host=host,
        certfile=cert,
        pkeyfile=key,
        cafile=ca,
    )
    if args.webhook_managed:
        settings.admission.managed = CONFIGURATION_NAME
    if args.webhook_cert:
        _exit_when_changed([Path(args.webhook_cert), Path(args.webhook_key)])
    log.info("admission webhooks on %s (operator identity %s)", host, operator)


def _exit_when_changed(paths: list[Path], interval: float = 30.0) -> None:
    """kopf reads the certificate once; when cert-manager renews it, stop so the pod restarts with it."""

    def stamp() -> list[float]:
        return [p.stat().st_mtime if p.exists() else 0.0 for p in paths]

    first = stamp()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if stamp() != first:
                log.warning("webhook certificate changed on disk; stopping so that it is loaded on restart")
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="webhook-cert-watch", daemon=True).start()


make_certificate = certs.serving_files
