"""The admission webhooks of every kind, and the TLS server `steadfast run` serves them on.

Identity comes from the API server's admission request (`userInfo`), never from a field users type:
a mutating webhook stamps the authenticated creator (`steadfast.dev/requested-by`) and decider
(`steadfast.dev/decided-by`) as annotations (`steadfast.identity`), and a validating webhook refuses any
change the stamps do not back. The rules are pure functions of (operation, user, old, new), tested without
a cluster: the approval rules in `steadfast.approval.admission`, the saga's and the nesting check here.

Every kind's spec is checked at admission against the kind's model (`check_spec`) and against what the
operator's bookkeeping can record (`steadfast.persistence.bookkeeping_problem`), so a spec the operator would
only mark Stalled, or could never handle again, is refused at `kubectl apply` with the same message.

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
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client
from pydantic import ValidationError

from steadfast import certs, identity, persistence
from steadfast.api.action import BODY_DEPTH_MESSAGE
from steadfast.api.common import MAX_BODY_DEPTH, json_depth
from steadfast.api.duration import parse_duration
from steadfast.api.errors import invalid_spec
from steadfast.api.kinds import (
    APPROVAL_REQUEST,
    CLUSTER_SAGA_TEMPLATE,
    FINALIZER,
    HEALTH_MONITOR,
    REQUESTED_BY,
    REQUESTED_GROUPS,
    SAGA_SCHEDULE,
    SAGA_TEMPLATE,
    SEAL,
    TASK_SAGA,
    Kind,
)
from steadfast.approval.admission import approval_stamps, check_approval
from steadfast.repair.admission import Authorizer, MayRepair, check_repair, repair_stamps
from steadfast.schedules.admission import interval_problem
from steadfast.templates.admission import ReadLabels, ReadPolicies, TemplateAdmission
from steadfast.templates.reader import TemplateReader

log = logging.getLogger(__name__)

CONFIGURATION_NAME = "steadfast.dev"  # the Validating/MutatingWebhookConfiguration kopf keeps up to date
OPERATIONS = ["CREATE", "UPDATE"]  # never DELETE: removing a resource must not need the operator
# The shortest interval between two runs of a SagaSchedule, unless the admin says otherwise: CronJob's minute.
MIN_SCHEDULE_INTERVAL = "60s"


# ---- every kind: nesting -------------------------------------------------------------------------


def check_depth(new: Mapping[str, Any] | None) -> str | None:
    """Refuse http bodies and Kubernetes objects nested deeper than the models allow, naming where.

    Bodies and objects are free JSON that the API server stores at any depth; parsing one thousands of levels deep
    recursively (kopf's watch, pydantic) fails or crashes, so such a spec must never be stored. The rest of
    a spec has a depth bounded by its schema. Walked without recursion.
    """
    stack: list[tuple[Any, str]] = [((new or {}).get("spec"), "spec")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, Mapping):
            http, kube = value.get("http"), value.get("kubernetes")
            if isinstance(http, Mapping) and json_depth(http.get("body")) > MAX_BODY_DEPTH:
                return f"{path}.{BODY_DEPTH_MESSAGE}"
            if isinstance(kube, Mapping) and json_depth(kube.get("object")) > MAX_BODY_DEPTH:
                return f"{path}.kubernetes.object is nested more than {MAX_BODY_DEPTH} levels deep"
            stack.extend((v, f"{path}.{k}") for k, v in value.items() if k not in ("http", "kubernetes"))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
    return None


def check_spec(
    kind: Kind,
    operation: str,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    *,
    added: Mapping[str, str] | None = None,
) -> str | None:
    """Refuse a spec the kind's model refuses, or one too large to keep track of, with the operator's own words.

    The model's message is `invalid_spec`'s, the very one a Stalled (InvalidSpec) condition would show. When:

    - CREATE: always.
    - UPDATE: the model only when the spec changed. Metadata edits (labels, the finalizer's removal at
      deletion, kopf's own bookkeeping) of a resource admitted under an older release, whose spec a newer
      model refuses, must still pass: refusing them would leave it undeletable. Status is a subresource the
      webhooks never see. The size as persistence.bookkeeping_problem says (a spec change keeps room for
      kopf's progress records; other edits are refused only if they grow it past the limit).

    `added`: the annotations a mutating webhook is about to stamp (they count towards the size).
    """
    if operation not in ("CREATE", "UPDATE"):
        return None
    defined = operation == "CREATE" or identity.spec_of(old) != identity.spec_of(new)
    if defined:
        try:
            kind.parse_spec((new or {}).get("spec") or {})
        except ValidationError as exc:
            return invalid_spec(exc)
    before = old if operation == "UPDATE" else None
    return persistence.bookkeeping_problem(kind, before, new or {}, defined=defined, added=added)


# ---- HealthMonitor -------------------------------------------------------------------------------


def monitor_stamps(
    operation: str,
    user: identity.User,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    *,
    namespace: str,
) -> dict[str, str] | None:
    """A monitor acts as whoever last defined what it checks: stamped at CREATE and at every spec change.

    A restamp's seal binds the monitor's UID and the generation the change produces, so an older seal of the
    same monitor cannot be put back later. None: the spec did not change, so the stamps must not either (the
    caller refuses an edit of them).
    """
    if operation == "CREATE":
        return identity.creator_stamps(user, new, namespace=namespace)
    if identity.spec_of(old) != identity.spec_of(new):
        return identity.creator_stamps(user, new, namespace=namespace, old=old)
    return None


# ---- TaskSaga ------------------------------------------------------------------------------------


def saga_stamps(
    operation: str, user: identity.User, new: Mapping[str, Any] | None, *, namespace: str
) -> dict[str, str]:
    """The saga's creator and their groups are recorded and sealed at CREATE: its approval gate's requester,
    who may not approve it, and the identity its Kubernetes steps act as."""
    if operation != "CREATE":
        return {}
    return identity.creator_stamps(user, new, namespace=namespace)


def check_saga(
    operation: str, user: identity.User, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> str | None:
    if operation == "CREATE":
        requester = identity.annotations_of(new).get(REQUESTED_BY)
        if requester != user.name:
            return f"annotation {REQUESTED_BY} must be the authenticated creator {user.name!r}, not {requester!r}"
        return None
    if operation != "UPDATE":
        return None
    for key in (REQUESTED_BY, REQUESTED_GROUPS, SEAL):
        if problem := identity.stamp_unchanged(key, old, new):
            return problem
    if identity.spec_of(old).get("parameters") != identity.spec_of(new).get("parameters"):
        return "spec.parameters is immutable once the TaskSaga is created"  # the CRD's rule cannot read them
    return None


# ---- kopf glue -----------------------------------------------------------------------------------


GateWarning = Callable[[Mapping[str, Any]], "str | None"]
# (userinfo, namespace, new saga) -> why a saga naming a template (or off a golden path) is refused
# (steadfast.templates.admission).
TemplateCheck = Callable[[Mapping[str, Any], str, "Mapping[str, Any] | None"], "str | None"]


def register(
    registry: kopf.OperatorRegistry,
    *,
    operator: str,
    may_repair: MayRepair,
    saga_gate: GateWarning | None = None,
    template_check: TemplateCheck | None = None,
    min_schedule_interval: dt.timedelta | None = None,
) -> None:
    """Register the admission handlers; `operator` is the operator's own user name (from the API server).

    `min_schedule_interval` is the shortest time a SagaSchedule may leave between two runs (schedules.admission).

    `template_check` refuses a saga whose template the user may not read, is missing, or whose parameters do
    not fit, and one a golden-path policy does not allow.

    `may_repair` asks RBAC whether the user of a repair decision holds the verb `repair` (steadfast.repair).
    `saga_gate` says, for a TaskSaga being created, which approval it will wait for under the admins'
    policies; it becomes an admission warning, which kubectl prints at `kubectl apply`.
    """
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

    def user(kw: Mapping[str, Any]) -> identity.User:
        return identity.User.from_userinfo(kw["userinfo"])

    def namespace(kw: Mapping[str, Any]) -> str:
        return str(kw.get("namespace") or identity.meta_of(kw["new"] or kw["old"]).get("namespace") or "")

    monitors = (HEALTH_MONITOR.group, HEALTH_MONITOR.version, HEALTH_MONITOR.plural)

    @kopf.on.mutate(*monitors, id="monitor-rules", **common)
    def _monitor_rules(**kw: Any) -> None:
        refuse(check_depth(kw["new"]), 422)
        stamps = monitor_stamps(kw["operation"], user(kw), kw["old"], kw["new"], namespace=namespace(kw))
        refuse(check_spec(HEALTH_MONITOR, kw["operation"], kw["old"], kw["new"], added=stamps), 422)
        if stamps is None:
            for key in (REQUESTED_BY, REQUESTED_GROUPS, SEAL):
                refuse(identity.stamp_unchanged(key, kw["old"], kw["new"]))
        else:
            stamp(kw["patch"], stamps)
        finalize(kw["patch"], kw["operation"])

    schedules = (SAGA_SCHEDULE.group, SAGA_SCHEDULE.version, SAGA_SCHEDULE.plural)

    # A schedule's runs are created as whoever last defined it (its creator, restamped at every spec change, as a
    # monitor's): the runs' steps then act as that person, never as the operator.
    @kopf.on.mutate(*schedules, id="schedule-rules", **common)
    def _schedule_rules(**kw: Any) -> None:
        refuse(check_depth(kw["new"]), 422)
        stamps = monitor_stamps(kw["operation"], user(kw), kw["old"], kw["new"], namespace=namespace(kw))
        refuse(check_spec(SAGA_SCHEDULE, kw["operation"], kw["old"], kw["new"], added=stamps), 422)
        refuse(interval_problem(kw["old"], kw["new"], min_schedule_interval), 422)
        if stamps is None:
            for key in (REQUESTED_BY, REQUESTED_GROUPS, SEAL):
                refuse(identity.stamp_unchanged(key, kw["old"], kw["new"]))
        else:
            stamp(kw["patch"], stamps)
        finalize(kw["patch"], kw["operation"])

    @kopf.on.mutate(*apr, id="approval-identity", **common)
    def _approval_identity(**kw: Any) -> None:
        stamp(
            kw["patch"],
            approval_stamps(
                kw["operation"], user(kw), kw["old"], kw["new"], operator=operator, namespace=namespace(kw)
            ),
        )
        stamp(kw["patch"], repair_stamps(kw["operation"], user(kw), kw["old"], kw["new"]))
        finalize(kw["patch"], kw["operation"])

    @kopf.on.validate(*apr, id="approval-rules", **common)
    def _approval_rules(**kw: Any) -> None:
        refuse(check_depth(kw["new"]), 422)
        refuse(check_spec(APPROVAL_REQUEST, kw["operation"], kw["old"], kw["new"]), 422)
        refuse(
            check_approval(
                kw["operation"], user(kw), kw["old"], kw["new"], operator=operator, now=dt.datetime.now(dt.UTC)
            )
        )
        refuse(repairing(kw, APPROVAL_REQUEST.plural))

    def repairing(kw: Mapping[str, Any], plural: str) -> str | None:
        return check_repair(kw["operation"], kw["userinfo"], kw["old"], kw["new"], plural=plural, may_repair=may_repair)

    # A saga needs the stamp on CREATE (and a repair decision's on UPDATE) and the check that nobody edits them on
    # UPDATE; the check on CREATE would only see what the mutation just wrote. Half the admission calls for the
    # busiest kind.
    @kopf.on.mutate(*sagas, id="saga-identity", **common)
    def _saga_identity(**kw: Any) -> None:
        if kw["operation"] == "UPDATE":  # only spec.repair may change (the CRD fixes the rest)
            stamps = repair_stamps(kw["operation"], user(kw), kw["old"], kw["new"])
            refuse(check_spec(TASK_SAGA, kw["operation"], kw["old"], kw["new"], added=stamps), 422)
            stamp(kw["patch"], stamps)
            return
        refuse(repairing(kw, TASK_SAGA.plural))  # no decision at creation
        refuse(check_depth(kw["new"]), 422)  # a saga's spec never changes, so CREATE is the one place to look
        stamps = saga_stamps(kw["operation"], user(kw), kw["new"], namespace=namespace(kw))
        refuse(check_spec(TASK_SAGA, kw["operation"], kw["old"], kw["new"], added=stamps), 422)
        if template_check is not None:
            refuse(template_check(kw["userinfo"], namespace(kw), kw["new"]), 422)
        if saga_gate is not None:
            new = dict(kw["new"] or {})
            new["metadata"] = {**(new.get("metadata") or {}), "namespace": kw.get("namespace")}
            try:
                warning = saga_gate(new)
            except Exception as exc:  # a warning is a courtesy; the gate itself is resolved when the saga starts
                log.warning("cannot tell the creator which approval the saga needs: %s", exc)
            else:
                if warning:
                    kw["warnings"].append(warning)
        stamp(kw["patch"], stamps)
        finalize(kw["patch"], kw["operation"])

    # A template's model refuses what a saga's would (and expressions that read undeclared parameters).
    def template_rules(kind: Kind) -> Callable[..., None]:
        def check(**kw: Any) -> None:
            refuse(check_depth(kw["new"]), 422)
            refuse(check_spec(kind, kw["operation"], kw["old"], kw["new"]), 422)

        return check

    for template_kind in (SAGA_TEMPLATE, CLUSTER_SAGA_TEMPLATE):
        resource = (template_kind.group, template_kind.version, template_kind.plural)
        kopf.on.validate(*resource, id=f"{template_kind.singular}-rules", **common)(template_rules(template_kind))

    @kopf.on.validate(*sagas, id="saga-rules", **{**common, "operations": ["UPDATE"]})
    def _saga_rules(**kw: Any) -> None:
        refuse(check_saga(kw["operation"], user(kw), kw["old"], kw["new"]))
        refuse(repairing(kw, TASK_SAGA.plural))


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
        "--min-schedule-interval",
        default=env("STEADFAST_MIN_SCHEDULE_INTERVAL") or MIN_SCHEDULE_INTERVAL,
        metavar="DURATION",
        help="the shortest time a SagaSchedule may leave between two runs; one that runs more often is refused "
        "at kubectl apply, so no namespace makes the operator churn sagas every second (1s: no limit)",
    )
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


def listen_address(args: argparse.Namespace) -> tuple[str, int]:
    """Where the webhook server listens: `--webhook-addr`/`--webhook-port`, else 0.0.0.0:9443 in a cluster and
    a free loopback port outside. Chosen once (kept in `args`), so the egress policy can refuse it before it opens.
    """
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not os.environ.get("KUBECONFIG")
    addr = args.webhook_addr or ("0.0.0.0" if in_cluster else "127.0.0.1")
    if not args.webhook_port:
        if in_cluster:
            args.webhook_port = 9443
        else:
            with socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET) as probe:
                probe.bind((addr, 0))
                args.webhook_port = int(probe.getsockname()[1])
    return addr, int(args.webhook_port)


def configure(
    args: argparse.Namespace,
    settings: kopf.OperatorSettings,
    registry: kopf.OperatorRegistry,
    api: client.ApiClient,
    saga_gate: GateWarning | None = None,
    saga_policies: ReadPolicies | None = None,
    namespace_labels: ReadLabels | None = None,
) -> None:
    """Register the admission handlers and a kopf webhook server that keeps its configurations up to date.

    `saga_policies` and `namespace_labels` read the SteadfastPolicies and a namespace's labels (golden paths);
    unset: no policies."""
    if args.no_webhooks:
        log.warning("admission webhooks disabled: ApprovalRequest decisions will be ignored")
        return
    operator = whoami(api)
    check = TemplateAdmission(
        TemplateReader(lambda: api).read,
        Authorizer(api, verb="get"),
        saga_policies or list,
        namespace_labels or (lambda namespace: {}),
    )
    register(
        registry,
        operator=operator,
        may_repair=Authorizer(api),
        saga_gate=saga_gate,
        template_check=check,
        min_schedule_interval=parse_duration(args.min_schedule_interval),
    )
    addr, port = listen_address(args)
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
        port=port,
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
