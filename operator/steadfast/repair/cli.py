"""`steadfast retry | skip | compensate | resolve`: decide what happens to a saga that went wrong, as the
kubeconfig user, on one resource by name or on every resource a label selector matches.

Each decision is a plain JSON merge patch of `spec.repair`, the same as `kubectl patch`: the API server
authenticates the user and Steadfast's admission webhooks stamp who decided and refuse what does not fit the
resource's phase or the user's RBAC. This command holds no privilege of its own and judges nothing: a refusal
is shown as the API server worded it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast import kubeconfig
from steadfast.api.kinds import APPROVAL_REQUEST, TASK_SAGA, Kind
from steadfast.repair.decisions import Action, Decision, Outcome, already_carries, recorded, summary, unchanged
from steadfast.text import shown

# `--kind` of `retry`: an ApprovalRequest whose approved action failed (ActionFailed) is retried too.
_RETRYABLE = (TASK_SAGA, APPROVAL_REQUEST)


def _kind(value: str) -> Kind:
    for kind in _RETRYABLE:
        if value.lower() in (kind.kind.lower(), kind.plural, kind.singular, *kind.short_names):
            return kind
    raise argparse.ArgumentTypeError(f"{value!r}: retry acts on saga (TaskSaga) or apr (ApprovalRequest)")


def _verb(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    action: Action,
    help_text: str,
    *,
    step: str,
    reason: str,
    step_required: bool = False,
    reason_required: bool = False,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("name", nargs="?", help="the resource (or -l SELECTOR)")
    parser.add_argument("-l", "--selector", default=None, help="act on every resource with these labels")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="with -l: in every namespace")
    parser.add_argument(
        "--phase",
        action="append",
        default=None,
        help="with -l: only resources in this phase (repeatable); the webhook still judges each one",
    )
    parser.add_argument("--step", required=step_required, default=None, help=step)
    parser.add_argument("--reason", required=reason_required, default=None, help=reason)
    kubeconfig.add_arguments(parser)
    parser.set_defaults(func=_run, action=action, kind=TASK_SAGA)
    return parser


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    retry = _verb(
        sub,
        "retry",
        "Retry",
        "retry a paused saga's failed step, a saga's failed compensations, or an approved action that failed",
        step="the paused step (optional: the saga knows it)",
        reason="why (optional)",
    )
    retry.add_argument(
        "--kind", type=_kind, default=TASK_SAGA, help="saga (TaskSaga, the default) or apr (ApprovalRequest)"
    )
    _verb(
        sub,
        "skip",
        "Skip",
        "skip a paused saga's failed step and go on with the next",
        step="the paused step (optional: the saga knows it)",
        reason="why the step may be skipped (required)",
        reason_required=True,
    )
    _verb(
        sub,
        "compensate",
        "Compensate",
        "compensate a paused saga now instead of waiting for its pause to time out",
        step="the paused step (optional: the saga knows it)",
        reason="why (optional)",
    )
    _verb(
        sub,
        "resolve",
        "Resolve",
        "record that a failed compensation was undone by hand (a CompensationFailed saga)",
        step="the step whose compensation was undone by hand (required)",
        reason="what was done, and by whom (required)",
        step_required=True,
        reason_required=True,
    )


def _run(args: argparse.Namespace) -> int:
    if (args.name is None) == (args.selector is None):
        print(f"error: {args.command} takes either a NAME or -l SELECTOR", file=sys.stderr)
        return 2
    if args.all_namespaces and args.selector is None:
        print("error: -A needs -l SELECTOR (a NAME is in one namespace: use -n)", file=sys.stderr)
        return 2
    if args.phase and args.selector is None:
        print("error: --phase filters what -l SELECTOR matches", file=sys.stderr)
        return 2
    if args.kind is APPROVAL_REQUEST and args.step is not None:
        print("error: --step applies to a TaskSaga; an ApprovalRequest has one action", file=sys.stderr)
        return 2
    decision = Decision(action=args.action, step=args.step, reason=args.reason)
    api, namespace = kubeconfig.connect(args)
    if args.selector is not None:
        scope = None if args.all_namespaces else namespace
        return bulk(api, args.kind, scope, args.selector, decision, phases=args.phase)
    return one(api, args.kind, namespace, args.name, decision)


def one(api: client.CustomObjectsApi, kind: Kind, namespace: str, name: str, decision: Decision) -> int:
    """Decide for one resource by name: the result on stdout, or why not on stderr and exit code 1."""
    where = f"{kind.kind} {namespace}/{name}"
    try:
        current = kubeconfig.get(api, kind, namespace, name)
    except ApiException as exc:
        message = "not found" if exc.status == 404 else kubeconfig.api_message(exc)
        print(shown(f"error: {where}: {message}"), file=sys.stderr)
        return 1
    outcome = decide(api, kind, current, decision)
    if not outcome.done:
        print(shown(f"error: {kind.kind} {outcome.line()}"), file=sys.stderr)
        return 1
    print(shown(f"{kind.kind} {outcome.line()}"))
    return 0


def bulk(
    api: client.CustomObjectsApi,
    kind: Kind,
    namespace: str | None,
    selector: str,
    decision: Decision,
    *,
    phases: list[str] | None = None,
) -> int:
    """Decide for every resource `selector` matches (in `namespace`, or every namespace when None): one line
    per resource, then "N done, M refused"; exit code 0 only when all were done.

    `phases` narrows the matches to resources whose status.phase (as listed) is one of them. It only chooses
    what to send: whether a decision fits is the admission webhook's judgement, on the phase at that moment.
    """
    where = "any namespace" if namespace is None else f"namespace {namespace}"
    try:
        if namespace is None:
            listed = api.list_cluster_custom_object(kind.group, kind.version, kind.plural, label_selector=selector)
        else:
            listed = api.list_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, label_selector=selector
            )
    except ApiException as exc:
        print(shown(f"error: cannot list {kind.plural} in {where}: {kubeconfig.api_message(exc)}"), file=sys.stderr)
        return 1
    items: list[dict[str, Any]] = listed.get("items") or []
    if phases:
        left = len(items)
        items = [obj for obj in items if (obj.get("status") or {}).get("phase") in phases]
        left -= len(items)
        if left:
            print(shown(f"{left} other match(es) not in phase {', '.join(phases)}: left alone"), file=sys.stderr)
    if not items:
        in_phase = f" in phase {', '.join(phases)}" if phases else ""
        print(shown(f"no {kind.kind} matches -l {selector}{in_phase} in {where}"), file=sys.stderr)
    outcomes = []
    for obj in sorted(items, key=_name):
        outcome = decide(api, kind, obj, decision)
        print(shown(outcome.line()))
        outcomes.append(outcome)
    line, code = summary(outcomes)
    print(line)
    return code


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def decide(api: client.CustomObjectsApi, kind: Kind, current: dict[str, Any], decision: Decision) -> Outcome:
    """Patch `current`'s spec.repair to `decision`, unless it already is exactly that (no change to send)."""
    name = _name(current)
    if already_carries(current, decision):
        return unchanged(name, current)
    meta = current["metadata"]
    try:
        answer = api.patch_namespaced_custom_object(
            kind.group, kind.version, meta["namespace"], kind.plural, meta["name"], decision.merge_patch()
        )
    except ApiException as exc:
        message = "not found (deleted meanwhile)" if exc.status == 404 else kubeconfig.api_message(exc)
        return Outcome(name=name, done=False, message=message)
    return recorded(name, decision, answer)
