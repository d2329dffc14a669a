"""Admission of a TaskSaga that names a template, and of one the admins' golden paths apply to.

Refused, each naming the field: a template the requester may not `get` (a SubjectAccessReview, asked before
the template is read, so a refusal tells nothing of what exists: nobody runs a definition they may not read),
a template that does not exist, parameters that do not fit its declarations, and, in a namespace a
SteadfastPolicy `templates` rule selects, inline steps or a template the rule does not allow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from steadfast import identity
from steadfast.api.errors import Unstartable
from steadfast.api.kinds import CLUSTER_SAGA_TEMPLATE, GROUP, SAGA_TEMPLATE
from steadfast.api.policy import LabelSelector, SteadfastPolicySpec
from steadfast.api.saga import TaskSagaSpec, TemplateKind, TemplateRef
from steadfast.templates.render import parameter_problems, template_spec

# (ref, namespace) -> the template's object, or None when it does not exist.
ReadTemplate = Callable[[TemplateRef, str], "dict[str, Any] | None"]
# (userinfo, plural, namespace ("" for cluster-scoped), name) -> whether RBAC allows `get`.
MayGet = Callable[[Mapping[str, Any], str, str, str], bool]
# Every SteadfastPolicy by name; and a namespace's labels, read only when a policy has golden paths.
ReadPolicies = Callable[[], "list[tuple[str, SteadfastPolicySpec]]"]
ReadLabels = Callable[[str], "dict[str, str]"]


def golden_path_problem(
    spec: TaskSagaSpec, namespace_labels: Mapping[str, str], policies: list[tuple[str, SteadfastPolicySpec]]
) -> str | None:
    """Why the saga leaves a golden path a policy sets for its namespace (every matching rule must hold)."""
    for policy, rules in policies:
        for rule in rules.templates:
            if not _selects(rule.namespace_selector, namespace_labels):
                continue
            named = spec.template
            if named is not None and any((a.kind, a.name) == (named.kind, named.name) for a in rule.allowed):
                continue
            what = "inline spec.steps are" if named is None else f"spec.template {named.kind.value} {named.name} is"
            allowed = ", ".join(a.describe() for a in rule.allowed)
            return (
                f"{what} not allowed in this namespace: SteadfastPolicy {policy} rule {rule.name} requires TaskSagas "
                f"made from one of: {allowed}"
            )
    return None


def _selects(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    return selector.matches(dict(labels))


class TemplateAdmission:
    """The checks of a TaskSaga's CREATE; the clients are the operator's (reads) and the API server's answers."""

    def __init__(self, read: ReadTemplate, may_get: MayGet, policies: ReadPolicies, labels: ReadLabels) -> None:
        self._read = read
        self._may_get = may_get
        self._policies = policies
        self._labels = labels

    def __call__(self, userinfo: Mapping[str, Any], namespace: str, new: Mapping[str, Any] | None) -> str | None:
        """Why the saga must be refused, or None. A spec the model refuses is the spec check's to report."""
        try:
            spec = TaskSagaSpec.model_validate(identity.spec_of(new))
        except ValidationError:
            return None
        policies = self._policies()  # fail closed: an unreadable policy refuses the saga (the webhook errs)
        golden = any(p.templates for _, p in policies)
        if golden and (problem := golden_path_problem(spec, self._labels(namespace), policies)):
            return problem
        ref = spec.template
        if ref is None:
            return None
        cluster = ref.kind == TemplateKind.CLUSTER_SAGA_TEMPLATE
        kind = CLUSTER_SAGA_TEMPLATE if cluster else SAGA_TEMPLATE
        user = userinfo.get("username")
        if not self._may_get(userinfo, kind.plural, "" if cluster else namespace, ref.name):
            scope = "" if cluster else f" -n {namespace}"
            return (
                f"spec.template: {user} may not get {ref.kind.value} {ref.name}, so may not run it (check with: "
                f"kubectl auth can-i get {kind.plural}.{GROUP}/{ref.name}{scope})"
            )
        body = self._read(ref, namespace)
        if body is None:
            where = "" if cluster else f" in namespace {namespace}"
            return f"spec.template: {ref.kind.value} {ref.name} not found{where}"
        try:
            template = template_spec(ref, body)
        except Unstartable as exc:
            return f"spec.template: {exc.message}"
        problems = parameter_problems(spec, template)
        return "; ".join(problems) or None
