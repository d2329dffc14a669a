"""`steadfast approve | reject | status`: decide ApprovalRequests and see what is open, as the kubeconfig user.

Deciding is a plain patch of spec.decision, the same as `kubectl patch`: the API server authenticates
the user and Steadfast's admission webhook checks and records them, so this command needs no
privilege of its own and cannot claim to be anyone else. The API server's refusal is shown verbatim.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from steadfast.api.kinds import APPROVAL_REQUEST, DECIDED_BY, HEALTH_MONITOR, REQUESTED_BY, TASK_SAGA, Kind

OPEN = {"", "Pending", "Approved", "Executing"}


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-n", "--namespace", default=None, help="namespace (default: the context's)")
        parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG)")
        parser.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")

    approve = sub.add_parser("approve", help="approve an ApprovalRequest as the current kubeconfig user")
    approve.add_argument("name")
    approve.add_argument("--reason", default=None, help="why (optional)")
    common(approve)
    approve.set_defaults(func=_decide, approved=True)

    reject = sub.add_parser("reject", help="reject an ApprovalRequest as the current kubeconfig user")
    reject.add_argument("name")
    reject.add_argument("--reason", required=True, help="why (required)")
    common(reject)
    reject.set_defaults(func=_decide, approved=False)

    status = sub.add_parser("status", help="open approval requests, sagas and monitors (or one request)")
    status.add_argument("name", nargs="?", help="show this ApprovalRequest in detail")
    status.add_argument("-A", "--all-namespaces", action="store_true", help="list every namespace")
    status.add_argument("--all", action="store_true", help="include decided approval requests")
    common(status)
    status.set_defaults(func=_status)


def _connect(args: argparse.Namespace) -> tuple[client.CustomObjectsApi, str]:
    api = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    namespace = args.namespace
    if namespace is None:
        _, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
        if args.context:
            contexts, _ = config.list_kube_config_contexts(config_file=args.kubeconfig)
            active = next((c for c in contexts if c["name"] == args.context), active)
        namespace = (active or {}).get("context", {}).get("namespace") or "default"
    return client.CustomObjectsApi(api), namespace


def api_message(exc: ApiException) -> str:
    """The API server's own message (an admission webhook's refusal included), else the HTTP status."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or f"HTTP {exc.status} {exc.reason}")


def _get(api: client.CustomObjectsApi, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = api.get_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, name)
    return obj


def _decide(args: argparse.Namespace) -> int:
    api, namespace = _connect(args)
    kind = APPROVAL_REQUEST
    where = f"ApprovalRequest {namespace}/{args.name}"
    decision = {"approved": args.approved, "reason": args.reason}
    try:
        current = _get(api, kind, namespace, args.name)
        if ((current.get("spec") or {}).get("decision") or {}) == {k: v for k, v in decision.items() if v is not None}:
            by = ((current.get("metadata") or {}).get("annotations") or {}).get(DECIDED_BY, "someone")
            print(
                f"error: {where} already carries this exact decision (recorded for {by}); the API server "
                "would see no change. Give a --reason of your own.",
                file=sys.stderr,
            )
            return 1
        # reason: None removes a previous approver's reason under merge-patch semantics.
        patched = api.patch_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, args.name, {"spec": {"decision": decision}}
        )
    except ApiException as exc:
        if exc.status == 404:
            print(f"error: {where} not found", file=sys.stderr)
        else:
            print(f"error: {where}: {api_message(exc)}", file=sys.stderr)
        return 1
    who = ((patched.get("metadata") or {}).get("annotations") or {}).get(DECIDED_BY, "?")
    verb = "approved" if args.approved else "rejected"
    print(f"{where} {verb} by {who}")
    return 0


def _age(obj: dict[str, Any]) -> str:
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    if not created:
        return "?"
    seconds = int((datetime.now(UTC) - datetime.fromisoformat(created)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _detail(kind: Kind, obj: dict[str, Any]) -> str:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if kind is APPROVAL_REQUEST:
        approved = sum(1 for a in status.get("approvals") or [] if a.get("approved"))
        required = (spec.get("approvers") or {}).get("required", 1)
        if status.get("phase") in (None, "Pending"):
            return (
                f"{spec.get('subject', {}).get('title', '')} ({approved}/{required}, expires "
                f"{status.get('expiresAt', '?')})"
            )
        return str(status.get("reason") or status.get("approver") or "")
    if kind is TASK_SAGA:
        if status.get("phase") == "AwaitingApproval":
            return f"waiting for ApprovalRequest {status.get('approvalRequest')}"
        return str(status.get("currentStep") or (status.get("result") or {}).get("error") or "")
    return f"healthy={status.get('healthy')} checks={status.get('checkCount', 0)}"


def _status(args: argparse.Namespace) -> int:
    api, namespace = _connect(args)
    if args.name:
        return _show(api, namespace, args.name)
    rows: list[list[str]] = []
    for kind in (APPROVAL_REQUEST, TASK_SAGA, HEALTH_MONITOR):
        try:
            if args.all_namespaces:
                items = api.list_cluster_custom_object(kind.group, kind.version, kind.plural)["items"]
            else:
                items = api.list_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural)["items"]
        except ApiException as exc:
            print(f"warning: cannot list {kind.plural}: {api_message(exc)}", file=sys.stderr)
            continue
        for obj in items:
            phase = str((obj.get("status") or {}).get("phase") or "")
            if kind is APPROVAL_REQUEST and not args.all and phase not in OPEN:
                continue
            meta = obj["metadata"]
            rows.append(
                [
                    kind.kind,
                    *([meta["namespace"]] if args.all_namespaces else []),
                    meta["name"],
                    phase or "-",
                    _age(obj),
                    _detail(kind, obj),
                ]
            )
    header = ["KIND", *(["NAMESPACE"] if args.all_namespaces else []), "NAME", "PHASE", "AGE", "DETAIL"]
    _table(header, rows)
    return 0


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _show(api: client.CustomObjectsApi, namespace: str, name: str) -> int:
    try:
        obj = _get(api, APPROVAL_REQUEST, namespace, name)
    except ApiException as exc:
        print(f"error: ApprovalRequest {namespace}/{name}: {api_message(exc)}", file=sys.stderr)
        return 1
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    approvers = spec.get("approvers") or {}
    lines = [
        ("Name", f"{namespace}/{name}"),
        ("Title", spec.get("subject", {}).get("title", "")),
        ("Requested by", (obj["metadata"].get("annotations") or {}).get(REQUESTED_BY, "?")),
        (
            "Approvers",
            ", ".join([*approvers.get("users", []), *(f"group {g}" for g in approvers.get("groups", []))])
            + f" (required: {approvers.get('required', 1)})",
        ),
        ("Phase", status.get("phase", "-")),
        ("Expires", status.get("expiresAt", "-")),
        ("Approver", status.get("approver") or "-"),
        ("Reason", status.get("reason") or "-"),
    ]
    for label, value in lines:
        print(f"{label + ':':<14}{value}")
    for record in status.get("approvals") or []:
        verdict = "approved" if record.get("approved") else "rejected"
        print(f"  - {record.get('user')} {verdict} at {record.get('at')}: {record.get('reason') or ''}")
    return 0
