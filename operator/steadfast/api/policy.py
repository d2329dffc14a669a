"""SteadfastPolicy: what platform admins decide for every namespace, whatever a resource's author wrote.

Cluster-scoped, so only those with cluster-wide write rights (cluster admins; the chart grants nobody else)
can create or change one. An approval rule gates every TaskSaga it matches: a saga without `spec.approval`
is gated anyway, and the approvers are the policy's; the saga's own gate may only be stricter (a higher
quorum, a shorter timeout), never name other approvers.

An egress rule opens destinations to the actions of the namespaces it selects. Without one, an action may
reach Services of its own namespace and addresses outside the cluster's networks, nothing else in the
cluster: another namespace's Services and Pods are refused, so a user cannot make the operator call what
their own pods could not.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections import Counter
from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from steadfast.api.approval import Approvers
from steadfast.api.common import DNS_LABEL, DNS_SUBDOMAIN, PRIORITY, ApiModel, StatusBase
from steadfast.api.concurrency import MAX_LIMIT
from steadfast.api.duration import DurationCheck
from steadfast.api.repair import FailureAction
from steadfast.api.retention import MAXIMUM
from steadfast.api.saga import TemplateKind
from steadfast.api.schema import LIST_SET, Cel, list_map, rules

LabelValue = Annotated[str, Field(max_length=63)]
LabelKey = Annotated[str, Field(min_length=1, max_length=317)]


class SelectorRequirement(ApiModel):
    """One `matchExpressions` entry of a Kubernetes label selector."""

    key: LabelKey = Field(description="Label key.")
    operator: str = Field(pattern=r"^(In|NotIn|Exists|DoesNotExist)$", description="In, NotIn, Exists, DoesNotExist.")
    values: Annotated[list[LabelValue], LIST_SET] = Field(
        default_factory=list, max_length=64, description="Values for In and NotIn."
    )


class LabelSelector(ApiModel):
    """A Kubernetes label selector; empty matches everything."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=32, description="Labels that must all be present with these values."
    )
    match_expressions: list[SelectorRequirement] = Field(
        default_factory=list, max_length=16, description="Requirements that must all hold."
    )

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and (not present or labels[req.key] not in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


class PositiveRequirement(SelectorRequirement):
    """A requirement on a saga's labels: In or Exists only.

    A saga's labels are its author's: NotIn or DoesNotExist would gate every saga except those that carry a label,
    and the author escapes the gate by adding it.
    """

    operator: str = Field(
        pattern=r"^(In|Exists)$",
        description="In or Exists (NotIn and DoesNotExist are refused: the saga's author would escape them by "
        "adding a label).",
    )


class SagaLabelSelector(LabelSelector):
    """A label selector on a saga's own labels, which its author writes: positive requirements only."""

    match_expressions: list[PositiveRequirement] = Field(  # type: ignore[assignment]
        default_factory=list, max_length=16, description="Requirements that must all hold (In, Exists)."
    )


def same_priority(a: str, b: str) -> bool:
    """Priorities compare without case (and, for anything stored before the pattern, NFKC-normalised, stripped)."""

    def key(text: str) -> str:
        return unicodedata.normalize("NFKC", text).strip().casefold()

    return key(a) == key(b)


class ApprovalMatch(ApiModel):
    """Which TaskSagas a rule gates: all conditions must hold; an empty match gates every saga."""

    namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Labels of the saga's namespace."
    )
    label_selector: SagaLabelSelector = Field(
        default_factory=SagaLabelSelector,
        description="Labels of the saga, which its author writes: a rule that must hold for every saga of a "
        "namespace selects the namespace instead.",
    )
    priorities: Annotated[list[Annotated[str, Field(min_length=1, max_length=63, pattern=PRIORITY)]], LIST_SET] = Field(
        default_factory=list,
        max_length=16,
        description="spec.task.priority is one of these, ignoring case (empty: any). The saga's author picks "
        "its priority.",
    )


class ApprovalRule(ApiModel):
    """Gate the TaskSagas that match with an approval by these approvers."""

    name: str = Field(max_length=63, pattern=DNS_LABEL, description="Rule name, shown in the saga's status.")
    match: ApprovalMatch = Field(default_factory=ApprovalMatch, description="Which sagas the rule gates.")
    approvers: Approvers = Field(description="Who may approve; the saga's spec cannot change them.")
    timeout: Annotated[str, DurationCheck("timeout", minimum="1s", exclusive=False)] = Field(
        "72h", description="Undecided this long, the saga ends Rejected (a saga may ask for less)."
    )


_HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class EgressDestination(ApiModel):
    """One destination an egress rule opens: a network, a host name, or the Services of some namespaces."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            Cel(
                "(has(self.cidr) ? 1 : 0) + (has(self.host) ? 1 : 0) + (has(self.namespaces) ? 1 : 0) == 1",
                "a destination sets exactly one of cidr, host, namespaces",
            )
        )
    )

    cidr: str | None = Field(None, max_length=64, description="A network, e.g. 10.20.0.0/16 or 2001:db8::/32.")
    host: str | None = Field(
        None, max_length=253, description="A host name as written in the URL, or *.example.com for its subdomains."
    )
    namespaces: LabelSelector | None = Field(
        None, description="The Services of namespaces with these labels ({} selects every namespace)."
    )

    @model_validator(mode="after")
    def _one(self) -> EgressDestination:
        if sum(x is not None for x in (self.cidr, self.host, self.namespaces)) != 1:
            raise PydanticCustomError("destination", "a destination sets exactly one of cidr, host, namespaces")
        if self.cidr is not None:
            try:
                ipaddress.ip_network(self.cidr, strict=False)
            except ValueError:
                raise PydanticCustomError("cidr", "cidr {cidr} is not a network", {"cidr": repr(self.cidr)}) from None
        if self.host is not None and not _HOST.match(self.host.lower()):
            raise PydanticCustomError("host", "host {host} is not a host name", {"host": repr(self.host)})
        return self


class EgressRule(ApiModel):
    """Destinations the actions of the selected namespaces may reach, beyond their own Services."""

    name: str = Field(max_length=63, pattern=DNS_LABEL, description="Rule name, shown when it decides.")
    namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Namespaces whose resources the rule applies to ({}: all)."
    )
    allow: list[EgressDestination] = Field(min_length=1, max_length=64, description="What they may reach.")


class LimitRule(ApiModel):
    """How much of the operator's shared work the selected namespaces may hold at once."""

    name: str = Field(max_length=63, pattern=DNS_LABEL, description="Rule name.")
    namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Namespaces the rule applies to ({}: all)."
    )
    actions_in_flight: int = Field(
        ge=1,
        le=4096,
        description="Actions (HTTP calls, Kubernetes requests) one selected namespace may have running at once, "
        "instead of the operator's --actions-per-namespace; more wait for their turn. Never more than the "
        "operator's --action-threads. Where several rules select a namespace, the lowest number applies.",
    )


class FailureRule(ApiModel):
    """The default of spec.onFailure for TaskSagas in the selected namespaces (a saga's own setting wins)."""

    name: str = Field(max_length=63, pattern=DNS_LABEL, description="Rule name.")
    namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Namespaces the rule applies to ({}: all)."
    )
    action: FailureAction = Field(description="Pause (wait for a person's decision) or Compensate at once.")
    pause_timeout: Annotated[str, DurationCheck("pauseTimeout", minimum="1s", exclusive=False)] = Field(
        "24h", description="How long a paused saga waits before it compensates."
    )


class RetentionRule(ApiModel):
    """The default retention of finished TaskSagas and ApprovalRequests in the selected namespaces (a resource's
    own spec.retention wins, outcome by outcome)."""

    name: str = Field(max_length=63, pattern=DNS_LABEL, description="Rule name.")
    namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Namespaces the rule applies to ({}: all)."
    )
    succeeded: Annotated[str, DurationCheck("succeeded", exclusive=False, maximum=MAXIMUM)] | None = Field(
        None, description="Keep a TaskSaga that Succeeded (an ApprovalRequest Completed) this long after it ended."
    )
    failed: Annotated[str, DurationCheck("failed", exclusive=False, maximum=MAXIMUM)] | None = Field(
        None,
        description="Keep a TaskSaga Compensated, Failed or Rejected (an ApprovalRequest Rejected or TimedOut) this "
        "long after it ended.",
    )


class ConcurrencyRule(ApiModel):
    """A limit on the TaskSagas of the selected namespaces that name a matching concurrency key (their
    spec.concurrency.key, rendered); per namespace and key, as a saga's own limit is."""

    name: str = Field(max_length=63, pattern=DNS_LABEL, description="Rule name, shown in a queued saga's status.")
    namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Namespaces the rule applies to ({}: all)."
    )
    key: str = Field(
        min_length=1,
        max_length=253,
        description="The keys it limits: exact, or a glob (payments-*; * matches every key). Sagas without "
        "spec.concurrency are never limited.",
    )
    limit: int = Field(ge=1, le=MAX_LIMIT, description="Sagas of one such key running at once in a namespace.")


class AllowedTemplate(ApiModel):
    """A template sagas may come from (a SagaTemplate is the saga's own namespace's, which its editors write)."""

    kind: TemplateKind = Field(TemplateKind.CLUSTER_SAGA_TEMPLATE, description="ClusterSagaTemplate or SagaTemplate.")
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="The template's name.")

    def describe(self) -> str:
        return f"{self.kind.value} {self.name}"


class TemplateRule(ApiModel):
    """Golden paths: TaskSagas in the selected namespaces must come from one of these templates; inline steps
    and other templates are refused at admission."""

    name: str = Field(max_length=63, pattern=DNS_LABEL, description="Rule name, shown in the refusal.")
    namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Namespaces the rule applies to ({}: all)."
    )
    allowed: Annotated[list[AllowedTemplate], list_map("kind", "name")] = Field(
        min_length=1, max_length=64, description="The templates sagas there may name."
    )


class SteadfastPolicySpec(ApiModel):
    """Rules platform admins set for every namespace."""

    approvals: Annotated[list[ApprovalRule], list_map("name")] = Field(
        default_factory=list, max_length=32, description="Approval gates; every matching rule applies."
    )
    egress: Annotated[list[EgressRule], list_map("name")] = Field(
        default_factory=list, max_length=64, description="Destinations opened to actions; every matching rule adds."
    )
    limits: Annotated[list[LimitRule], list_map("name")] = Field(
        default_factory=list, max_length=32, description="Per-namespace limits on the operator's shared work."
    )
    failure: Annotated[list[FailureRule], list_map("name")] = Field(
        default_factory=list,
        max_length=32,
        description="What TaskSagas do when a step fails, by default (their spec.onFailure wins). Where several "
        "rules select a namespace, Pause wins over Compensate and the shortest pauseTimeout applies.",
    )

    retention: Annotated[list[RetentionRule], list_map("name")] = Field(
        default_factory=list,
        max_length=32,
        description="How long finished TaskSagas and ApprovalRequests are kept before the operator deletes them, "
        "by default (their spec.retention wins). Where several rules select a namespace, the shortest applies, "
        "outcome by outcome. Unfinished resources and those waiting for a person are never removed.",
    )

    concurrency: Annotated[list[ConcurrencyRule], list_map("name")] = Field(
        default_factory=list,
        max_length=32,
        description="Limits on TaskSagas by concurrency key; the lowest of the saga's own and every matching rule "
        "applies, resolved when the saga starts.",
    )

    templates: Annotated[list[TemplateRule], list_map("name")] = Field(
        default_factory=list,
        max_length=32,
        description="Golden paths: the templates TaskSagas of the selected namespaces must come from; every "
        "matching rule must hold.",
    )

    @field_validator("approvals", "egress", "limits", "failure", "retention", "concurrency", "templates")
    @classmethod
    def _unique(cls, rules: list[Any]) -> list[Any]:
        dupes = sorted(n for n, c in Counter(r.name for r in rules).items() if c > 1)
        if dupes:
            raise PydanticCustomError(
                "unique", "rule names must be unique; repeated: {names}", {"names": ", ".join(dupes)}
            )
        return rules


class SteadfastPolicyStatus(StatusBase):
    """The policy as the operator last read it."""
