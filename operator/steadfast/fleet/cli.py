"""`steadfast list`: Steadfast resources in one namespace or all, filtered; as a table, JSON records or names."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from kubernetes import client

from steadfast import kubeconfig
from steadfast.api.kinds import KINDS
from steadfast.fleet import query, render
from steadfast.fleet.filters import Filters
from steadfast.fleet.record import FleetRecord, from_object

EXAMPLES = """examples:
  steadfast list -A --needs-person
  steadfast list -A --kind saga --phase CompensationFailed --newer-than 24h
  steadfast list -n payments --waiting-for alice -o json
  steadfast list -A -l team=payments --phase Paused -o name
"""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "list",
        help="TaskSagas, ApprovalRequests and HealthMonitors across namespaces, filtered",
        description="List Steadfast resources. Kind, phase and labels are filtered by the API server.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    cmd.add_argument(
        "--kind",
        action="append",
        default=[],
        help=f"kind by any kubectl name, repeatable or comma-separated (default: {', '.join(k.kind for k in KINDS)})",
    )
    cmd.add_argument("--phase", action="append", default=[], help="status.phase, repeatable or comma-separated")
    cmd.add_argument("-l", "--selector", default=None, help="label selector, e.g. team=payments,tier!=test")
    cmd.add_argument("--older-than", default=None, metavar="AGE", help="created before AGE ago (30m, 24h, 7d)")
    cmd.add_argument("--newer-than", default=None, metavar="AGE", help="created within AGE (30m, 24h, 7d)")
    cmd.add_argument(
        "--needs-person",
        action="store_true",
        help="only what waits for a person: ApprovalRequest Pending; TaskSaga Paused, CompensationFailed, "
        "AwaitingApproval; HealthMonitor Unhealthy",
    )
    cmd.add_argument(
        "--waiting-for",
        default=None,
        metavar="USER",
        help="Pending approval requests listing USER in spec.approvers.users, and sagas awaiting a repair "
        "(Paused, CompensationFailed)",
    )
    cmd.add_argument("-o", "--output", choices=render.FORMATS, default="table", help="output format")
    kubeconfig.add_arguments(cmd)
    cmd.set_defaults(func=_list)


def listing(
    api: client.CustomObjectsApi,
    filters: Filters,
    namespace: str | None,
    now: datetime | None = None,
    *,
    output: str = "json",
) -> tuple[list[FleetRecord], list[str]]:
    """The records `filters` keep in `namespace` (None: all), sorted by kind, namespace and name; and warnings.

    For the table and names, unless a filter reads more than the printer columns, the API server's Table
    format is read instead of whole objects (query.fetch); the records are the same but for JSON-only fields
    (approvers outside the detailed phases)."""
    objects = output == "json" or filters.needs_objects
    answer = query.fetch(api, filters.requests(), namespace, filters.selector, objects=objects)
    now = now or datetime.now(UTC)
    records = [from_object(request.kind, obj, now) for request, obj in answer.items]
    order = {k.kind: i for i, k in enumerate(KINDS)}
    kept = sorted((r for r in records if filters.keep(r)), key=lambda r: (order[r.kind], r.namespace, r.name))
    warnings = [f"warning: no selected kind has phase {p}" for p in filters.unknown] + answer.warnings
    return kept, warnings


def _list(args: argparse.Namespace) -> int:
    try:
        filters = Filters.build(
            kinds=args.kind,
            phases=args.phase,
            selector=args.selector,
            older_than=args.older_than,
            newer_than=args.newer_than,
            needs_person=args.needs_person,
            waiting_for=args.waiting_for,
        )
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    api, namespace = kubeconfig.connect(args)
    records, warnings = listing(api, filters, None if args.all_namespaces else namespace, output=args.output)
    for warning in warnings:
        print(warning, file=sys.stderr)
    if not records and args.output != "json":  # as kubectl: nothing on stdout, so pipes see no rows
        if args.output == "table":
            print("No resources found.", file=sys.stderr)
        return 0
    print(render.render(records, args.output, namespaces=args.all_namespaces))
    return 0
