"""`steadfast status`: what is open (approval requests, sagas, monitors), or one ApprovalRequest in detail."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast import kubeconfig
from steadfast.api.kinds import APPROVAL_REQUEST, HEALTH_MONITOR, REQUESTED_BY, TASK_SAGA, Kind
from steadfast.text import shown

OPEN = {"", "Pending", "Approved", "Executing"}


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser("status", help="open approval requests, sagas and monitors (or one request)")
    status.add_argument("name", nargs="?", help="show this ApprovalRequest in detail")
    status.add_argument("-A", "--all-namespaces", action="store_true", help="list every namespace")
    status.add_argument("--all", action="store_true", help="include decided approval requests")
    kubeconfig.add_arguments(status)
    status.set_defaults(func=_status)


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
    api, namespace = kubeconfig.connect(args)
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
            print(f"warning: cannot list {kind.plural}: {kubeconfig.api_message(exc)}", file=sys.stderr)
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
    rows = [[shown(cell) for cell in row] for row in rows]  # titles and reasons users wrote
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _show(api: client.CustomObjectsApi, namespace: str, name: str) -> int:
    try:
        obj = kubeconfig.get(api, APPROVAL_REQUEST, namespace, name)
    except ApiException as exc:
        print(shown(f"error: ApprovalRequest {namespace}/{name}: {kubeconfig.api_message(exc)}"), file=sys.stderr)
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
        print(f"{label + ':':<14}{shown(str(value))}")
    for record in status.get("approvals") or []:
        verdict = "approved" if record.get("approved") else "rejected"
        print(shown(f"  - {record.get('user')} {verdict} at {record.get('at')}: {record.get('reason') or ''}"))
    return 0
