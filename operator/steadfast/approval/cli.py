"""`steadfast approve | reject`: decide an ApprovalRequest as the kubeconfig user.

Deciding is a plain patch of spec.decision, the same as `kubectl patch`: the API server authenticates
the user and Steadfast's admission webhook checks and records them, so this command needs no
privilege of its own and cannot claim to be anyone else. The API server's refusal is shown verbatim.
"""

from __future__ import annotations

import argparse
import sys

from kubernetes.client.exceptions import ApiException

from steadfast import kubeconfig
from steadfast.api.kinds import APPROVAL_REQUEST, DECIDED_BY
from steadfast.text import shown


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    approve = sub.add_parser("approve", help="approve an ApprovalRequest as the current kubeconfig user")
    approve.add_argument("name")
    approve.add_argument("--reason", default=None, help="why (optional)")
    kubeconfig.add_arguments(approve)
    approve.set_defaults(func=_decide, approved=True)

    reject = sub.add_parser("reject", help="reject an ApprovalRequest as the current kubeconfig user")
    reject.add_argument("name")
    reject.add_argument("--reason", required=True, help="why (required)")
    kubeconfig.add_arguments(reject)
    reject.set_defaults(func=_decide, approved=False)


def _decide(args: argparse.Namespace) -> int:
    api, namespace = kubeconfig.connect(args)
    kind = APPROVAL_REQUEST
    where = f"ApprovalRequest {namespace}/{args.name}"
    decision = {"approved": args.approved, "reason": args.reason}
    try:
        current = kubeconfig.get(api, kind, namespace, args.name)
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
            print(shown(f"error: {where}: {kubeconfig.api_message(exc)}"), file=sys.stderr)
        return 1
    who = ((patched.get("metadata") or {}).get("annotations") or {}).get(DECIDED_BY, "?")
    verb = "approved" if args.approved else "rejected"
    print(shown(f"{where} {verb} by {who}"))
    return 0
