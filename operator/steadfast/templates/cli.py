"""`steadfast template params NAME [-n NS | --cluster]`: the parameters a template declares, as a table.

What a saga naming the template must (or may) give in spec.parameters, read as the kubeconfig user.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from steadfast import kubeconfig
from steadfast.api.errors import invalid_spec
from steadfast.api.kinds import CLUSTER_SAGA_TEMPLATE, SAGA_TEMPLATE
from steadfast.api.template import Parameter, SagaTemplateSpec
from steadfast.text import shown

HEADERS = ("NAME", "TYPE", "REQUIRED", "DEFAULT", "ALLOWED", "DESCRIPTION")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    template = sub.add_parser("template", help="saga templates (SagaTemplate, ClusterSagaTemplate)")
    verbs = template.add_subparsers(dest="verb", required=True)
    params = verbs.add_parser("params", help="the parameters a template declares", description=__doc__)
    params.add_argument("name", help="the template")
    params.add_argument("--cluster", action="store_true", help="a ClusterSagaTemplate (default: a SagaTemplate)")
    kubeconfig.add_arguments(params)
    params.set_defaults(func=_params)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return shown(str(value))


def allowed(p: Parameter) -> str:
    """The constraints of a parameter in a few words: enum, range, length, pattern."""
    parts: list[str] = []
    if p.enum:
        parts.append("|".join(_value(v) for v in p.enum))
    if p.minimum is not None or p.maximum is not None:
        parts.append(f"{'' if p.minimum is None else p.minimum}..{'' if p.maximum is None else p.maximum}")
    if p.min_length is not None or p.max_length is not None:
        low = "" if p.min_length is None else p.min_length
        high = "" if p.max_length is None else p.max_length
        parts.append(f"length {low}..{high}")
    if p.pattern is not None:
        parts.append(f"~{shown(p.pattern)}")
    return " ".join(parts) or "-"


def parameter_rows(spec: SagaTemplateSpec) -> list[tuple[str, str, str, str, str, str]]:
    """The parameter schema as HEADERS' columns, for this table and the console's (text with invisibles shown)."""
    return [
        (
            p.name,
            p.type.value,
            "yes" if p.is_required else "no",
            "-" if p.default is None else _value(p.default),
            allowed(p),
            shown(p.description or ""),
        )
        for p in spec.parameters
    ]


def table(spec: SagaTemplateSpec) -> str:
    rows = parameter_rows(spec)
    widths = [max(len(r[i]) for r in [HEADERS, *rows]) for i in range(len(HEADERS) - 1)]
    lines = [
        "   ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip()
        for r in [HEADERS, *rows]
    ]
    return "\n".join(lines)


def _params(args: argparse.Namespace) -> int:
    api, namespace = kubeconfig.connect(args)
    kind = CLUSTER_SAGA_TEMPLATE if args.cluster else SAGA_TEMPLATE
    where = f"{kind.kind} {args.name}" if args.cluster else f"{kind.kind} {namespace}/{args.name}"
    try:
        if args.cluster:
            body = api.get_cluster_custom_object(kind.group, kind.version, kind.plural, args.name)
        else:
            body = kubeconfig.get(api, kind, namespace, args.name)
    except ApiException as exc:
        print(f"error: {where}: {kubeconfig.api_message(exc)}", file=sys.stderr)
        return 1
    try:
        spec = SagaTemplateSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        print(f"error: {args.name} is not a valid template: {invalid_spec(exc)}", file=sys.stderr)
        return 1
    if spec.description:
        print(shown(spec.description))
    if not spec.parameters:
        print("no parameters")
        return 0
    print(table(spec))
    return 0
