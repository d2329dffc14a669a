"""`steadfast run`: kopf (resources) and the Dapr WorkflowRuntime (workflows, activities) in one process."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import secrets
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime
from kubernetes import client
from pydantic import ValidationError

from steadfast import catalog, endpoints, metrics, persistence, seal_key, webhooks
from steadfast.actions import ActionRunner
from steadfast.api.kinds import FINALIZER, KINDS
from steadfast.api.retention import Retention
from steadfast.api.saga import TaskSagaSpec
from steadfast.binding import Bindings
from steadfast.cluster_view import ClusterWatch
from steadfast.concurrency import activities as slot_activities
from steadfast.concurrency import keeper
from steadfast.concurrency.records import KEEPER
from steadfast.egress import EgressPolicy, IPAddress
from steadfast.egress_rules import DEFAULT_CLUSTER_NETWORKS
from steadfast.expressions.sandbox import Sandbox
from steadfast.kube import api_client
from steadfast.objects import KubeRequests
from steadfast.retention import sweeper
from steadfast.schedules.activities import ScheduleActivities
from steadfast.seals import SEALER
from steadfast.status import StatusWriter
from steadfast.worker import Worker, registrable
from steadfast.workflows.activities import ACTION_THREADS, ACTIONS_PER_NAMESPACE, Activities, action_shares

log = logging.getLogger("steadfast")
THREADS = 32
# The SDK's cap on activities between delivery and completion. Ours wait for their namespace's share inside
# that window (see workflows.activities), so the SDK's cap must never be the one reached: at its default
# (100 per core) one namespace's waiting actions would fill it and queue everyone else's behind them. A
# waiting activity costs a coroutine and its input; how many there are is bounded by the resources that exist.
ACTIVITY_ITEMS = 1_000_000


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the operator (kopf handlers and the workflow worker)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; glob patterns allowed)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces (the default)")
    run.add_argument(
        "--egress-allow",
        action="append",
        default=[],
        metavar="CIDR|HOST[:PORT]",
        help="allow HTTP actions only to these networks or hosts, optionally on one port (repeatable; e.g. "
        "10.1.0.0/16, api.example.com:443, 127.0.0.1:8089, [::1]:8089); this host's own addresses (loopback) are "
        "refused unless listed. The API server, the Dapr sidecar, the operator's own ports and a dev control "
        "plane's components stay refused whatever is listed. Also $STEADFAST_EGRESS_ALLOW, comma-separated",
    )
    run.add_argument(
        "--cluster-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="the cluster's Pod and Service networks (repeatable): actions reach addresses there only in their own "
        "namespace's Services or where a SteadfastPolicy egress rule allows; default: the private ranges "
        "(10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7)",
    )
    run.add_argument(
        "--egress-deny",
        action="append",
        default=[],
        metavar="CIDR",
        help="refuse these networks in addition to link-local and metadata addresses",
    )
    run.add_argument(
        "--no-kubernetes-actions",
        action="store_true",
        default=os.environ.get("STEADFAST_NO_KUBERNETES_ACTIONS") == "1",
        help="refuse `kubernetes` actions (the operator then needs no impersonate rights); they are refused "
        "anyway without the admission webhooks, which record whom they act as",
    )
    run.add_argument(
        "--liveness",
        default=os.environ.get("STEADFAST_LIVENESS"),
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument(
        "--metrics",
        default=os.environ.get("STEADFAST_METRICS"),
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 0.0.0.0:9090",
    )
    run.add_argument(
        "--peering",
        default=os.environ.get("STEADFAST_PEERING"),
        help="kopf peering name for several replicas with one active (default: standalone)",
    )
    run.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority; the highest live replica is the active one (default: random, so "
        "that replicas of one Deployment never tie: kopf pauses every replica on a tie)",
    )
    run.add_argument(
        "--peering-lifetime",
        type=int,
        default=int(os.environ.get("STEADFAST_PEERING_LIFETIME", "20")),
        help="seconds after which a silent peer counts as gone and a standby takes over",
    )
    run.add_argument(
        "--status-linger",
        type=float,
        default=float(os.environ.get("STEADFAST_STATUS_LINGER", "2")),
        metavar="SECONDS",
        help="how long a progress-only status update (a step started, a check passed) may wait to be "
        "folded into the next one; phase changes are written at once. 0 writes every update",
    )
    run.add_argument(
        "--status-progress-rate",
        type=float,
        default=float(os.environ.get("STEADFAST_STATUS_PROGRESS_RATE", "10")),
        metavar="PER_SECOND",
        help="at most this many progress-only status writes per second (the rest wait and fold into "
        "later ones); phase changes and Events are not limited. 0 for no limit",
    )
    run.add_argument(
        "--worker-probe-interval",
        type=float,
        default=float(os.environ.get("STEADFAST_WORKER_PROBE_INTERVAL", "15")),
        metavar="SECONDS",
        help="how often to check that the engine still routes work to this worker (reconnect if not)",
    )
    run.add_argument(
        "--action-threads",
        type=int,
        default=int(os.environ.get("STEADFAST_ACTION_THREADS", str(ACTION_THREADS))),
        metavar="N",
        help="actions (HTTP calls, Kubernetes requests) running at once, all namespaces together; an eighth of "
        "them is kept for namespaces that have nothing running",
    )
    run.add_argument(
        "--actions-per-namespace",
        type=int,
        default=int(os.environ.get("STEADFAST_ACTIONS_PER_NAMESPACE", str(ACTIONS_PER_NAMESPACE))),
        metavar="N",
        help="actions one namespace may have running at once (more wait for its share without holding a thread); "
        "a SteadfastPolicy `limits` rule can set another number for the namespaces it selects",
    )
    run.add_argument(
        "--seal-key-secret",
        default=os.environ.get("STEADFAST_SEAL_KEY_SECRET") or seal_key.default_location(),
        metavar="NAMESPACE/NAME",
        help="the Secret holding the key that seals who created and who decided (made if missing; every replica "
        "must use the same one; nobody but the operator may read it). Default: the operator's namespace, "
        "kube-system outside a cluster",
    )
    run.add_argument(
        "--retain-succeeded",
        default=os.environ.get("STEADFAST_RETAIN_SUCCEEDED") or None,
        metavar="DURATION",
        help="delete a TaskSaga that Succeeded (an ApprovalRequest Completed) this long after it ended, e.g. 1h, "
        "unless its spec.retention or a SteadfastPolicy retention rule says otherwise (default: keep)",
    )
    run.add_argument(
        "--retain-failed",
        default=os.environ.get("STEADFAST_RETAIN_FAILED") or None,
        metavar="DURATION",
        help="the same for a TaskSaga Compensated, Failed or Rejected (an ApprovalRequest Rejected or TimedOut), "
        "e.g. 168h; what waits for a person (Paused, CompensationFailed, ActionFailed) is never removed",
    )
    run.add_argument(
        "--retention-sweep-interval",
        type=float,
        default=float(os.environ.get("STEADFAST_RETENTION_SWEEP_INTERVAL", str(sweeper.INTERVAL))),
        metavar="SECONDS",
        help="how often to look for finished resources whose status.retainedUntil has passed (a few list calls "
        "with a phase filter each time)",
    )
    run.add_argument(
        "--concurrency-check-interval",
        type=float,
        default=float(os.environ.get("STEADFAST_CONCURRENCY_CHECK_INTERVAL", str(slot_activities.CHECK_SECONDS))),
        metavar="SECONDS",
        help="how often a concurrency key's keeper with holders checks that they still run (a saga terminated "
        "with onDelete: Abandon frees its slot so); set when the keeper starts",
    )
    webhooks.add_arguments(run)
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=main)


def _egress(args: argparse.Namespace, api: client.ApiClient) -> EgressPolicy:
    allow = list(args.egress_allow)
    allow += [a.strip() for a in os.environ.get("STEADFAST_EGRESS_ALLOW", "").split(",") if a.strip()]
    try:
        policy = EgressPolicy.parse(allow=allow, deny=args.egress_deny)
    except ValueError as exc:
        raise SystemExit(f"--egress-allow/--egress-deny: {exc}") from None
    return policy.protecting(_protected(args, api), endpoints.local_addresses())


def _protected(args: argparse.Namespace, api: client.ApiClient) -> dict[tuple[IPAddress, int], str]:
    """What no action may reach (see `endpoints`): the API server, the sidecar, this operator, the control plane."""
    env = dict(os.environ)
    webhook = ""
    if not args.no_webhooks:
        addr, port = webhooks.listen_address(args)
        webhook = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
    own = [(webhook, "the operator's admission webhook"), (args.metrics or "", "the operator's metrics")]
    own.append((args.liveness or "", "the operator's liveness probe"))
    return {  # the last label of an endpoint wins: the control plane's names its components best
        **endpoints.api_server(api.configuration.host, env),
        **endpoints.dapr(env),
        **endpoints.listeners(own),
        **endpoints.published(endpoints.kubeconfig_paths(env)),
    }


def _retention_default(args: argparse.Namespace) -> Retention | None:
    """The operator's default retention (--retain-succeeded/--retain-failed), after spec and policies."""
    try:
        found = Retention(succeeded=args.retain_succeeded, failed=args.retain_failed)
    except ValidationError as exc:
        raise SystemExit(f"--retain-succeeded/--retain-failed: {exc.errors()[0]['msg']}") from None
    return None if found.is_empty() else found


def configure_settings(settings: kopf.OperatorSettings) -> None:
    """Kopf's bookkeeping goes into annotations under our prefix (never our status schema), and only when needed."""
    settings.persistence.finalizer = FINALIZER
    progress = persistence.ProgressStorage()
    settings.persistence.progress_storage = progress
    settings.persistence.diffbase_storage = persistence.DiffBaseStorage(KINDS, progress)
    settings.posting.enabled = False  # we post our own Events, one per transition
    # List in pages (kopf's default is one LIST of everything): a start or re-list with 10,000 resources then
    # parses 500 at a time rather than one response holding all of them.
    settings.watching.chunk_size = 500
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # A per-object worker holds its slot until idle_timeout after its last event. With kopf's 5 s and a
    # limit of 200, a restart with 10,000 resources took minutes to get through the listing (40 objects/s),
    # new resources queued behind it, and every queued body sat in memory meanwhile.
    settings.queueing.worker_limit = 1000
    settings.queueing.idle_timeout = 0.5


def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    if os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs)


async def _operate(**kwargs: Any) -> None:
    # Handlers call the (blocking) workflow client through asyncio.to_thread; the default pool of
    # cores + 4 threads would cap how many resources start at once.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(THREADS, thread_name_prefix="handler"))
    await kopf.operator(**kwargs)


def _gate_warning(saga: Mapping[str, Any]) -> str | None:
    """The admission warning of a TaskSaga a SteadfastPolicy will gate."""
    spec = TaskSagaSpec.model_validate(saga.get("spec") or {})
    gate = catalog.POLICIES.gate_for(spec, saga)
    return f"this TaskSaga will wait for approval: {gate.describe()}" if gate is not None and gate.rules else None


def runtime_factory(
    activities: Activities,
    host: str | None = None,
    port: str | None = None,
    slots: slot_activities.SlotActivities | None = None,
    schedules: ScheduleActivities | None = None,
) -> Callable[[], WorkflowRuntime]:
    """Builds the worker's runtime; called again for every reconnect of the watchdog (engine from the env)."""

    def build() -> WorkflowRuntime:
        # Activities spend their time waiting (HTTP, the API server), so more threads than cores pay off.
        runtime = WorkflowRuntime(
            host=host,
            port=port,
            maximum_thread_pool_workers=THREADS,
            maximum_concurrent_activity_work_items=ACTIVITY_ITEMS,
        )
        activities.register(runtime)
        for binding in catalog.BINDINGS:
            runtime.register_workflow(registrable(binding.workflow_fn), name=binding.workflow)
        runtime.register_workflow(registrable(keeper.keeper_workflow), name=KEEPER)
        if slots is not None:
            slots.register(runtime)
        if schedules is not None:
            schedules.register(runtime)
        return runtime

    return build


def main(args: argparse.Namespace) -> int:
    # kopf and pydantic parse resources recursively; the admission webhooks refuse specs nested deeper than
    # 64 levels, and this headroom keeps whatever slips past (webhooks off) a Stalled resource, not a crash.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in (
        "kubernetes",
        "urllib3",
        "WorkflowRuntime",
        "DaprWorkflowClient",
        "durabletask-worker",
        "durabletask-client",
        "aiohttp",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:  # kopf logs every handler run per object at INFO: too much at thousands of objects
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.metrics:
        metrics.serve(args.metrics)
    api = api_client()
    SEALER.use(seal_key.load(api, args.seal_key_secret))
    # Progress within a phase may show up --status-linger late (later under load): fewer writes per step.
    writer = StatusWriter(api, workers=8, linger=args.status_linger, progress_rate=args.status_progress_rate)
    networks = tuple(ipaddress.ip_network(n, strict=False) for n in args.cluster_network) or DEFAULT_CLUSTER_NETWORKS
    cluster = ClusterWatch(api_client, networks)
    cluster.start()
    client = DaprWorkflowClient()

    def raise_event(instance: str, event: str, data: dict[str, Any]) -> None:
        client.raise_workflow_event(instance, event, data=data)

    off = None
    if args.no_kubernetes_actions:
        off = "kubernetes actions are turned off in this operator (--no-kubernetes-actions)"
    elif args.no_webhooks:
        off = (
            "kubernetes actions are off: the operator runs without its admission webhooks (--no-webhooks), so "
            "no creator is recorded that it could act as"
        )
    sandbox = Sandbox(observe=metrics.share_observer("expressions"))
    metrics.watch_shares("expressions", lambda: sandbox.shares.in_use, lambda: sandbox.shares.waiting)
    runner = ActionRunner(
        api, _egress(args, api), sandbox=sandbox, cluster=cluster, raise_event=raise_event, kubernetes_off=off
    )
    shares = action_shares(
        args.action_threads,
        cluster.limit(args.actions_per_namespace),
        observe=metrics.share_observer("actions"),
    )
    metrics.watch_shares("actions", lambda: shares.in_use, lambda: shares.waiting)
    activities = Activities(runner, writer, shares)
    slots = slot_activities.SlotActivities(client, check_seconds=args.concurrency_check_interval)
    schedules = ScheduleActivities(KubeRequests(api))
    worker = Worker(
        runtime_factory(activities, slots=slots, schedules=schedules), client, interval=args.worker_probe_interval
    )
    worker.start()
    log.info("workflow worker connected")
    catalog.POLICIES.retention_default = _retention_default(args)
    retention = sweeper.Sweeper(api, interval=args.retention_sweep_interval, scope=sweeper.Scope(args.namespace))
    retention.start()
    bindings = Bindings(client, writer)
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(_login)
    for binding in catalog.BINDINGS:
        bindings.register(binding, registry)

    settings = kopf.OperatorSettings()
    configure_settings(settings)
    settings.peering.lifetime = args.peering_lifetime
    priority = args.priority if args.priority is not None else secrets.randbelow(2**31 - 1) + 1
    webhooks.configure(
        args,
        settings,
        registry,
        api,
        saga_gate=_gate_warning,
        saga_policies=catalog.POLICIES.policies,
        namespace_labels=catalog.POLICIES.namespace_labels,
    )
    try:
        asyncio.run(
            _operate(
                registry=registry,
                settings=settings,
                standalone=args.peering is None,
                peering_name=args.peering,
                priority=priority,
                clusterwide=not args.namespace,
                namespaces=args.namespace,
                liveness_endpoint=args.liveness,
            )
        )
    finally:
        retention.stop()
        worker.stop()
        activities.close()
        sandbox.close()
        writer.stop()
    return 0
