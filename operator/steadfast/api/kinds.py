"""The one description of each kind: names, models and printer columns, used by CRD generation and the operator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steadfast.api.approval import DECISION_FINAL, ApprovalRequestSpec, ApprovalRequestStatus
from steadfast.api.common import ApiModel, StatusBase
from steadfast.api.monitor import HealthMonitorSpec, HealthMonitorStatus
from steadfast.api.policy import SteadfastPolicySpec, SteadfastPolicyStatus
from steadfast.api.saga import TaskSagaSpec, TaskSagaStatus
from steadfast.api.schedule import NAME_LENGTH, SagaScheduleSpec, SagaScheduleStatus
from steadfast.api.schema import Cel
from steadfast.api.template import SagaTemplateSpec, SagaTemplateStatus

GROUP = "steadfast.dev"
# Set at admission on CREATE (a kopf patch per resource otherwise); kopf removes it once the instance is gone.
FINALIZER = f"{GROUP}/finalizer"
# Identities stamped by the admission webhooks from the API server's authentication, never typed by users.
REQUESTED_BY = f"{GROUP}/requested-by"
# The creator's groups, a JSON list (any group name round-trips), as the API server authenticated them.
REQUESTED_GROUPS = f"{GROUP}/requested-by-groups"
DECIDED_BY = f"{GROUP}/decided-by"
# What makes the stamps above trustworthy: HMACs with the operator's key (steadfast.seals). The readable
# annotations are for people; the operator acts only on what a seal vouches for.
SEAL = f"{GROUP}/seal"
DECISION_SEAL = f"{GROUP}/decision-seal"
# Who made the last repair decision (spec.repair), and its seal; stamped by the mutating webhook.
REPAIRED_BY = f"{GROUP}/repaired-by"
REPAIR_SEAL = f"{GROUP}/repair-seal"
# The RBAC verb a repair decision needs on the resource, besides patch: a namespace viewer has neither.
REPAIR_VERB = "repair"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "steadfast"


@dataclass(frozen=True)
class PrinterColumn:
    """An `additionalPrinterColumns` entry of the CRD (what `kubectl get` shows). `steadfast list` reads its
    table from these columns too (the API server's Table format), so what its detail needs is a column."""

    name: str
    type: str  # string, integer, number, boolean or date
    json_path: str
    description: str = ""
    priority: int = 0  # 1 = only with -o wide

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            out["description"] = self.description
        if self.priority:
            out["priority"] = self.priority
        return out


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")


@dataclass(frozen=True)
class Kind:
    """A custom resource kind of Steadfast. `spec_model`/`status_model` are the schema's single source."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec_model: type[ApiModel]
    status_model: type[StatusBase]
    description: str
    printer_columns: tuple[PrinterColumn, ...]
    root_rules: tuple[Cel, ...] = ()
    # The CRD refuses any change of spec (a CEL transition rule on it) but for the fields in `mutable_spec`:
    # nothing else to diff after creation.
    spec_immutable: bool = False
    mutable_spec: tuple[str, ...] = ()
    categories: tuple[str, ...] = (CATEGORY,)
    # JSON paths the API server can filter lists on (`fieldSelector=status.phase=Paused`): the CRD's
    # selectableFields. Without them a filter by phase would mean fetching every object of the kind.
    selectable_fields: tuple[str, ...] = ()
    group: str = GROUP
    version: str = VERSION
    namespaced: bool = True
    list_kind: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "list_kind", f"{self.kind}List")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    def parse_spec(self, raw: Any) -> ApiModel:
        """Validate a spec as the API server returns it (defaults filled in) or as a user wrote it."""
        return self.spec_model.model_validate(raw)

    def parse_status(self, raw: Any) -> StatusBase:
        """Validate a status subresource; a missing status reads as an empty one."""
        return self.status_model.model_validate(raw or {})


TASK_SAGA = Kind(
    kind="TaskSaga",
    plural="tasksagas",
    singular="tasksaga",
    short_names=("saga",),
    spec_model=TaskSagaSpec,
    status_model=TaskSagaStatus,
    description="A saga of HTTP steps run durably by a workflow; on failure, completed steps are compensated "
    "in reverse order. Progress is in status.",
    printer_columns=(
        PrinterColumn("Phase", "string", ".status.phase", "Where the saga is."),
        PrinterColumn("Step", "string", ".status.currentStep", "The step or compensation running now."),
        PrinterColumn("Progress", "string", ".status.progress", "Steps succeeded or skipped over all steps."),
        PrinterColumn("Task", "string", ".spec.task.id", "The task ID.", priority=1),
        PrinterColumn("Template", "string", ".spec.template.name", "The template it runs, if any.", priority=1),
        PrinterColumn("Result", "string", ".status.result.status", "The outcome.", priority=1),
        PrinterColumn("Error", "string", ".status.result.error", "Why it did not succeed.", priority=1),
        AGE,
    ),
    spec_immutable=True,
    mutable_spec=("repair",),  # a person's decision (steadfast.api.repair)
    selectable_fields=(".status.phase",),
)

HEALTH_MONITOR = Kind(
    kind="HealthMonitor",
    plural="healthmonitors",
    singular="healthmonitor",
    short_names=("hmon",),
    spec_model=HealthMonitorSpec,
    status_model=HealthMonitorStatus,
    description="An eternal health check with adaptive intervals that alerts once per transition.",
    printer_columns=(
        PrinterColumn("Healthy", "boolean", ".status.healthy", "The current state."),
        PrinterColumn("Phase", "string", ".status.phase", "Unknown, Healthy, Unhealthy or Suspended."),
        PrinterColumn("Checks", "integer", ".status.checkCount", "Checks made."),
        PrinterColumn("Failures", "integer", ".status.consecutiveFailures", "Failed checks in a row.", priority=1),
        PrinterColumn("Last Check", "date", ".status.lastCheckTime", "When the last check finished."),
        PrinterColumn("Condition", "string", ".status.failedCondition", "The condition that failed.", priority=1),
        PrinterColumn("Last Error", "string", ".status.lastError", "Why the last failed check failed.", priority=1),
        AGE,
    ),
    selectable_fields=(".status.phase",),
)

APPROVAL_REQUEST = Kind(
    kind="ApprovalRequest",
    plural="approvalrequests",
    singular="approvalrequest",
    short_names=("apr",),
    spec_model=ApprovalRequestSpec,
    status_model=ApprovalRequestStatus,
    description="A request for a human decision, set with kubectl patch on spec.decision; times out as a "
    "rejection; runs spec.action on approval.",
    printer_columns=(
        PrinterColumn("Phase", "string", ".status.phase", "Where the request is."),
        PrinterColumn("Title", "string", ".spec.subject.title", "What is being approved."),
        PrinterColumn("Approver", "string", ".status.approver", "Who decided."),
        PrinterColumn("Expires", "string", ".status.expiresAt", "When an undecided request times out."),
        PrinterColumn("Reason", "string", ".status.reason", "Why it ended as it did.", priority=1),
        AGE,
    ),
    root_rules=(DECISION_FINAL,),
    selectable_fields=(".status.phase",),
)

SAGA_SCHEDULE = Kind(
    kind="SagaSchedule",
    plural="sagaschedules",
    singular="sagaschedule",
    short_names=("ssched",),
    spec_model=SagaScheduleSpec,
    status_model=SagaScheduleStatus,
    description="Creates a TaskSaga on a cron schedule, as the schedule's creator; driven by a durable workflow, "
    "so a time missed while the operator was down is caught up once (within startingDeadline).",
    printer_columns=(
        PrinterColumn("Schedule", "string", ".spec.schedule", "The cron schedule."),
        PrinterColumn("Suspend", "boolean", ".spec.suspend", "No runs while true."),
        PrinterColumn("Active", "integer", ".status.activeCount", "Runs not finished yet."),
        PrinterColumn("Runs", "string", ".status.active", "The active runs.", priority=1),
        PrinterColumn("Last", "date", ".status.lastScheduleTime", "The scheduled time of the last run."),
        # A string, not a date: kubectl shows a future date as <invalid> (it prints ages).
        PrinterColumn("Next", "string", ".status.nextScheduleTime", "When the next run is due."),
        AGE,
    ),
    root_rules=(NAME_LENGTH,),
)

KINDS: tuple[Kind, ...] = (TASK_SAGA, HEALTH_MONITOR, APPROVAL_REQUEST)
# Kinds that make runs rather than being one: bound to a workflow like KINDS, but without phases, so not in the
# fleet's views (steadfast list) that KINDS feeds.
SCHEDULE_KINDS: tuple[Kind, ...] = (SAGA_SCHEDULE,)

# Admin-owned and cluster-scoped; no workflow runs it, so it is not one of the KINDS the operator binds.
POLICY = Kind(
    kind="SteadfastPolicy",
    plural="steadfastpolicies",
    singular="steadfastpolicy",
    short_names=("sfpolicy",),
    spec_model=SteadfastPolicySpec,
    status_model=SteadfastPolicyStatus,
    description="Rules platform admins set for every namespace: which TaskSagas need approval and by whom.",
    printer_columns=(AGE,),
    categories=(),
    namespaced=False,
)


# Definitions a TaskSaga names (spec.template); no workflow runs them, so they are not among the KINDS either.
_TEMPLATE_COLUMNS = (
    PrinterColumn("Description", "string", ".spec.description", "What a saga made from it does."),
    AGE,
)
SAGA_TEMPLATE = Kind(
    kind="SagaTemplate",
    plural="sagatemplates",
    singular="sagatemplate",
    short_names=("stpl",),
    spec_model=SagaTemplateSpec,
    status_model=SagaTemplateStatus,
    description="A TaskSaga's definition with typed parameters, for the sagas of its namespace (spec.template).",
    printer_columns=_TEMPLATE_COLUMNS,
)
CLUSTER_SAGA_TEMPLATE = Kind(
    kind="ClusterSagaTemplate",
    plural="clustersagatemplates",
    singular="clustersagatemplate",
    short_names=("cstpl",),
    spec_model=SagaTemplateSpec,
    status_model=SagaTemplateStatus,
    description="A TaskSaga's definition with typed parameters, offered to every namespace by the platform team.",
    printer_columns=_TEMPLATE_COLUMNS,
    namespaced=False,
)
TEMPLATES: tuple[Kind, ...] = (SAGA_TEMPLATE, CLUSTER_SAGA_TEMPLATE)


def kind_named(name: str) -> Kind:
    """Look up by kind, plural, singular or short name (case-insensitive), as kubectl does."""
    wanted = name.lower()
    for k in KINDS:
        if wanted in (k.kind.lower(), k.plural, k.singular, *k.short_names):
            return k
    raise KeyError(f"no Steadfast kind named {name!r}; known: {', '.join(k.kind for k in KINDS)}")
