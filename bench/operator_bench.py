"""Benchmarks of the operator on the local control plane and engine, each beside a baseline from the same run.

    python bench/operator_bench.py [--sagas 500] [--latency 200] [--approvals 200] [--scale 1000,5000]
                                   [--monitors 100 --monitor-seconds 60] [--write docs/BENCHMARKS.md]

What it measures (a table on stdout; with --write, a Markdown report and PNG plots under docs/):
- saga throughput: N four-step TaskSagas applied at once until all Succeeded, versus the same workflow
  scheduled directly with DaprWorkflowClient on the same engine (a bare worker: same activities, no
  Kubernetes); the ratio is the price of the operator;
- latency, one resource at a time: kubectl-style create -> status Running and -> Succeeded, and an
  approval patch -> Approved/Completed (p50, p99);
- status writes per transition and per saga (operator metrics);
- scale: operator RSS, API requests/s and status writes/s while idle with 1,000 / 5,000 / ... live resources;
- monitors: M monitors at 1 s for a while: operator RSS over time and stored history per instance, and
  history per iteration of a loop with and without continue_as_new.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

GROUP, VERSION = "steadfast.dev", "v1alpha1"
USERS = ["alice:approvers", "bob"]


# --------------------------------------------------------------------------------------------- helpers
def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def scrape(url: str, token: str | None = None, cafile: str | None = None) -> dict[str, float]:
    import ssl

    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


def total(samples: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix))


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` onto `cpus` (affinity is per thread; new threads inherit their creator's)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cpus)


def api_calls(samples: dict[str, float]) -> dict[str, float]:
    """API server requests by verb and resource (with subresource), from its metrics."""
    import re

    out: dict[str, float] = {}
    for key, value in samples.items():
        if not key.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', key))
        what = labels.get("resource", "") + ("/" + labels["subresource"] if labels.get("subresource") else "")
        name = f"{labels.get('verb', '?')} {what}"
        out[name] = out.get(name, 0.0) + value
    return out


def saga_spec(task_url: str, task: str) -> dict[str, Any]:
    def http(method: str, path: str, body: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {"http": {"method": method, "url": f"{task_url}{path}"}}
        if body is not None:
            out["http"]["body"] = body
        return out

    return {
        "task": {"id": task},
        "steps": [
            {
                "name": "create-task-record",
                "action": http("POST", "/records", {"id": task}),
                "compensation": http("DELETE", f"/records/{task}"),
            },
            {
                "name": "reserve-capacity",
                "action": http("POST", "/capacity/reserve", {"task": task}),
                "compensation": http("POST", "/capacity/release", {"task": task}),
            },
            {
                "name": "notify-assignee",
                "action": http("POST", "/notices", {"task": task}),
                "compensation": http("DELETE", f"/notices/{task}"),
            },
            {"name": "update-dashboard", "action": http("POST", "/dashboard", {"task": task})},
        ],
    }


# ------------------------------------------------------------------------------------- the bare worker
def baseline_worker(address: str) -> int:
    """The saga workflow and its activities with no Kubernetes behind them: the raw engine's pace."""
    os.environ["DAPR_GRPC_ENDPOINT"] = address
    from concurrent.futures import Future

    from dapr.ext.workflow import DaprWorkflowContext, WorkflowRuntime

    from steadfast.actions import ActionRunner
    from steadfast.egress import EgressPolicy
    from steadfast.workflows import saga
    from steadfast.workflows.activities import Activities

    class NullWriter:
        def submit(self, *_: Any, **__: Any) -> Future[None]:
            done: Future[None] = Future()
            done.set_result(None)
            return done

    runtime = WorkflowRuntime()
    Activities(ActionRunner(None, EgressPolicy.parse(allow=["127.0.0.0/8"])), NullWriter()).register(  # type: ignore[arg-type]
        runtime
    )
    runtime.register_workflow(saga.saga_workflow, name=saga.NAME)

    def tick(_: Any, n: int) -> int:
        return n + 1

    def looping(ctx: DaprWorkflowContext, inp: dict[str, Any]) -> Any:
        """A monitor written as `while True`: history grows with every iteration."""
        n = 0
        while n < inp["iterations"]:
            n = yield ctx.call_activity("bench.tick", input=n)
            yield ctx.create_timer(ctx.current_utc_datetime + _delta(inp["sleep"]))
        return n

    def continuing(ctx: DaprWorkflowContext, inp: dict[str, Any]) -> Any:
        """The same loop with continue_as_new: one iteration per run."""
        n = yield ctx.call_activity("bench.tick", input=inp["n"])
        yield ctx.create_timer(ctx.current_utc_datetime + _delta(inp["sleep"]))
        if n < inp["iterations"]:
            ctx.continue_as_new({**inp, "n": n})
            return None
        return n

    runtime.register_activity(tick, name="bench.tick")
    runtime.register_workflow(looping, name="bench.looping")
    runtime.register_workflow(continuing, name="bench.continuing")
    runtime.start()  # type: ignore[no-untyped-call]
    print("ready", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    runtime.shutdown()  # type: ignore[no-untyped-call]
    return 0


def _delta(seconds: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=seconds)


# ---------------------------------------------------------------------------------------- the bench bed
class Bed:
    """Control plane + engine + task service + operator, all local, all stopped at the end."""

    def __init__(self, workdir: Path, pin: bool = False, engine: str = "local") -> None:
        from steadfast.dev import engines
        from steadfast.dev.controlplane import cluster, identities, processes

        self.processes = processes
        self.workdir = workdir
        self.plane = cluster.ControlPlane(
            workdir / "cp", users=[identities.Identity.parse(u) for u in USERS], engine=False, detach=False
        )
        self.state = self.plane.up()
        self.engine = engines.start(engines.parse(engine)[0], workdir / "engine")
        port = processes.free_port()
        self.task_url = f"http://127.0.0.1:{port}"
        self.egress_allow = f"127.0.0.1:{port}"  # of this host, actions may call the task service only
        self.task = processes.launch(
            [sys.executable, str(REPO / "examples" / "task_service.py"), "--port", str(port)],
            workdir / "task.log",
            detach=False,
        )
        processes.wait_until(
            lambda: processes.tcp_open("127.0.0.1", port),
            what="task service",
            timeout=30,
            pid=self.task.pid,
            log=workdir / "task.log",
        )
        self.env = {
            **os.environ,
            "KUBECONFIG": self.state.kubeconfig,
            "DAPR_GRPC_ENDPOINT": self.engine.address,
            "PYTHONUNBUFFERED": "1",
            "MALLOC_ARENA_MAX": "2",  # as the image sets it (Dockerfile): RSS as it would be in a cluster
        }
        self.metrics_url = f"http://127.0.0.1:{processes.free_port()}/metrics"
        self.operator: Any = None
        from kubernetes import client, config

        self.api = config.new_client_from_config(config_file=self.state.kubeconfig, context="admin")
        self.objects = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        admin = next(u for u in self._kubeconfig()["users"] if u["name"] == "admin")
        self.admin_token = admin["user"]["token"]
        self.ca = str(Path(self.state.directory) / "pki" / "ca.crt")

        # --pin: the control plane (and this client) on CPU 0, the engine, task service, operator and bare
        # worker on the others; as in a cluster, where the API server does not share the operator's node.
        self.pinned = pin
        if pin:
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) < 2:
                raise SystemExit("--pin needs at least 2 CPUs")
            self.control_cpus, self.work_cpus = {cpus[0]}, set(cpus[1:])
            for pid in [*self.state.pids.values(), os.getpid()]:
                pin_process(pid, self.control_cpus)
            for pid in (*self.engine.pids.values(), self.task.pid):
                pin_process(pid, self.work_cpus)

    def pin_worker(self, pid: int) -> None:
        if self.pinned:
            pin_process(pid, self.work_cpus)

    def _kubeconfig(self) -> dict[str, Any]:
        import yaml

        loaded: dict[str, Any] = yaml.safe_load(Path(self.state.kubeconfig).read_text())
        return loaded

    def start_operator(self, *extra: str) -> None:
        """Start the operator; `extra`: more `steadfast run` flags (e.g. --actions-per-namespace 64)."""
        address = self.metrics_url.removeprefix("http://").removesuffix("/metrics")
        log = self.workdir / "operator.log"
        self.operator = self.processes.launch(
            [
                sys.executable,
                "-m",
                "steadfast.cli",
                "run",
                "-A",
                "--egress-allow",
                self.egress_allow,
                "--metrics",
                address,
                *extra,
            ],
            log,
            detach=False,
            env=self.env,
        )
        self.processes.wait_until(
            lambda: "workflow worker connected" in log.read_text(),
            what="operator",
            timeout=60,
            pid=self.operator.pid,
            log=log,
        )
        self.pin_worker(self.operator.pid)
        self._wait_admission()

    def _wait_admission(self, timeout: float = 60.0) -> None:
        """The webhooks fail closed: until the new replica has registered its server, creates are refused."""
        probe = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskSaga",
            "metadata": {"name": "probe"},
            "spec": saga_spec(self.task_url, "probe"),
        }
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.objects.create_namespaced_custom_object(
                    GROUP, VERSION, "default", "tasksagas", probe, dry_run="All"
                )
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop_operator(self) -> None:
        if self.operator is not None:
            self.processes.stop(self.operator.pid)
            self.operator = None

    def cpu(self, extra: dict[str, int] | None = None) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each process of the bed."""
        pids = {name: pid for name, pid in self.state.pids.items()}
        pids.update({f"engine ({name})": pid for name, pid in self.engine.pids.items()})
        pids.update({"task service": self.task.pid, **(extra or {})})
        if self.operator is not None:
            pids["operator"] = self.operator.pid
        out: dict[str, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for name, pid in pids.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                out[name] = (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                continue
        return out

    def namespace(self) -> str:
        name = f"b-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def wait_namespace_gone(self, name: str, timeout: float = 300) -> None:
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.core.read_namespace(name)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(1)

    def apiserver_requests(self) -> float:
        samples = scrape(f"{self.state.apiserver}/metrics", self.admin_token, self.ca)
        return total(samples, "apiserver_request_total{")

    def close(self) -> None:
        self.stop_operator()
        self.processes.stop(self.task.pid)
        self.engine.stop()
        self.plane.down()


def start_baseline_worker(bed: Bed) -> subprocess.Popen[str]:
    """The bare worker (this file with --baseline-worker) on the bed's engine; stops when its stdin closes."""
    worker = subprocess.Popen(
        [sys.executable, __file__, "--baseline-worker", bed.engine.address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=bed.env,
    )
    assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    bed.pin_worker(worker.pid)
    return worker


class Profiler:
    """py-spy on the operator and the API server's pprof CPU profile, over one measured stretch."""

    def __init__(self, bed: Bed, out: Path | None) -> None:
        self.bed, self.out = bed, out
        self.spy: subprocess.Popen[bytes] | None = None
        self.pprof: threading.Thread | None = None

    def __enter__(self) -> Profiler:
        if self.out is None or self.bed.operator is None:
            return self
        self.out.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).with_name("py-spy")
        self.spy = subprocess.Popen(
            [
                str(spy),
                "record",
                "-p",
                str(self.bed.operator.pid),
                "-r",
                "40",
                "-f",
                "raw",
                "--nonblocking",
                "--gil",
                "-o",
                str(self.out / "operator.pyspy.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.pprof = threading.Thread(target=self._apiserver, daemon=True)
        self.pprof.start()
        return self

    def _apiserver(self) -> None:
        import ssl

        assert self.out is not None
        request = urllib.request.Request(
            f"{self.bed.state.apiserver}/debug/pprof/profile?seconds=20",
            headers={"Authorization": f"Bearer {self.bed.admin_token}"},
        )
        context = ssl.create_default_context(cafile=self.bed.ca)
        with urllib.request.urlopen(request, timeout=60, context=context) as answer:
            (self.out / "kube-apiserver.pprof").write_bytes(answer.read())

    def __exit__(self, *_: Any) -> None:
        if self.spy is not None:
            self.spy.send_signal(2)
            self.spy.wait(timeout=60)
        if self.pprof is not None:
            self.pprof.join(timeout=60)


class PhaseWatch:
    """Records, per object, when each phase was first seen (a watch, as `kubectl get -w` sees it)."""

    def __init__(self, bed: Bed, namespace: str, plural: str) -> None:
        from kubernetes import watch

        self.seen: dict[str, dict[str, float]] = {}
        self._stopped = False
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(bed, namespace, plural), daemon=True)
        self._thread.start()
        time.sleep(0.3)

    def _run(self, bed: Bed, namespace: str, plural: str) -> None:
        # A watch ends (server timeout, expired resource version, restarts under load): list and watch again,
        # until stop(). Without this a long run silently stopped seeing phases.
        while not self._stopped:
            with contextlib.suppress(Exception):
                listed = bed.objects.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
                for obj in listed.get("items", []):
                    self._record(obj)
                self._follow(bed, namespace, plural, listed["metadata"]["resourceVersion"])
            if not self._stopped:
                time.sleep(0.5)

    def _record(self, obj: dict[str, Any]) -> None:
        phase = (obj.get("status") or {}).get("phase")
        if phase:
            self.seen.setdefault(obj["metadata"]["name"], {}).setdefault(phase, time.time())

    def _follow(self, bed: Bed, namespace: str, plural: str, version: str) -> None:
        for event in self._watch.stream(
            bed.objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            timeout_seconds=600,
            resource_version=version,
        ):
            self._record(event["object"])

    def wait(self, names: list[str], phases: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(phases & set(self.seen.get(n, {})) for n in names):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


# ------------------------------------------------------------------------------------------ scenarios
def saga_throughput(bed: Bed, n: int, threads: int, profile: Path | None = None) -> dict[str, Any]:
    from dapr.ext.workflow import DaprWorkflowClient

    # Baseline: the same workflow through the SDK on the same engine, no Kubernetes.
    worker = start_baseline_worker(bed)
    client = DaprWorkflowClient(host="127.0.0.1", port=bed.engine.address.rsplit(":", 1)[1])
    ids = [f"baseline-{uuid.uuid4().hex[:10]}" for _ in range(n)]

    def schedule(iid: str) -> None:
        ref = {
            "group": GROUP,
            "version": VERSION,
            "kind": "TaskSaga",
            "plural": "tasksagas",
            "namespace": "bench",
            "name": iid,
            "uid": iid,
        }
        client.schedule_new_workflow(
            "steadfast.tasksaga",
            input={"ref": ref, "generation": 1, "spec": saga_spec(bed.task_url, iid)},
            instance_id=iid,
        )

    cpu0 = bed.cpu({"baseline worker": worker.pid})
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(schedule, ids))
    with ThreadPoolExecutor(threads) as pool:
        states = list(pool.map(lambda i: client.wait_for_workflow_completion(i, timeout_in_seconds=600), ids))
    base_elapsed = time.monotonic() - started
    base_cpu = _per(bed.cpu({"baseline worker": worker.pid}), cpu0, n)
    ok = sum(1 for s in states if s is not None and s.runtime_status.name == "COMPLETED")
    assert worker.stdin is not None
    worker.stdin.close()
    worker.wait(timeout=30)

    # The operator: N TaskSagas applied at once.
    bed.start_operator()
    ns = bed.namespace()
    watch = PhaseWatch(bed, ns, "tasksagas")
    names = [f"s{i:05d}" for i in range(n)]
    before = scrape(bed.metrics_url)

    def create(name: str) -> None:
        bed.objects.create_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "tasksagas",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "TaskSaga",
                "metadata": {"name": name},
                "spec": saga_spec(bed.task_url, name),
            },
        )

    cpu0 = bed.cpu()
    calls0 = api_calls(scrape(f"{bed.state.apiserver}/metrics", bed.admin_token, bed.ca))
    started_wall = time.time()
    started = time.monotonic()
    with Profiler(bed, profile):
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(create, names))
        done = watch.wait(names, {"Succeeded"}, timeout=max(600, n))
    op_elapsed = time.monotonic() - started
    op_cpu = _per(bed.cpu(), cpu0, n)
    calls = api_calls(scrape(f"{bed.state.apiserver}/metrics", bed.admin_token, bed.ca))
    per_saga_calls = {k: round((v - calls0.get(k, 0.0)) / n, 2) for k, v in calls.items()}
    after = scrape(bed.metrics_url)
    watch.stop()
    succeeded = sum(1 for nm in names if "Succeeded" in watch.seen.get(nm, {}))
    writes = after.get("steadfast_status_writes_total", 0) - before.get("steadfast_status_writes_total", 0)
    snaps = after.get("steadfast_status_snapshots_total", 0) - before.get("steadfast_status_snapshots_total", 0)
    finish_times = sorted(
        watch.seen[nm]["Succeeded"] - started_wall for nm in names if "Succeeded" in watch.seen.get(nm, {})
    )
    return {
        "n": n,
        "baseline_rate": ok / base_elapsed,
        "baseline_ok": ok,
        "operator_rate": succeeded / op_elapsed,
        "operator_ok": succeeded,
        "all_done": done,
        "ratio": (succeeded / op_elapsed) / (ok / base_elapsed),
        "status_writes": writes,
        "status_snapshots": snaps,
        # transitions per 4-step saga: started, 4 step starts, final = 6
        "writes_per_transition": writes / (succeeded * 6) if succeeded else float("nan"),
        "finish_times": finish_times,
        # CPU milliseconds per saga, by process: what bounds the rate on a small machine.
        "cpu_ms_per_saga": {"baseline": base_cpu, "operator": op_cpu},
        # API requests per saga (the benchmark's own create, list and watch included).
        "api_calls_per_saga": {k: v for k, v in sorted(per_saga_calls.items(), key=lambda kv: -kv[1]) if v >= 0.01},
    }


def _per(after: dict[str, float], before: dict[str, float], n: int) -> dict[str, float]:
    return {k: round((after[k] - before.get(k, 0.0)) * 1000 / n, 1) for k in after}


def saga_latency(bed: Bed, samples: int) -> dict[str, Any]:
    ns = bed.namespace()
    watch = PhaseWatch(bed, ns, "tasksagas")
    created: dict[str, float] = {}
    for i in range(samples):
        name = f"l{i:05d}"
        created[name] = time.time()
        bed.objects.create_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "tasksagas",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "TaskSaga",
                "metadata": {"name": name},
                "spec": saga_spec(bed.task_url, f"{ns}-{name}"),
            },
        )
        watch.wait([name], {"Succeeded", "Compensated", "Failed"}, timeout=30)
    watch.stop()
    running = [
        (watch.seen[n].get("Running", watch.seen[n].get("Succeeded", 0)) - t) * 1000
        for n, t in created.items()
        if n in watch.seen
    ]
    succeeded = [
        (watch.seen[n]["Succeeded"] - t) * 1000 for n, t in created.items() if "Succeeded" in watch.seen.get(n, {})
    ]
    return {"running": running, "succeeded": succeeded}


def approval_latency(bed: Bed, samples: int) -> dict[str, Any]:
    from kubernetes import client, config

    ns = bed.namespace()
    rbac = client.RbacAuthorizationV1Api(bed.api)
    rbac.create_namespaced_role(
        ns,
        {
            "metadata": {"name": "decide"},
            "rules": [
                {"apiGroups": [GROUP], "resources": ["approvalrequests"], "verbs": ["get", "list", "watch", "patch"]}
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "alice-decides"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "decide"},
            "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )
    alice = client.CustomObjectsApi(config.new_client_from_config(config_file=bed.state.kubeconfig, context="alice"))
    watch = PhaseWatch(bed, ns, "approvalrequests")
    latencies: list[float] = []
    for i in range(samples):
        name = f"a{i:05d}"
        bed.objects.create_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "approvalrequests",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ApprovalRequest",
                "metadata": {"name": name},
                "spec": {"subject": {"title": f"bench {i}"}, "approvers": {"users": ["alice"]}, "timeout": "1h"},
            },
        )
        if not watch.wait([name], {"Pending"}, timeout=30):
            continue
        for _ in range(50):  # the webhook refuses a decision until the request is Pending on the server
            try:
                t0 = time.time()
                alice.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    ns,
                    "approvalrequests",
                    name,
                    {"spec": {"decision": {"approved": True, "reason": "bench"}}},
                )
                break
            except Exception:
                time.sleep(0.05)
        if watch.wait([name], {"Approved", "Completed"}, timeout=30):
            seen = watch.seen[name]
            latencies.append((min(seen.get("Approved", 1e18), seen.get("Completed", 1e18)) - t0) * 1000)
    watch.stop()
    return {"approved": latencies}


def scale(bed: Bed, sizes: list[int], idle_seconds: float, threads: int) -> list[dict[str, Any]]:
    ns = bed.namespace()
    rows = []
    have = 0

    def one_step(name: str) -> dict[str, Any]:
        return {
            "task": {"id": name},
            "steps": [{"name": "one", "action": {"http": {"method": "POST", "url": f"{bed.task_url}/dashboard"}}}],
        }

    watch = PhaseWatch(bed, ns, "tasksagas")
    for size in sizes:
        names = [f"x{i:06d}" for i in range(have, size)]
        with ThreadPoolExecutor(threads) as pool:
            list(
                pool.map(
                    lambda nm: bed.objects.create_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        ns,
                        "tasksagas",
                        {
                            "apiVersion": f"{GROUP}/{VERSION}",
                            "kind": "TaskSaga",
                            "metadata": {"name": nm},
                            "spec": one_step(nm),
                        },
                    ),
                    names,
                )
            )
        watch.wait([f"x{i:06d}" for i in range(size)], {"Succeeded"}, timeout=max(600, size))
        have = size
        time.sleep(3)  # let the tail of writes settle
        m0, a0 = scrape(bed.metrics_url), bed.apiserver_requests()
        time.sleep(idle_seconds)
        m1, a1 = scrape(bed.metrics_url), bed.apiserver_requests()
        rss = rss_mib(bed.operator.pid)
        # Baseline: the same control plane with the operator stopped (the controller manager and the
        # API server make requests of their own); the difference is the operator's.
        bed.stop_operator()
        b0 = bed.apiserver_requests()
        time.sleep(idle_seconds)
        b1 = bed.apiserver_requests()
        # A restarted operator resumes every resource: its RSS is what a pod needs with `size` of them,
        # without the churn of having created them.
        bed.start_operator()
        time.sleep(idle_seconds)
        rows.append(
            {
                "resources": size,
                "rss_mib": rss,
                "rss_after_restart_mib": rss_mib(bed.operator.pid),
                "api_rps": (a1 - a0) / idle_seconds,
                "api_rps_without_operator": (b1 - b0) / idle_seconds,
                "status_writes_per_s": (
                    m1.get("steadfast_status_writes_total", 0) - m0.get("steadfast_status_writes_total", 0)
                )
                / idle_seconds,
            }
        )
    watch.stop()
    return rows


def monitors(bed: Bed, count: int, seconds: float) -> dict[str, Any]:
    ns = bed.namespace()
    for i in range(count):
        bed.objects.create_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "healthmonitors",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "HealthMonitor",
                "metadata": {"name": f"m{i:04d}"},
                "spec": {
                    "target": {"http": {"url": f"{bed.task_url}/healthz/m{i:04d}"}},
                    "healthyInterval": "1s",
                    "unhealthyInterval": "1s",
                },
            },
        )
    series: list[tuple[float, float, int, int]] = []
    start = time.monotonic()
    first: dict[str, Any] = {}
    while time.monotonic() - start < seconds:
        time.sleep(min(5.0, max(0.5, seconds / 20)))
        obj = bed.objects.get_namespaced_custom_object(GROUP, VERSION, ns, "healthmonitors", "m0000")
        status = obj.get("status") or {}
        first = first or status
        iid = status.get("workflowInstanceId")
        history = _history_len(bed, iid) if iid else 0
        series.append((time.monotonic() - start, rss_mib(bed.operator.pid), int(status.get("checkCount", 0)), history))
    bed.core.delete_namespace(ns)
    bed.wait_namespace_gone(ns)  # its 100 deletions would otherwise land in the next stage's idle window
    return {"series": series}


def _history(bed: Bed, iid: str) -> list[dict[str, Any]]:
    """The instance's stored events, read through the workflow API (the same on both engines)."""
    from steadfast.dev.workflow_api import WorkflowAPI

    with WorkflowAPI(bed.engine.address) as api:
        return api.history_dicts(iid)


def _history_len(bed: Bed, iid: str) -> int:
    return len(_history(bed, iid))


def history_growth(bed: Bed, iterations: int) -> dict[str, list[tuple[int, int]]]:
    """History size per iteration for a `while True` loop and for continue_as_new, on the raw engine."""
    from dapr.ext.workflow import DaprWorkflowClient

    worker = start_baseline_worker(bed)
    client = DaprWorkflowClient(host="127.0.0.1", port=bed.engine.address.rsplit(":", 1)[1])
    out: dict[str, list[tuple[int, int]]] = {}
    for name in ("bench.looping", "bench.continuing"):
        iid = f"{name}-{uuid.uuid4().hex[:6]}"
        client.schedule_new_workflow(name, input={"iterations": iterations, "sleep": 0.05, "n": 0}, instance_id=iid)
        points: list[tuple[int, int]] = []
        while True:
            state = client.get_workflow_state(iid, fetch_payloads=False)
            history = _history(bed, iid)
            points.append((_iterations(history), len(history)))
            if state is not None and state.runtime_status.name in ("COMPLETED", "FAILED"):
                break
            time.sleep(0.2)
        out[name] = points
    assert worker.stdin is not None
    worker.stdin.close()
    worker.wait(timeout=30)
    return out


def _iterations(history: list[dict[str, Any]]) -> int:
    """Iterations done so far: completed activities in this run plus the counter carried into it."""
    carried = done = 0
    for event in history:
        if "taskCompleted" in event:
            done += 1
        elif "executionStarted" in event:
            with contextlib.suppress(ValueError, TypeError, KeyError):
                carried = int(json.loads(event["executionStarted"].get("input") or "{}").get("n", 0))
    return carried + done


# ------------------------------------------------------------------------------------------- reporting
def report(results: dict[str, Any]) -> str:
    lines = ["| measure | value | baseline / target | ratio |", "|---|---|---|---|"]
    t = results.get("throughput")
    if t:
        lines.append(
            f"| saga throughput, N={t['n']} four-step sagas (sagas/s) | {t['operator_rate']:.1f} "
            f"({t['operator_ok']}/{t['n']} Succeeded) | raw engine + SDK: {t['baseline_rate']:.1f} "
            f"(target ratio >= 0.8) | {t['ratio']:.2f} |"
        )
        cpu = t.get("cpu_ms_per_saga", {})
        for label, key in (("raw engine + SDK", "baseline"), ("operator", "operator")):
            ranked = sorted(cpu.get(key, {}).items(), key=lambda kv: -kv[1])
            parts = ", ".join(f"{k} {v:.0f}" for k, v in ranked if v)
            lines.append(f"| CPU ms per saga, {label} | {parts} | | |")
        calls = t.get("api_calls_per_saga", {})
        if calls:
            parts = ", ".join(f"{k} {v:g}" for k, v in calls.items())
            lines.append(f"| API requests per saga ({sum(calls.values()):.1f}) | {parts} | | |")
        lines.append(
            f"| status writes per transition (N={t['n']}) | {t['writes_per_transition']:.2f} | target <= 1 | |"
        )
        lines.append(
            f"| status writes / snapshots submitted | {t['status_writes']:.0f} / {t['status_snapshots']:.0f} "
            f"| coalesced: {t['status_snapshots'] - t['status_writes']:.0f} | |"
        )
    lat = results.get("latency")
    if lat:
        for key, label, target in (("running", "create -> Running", 50), ("succeeded", "create -> Succeeded", 300)):
            vals = lat[key]
            lines.append(
                f"| {label}, p50 / p99 over {len(vals)} (ms) | {pct(vals, 50):.0f} / {pct(vals, 99):.0f} "
                f"| target p50 <= {target} | |"
            )
    app = results.get("approvals")
    if app:
        vals = app["approved"]
        lines.append(
            f"| approval patch -> Approved, p50 / p99 over {len(vals)} (ms) | {pct(vals, 50):.0f} / "
            f"{pct(vals, 99):.0f} | target p50 <= 100 | |"
        )
    for row in results.get("scale", []):
        lines.append(
            f"| idle with {row['resources']} live sagas: RSS (after a restart) / API req/s (without the operator: "
            f"{row['api_rps_without_operator']:.2f}) / status writes/s | "
            f"{row['rss_mib']:.0f} MiB ({row.get('rss_after_restart_mib', float('nan')):.0f} MiB) / "
            f"{row['api_rps']:.2f} / {row['status_writes_per_s']:.2f} "
            f"| target <= 300 MiB at 10,000; 0 writes | |"
        )
    mon = results.get("monitors")
    if mon and mon["series"]:
        s = mon["series"]
        lines.append(
            f"| {results['monitor_count']} monitors at 1 s for {s[-1][0]:.0f} s: operator RSS first / last (MiB) "
            f"| {s[0][1]:.0f} / {s[-1][1]:.0f} | flat | |"
        )
        lines.append(
            f"| stored history of one monitor, first / last sample (events; checks {s[0][2]} -> {s[-1][2]}) "
            f"| {s[0][3]} / {s[-1][3]} | flat | |"
        )
    hist = results.get("history")
    if hist:
        loop, cont = hist["bench.looping"][-1], hist["bench.continuing"][-1]
        lines.append(
            f"| history after {results['history_iterations']} iterations: while-True loop / "
            f"continue_as_new (events) | {loop[1]} / {cont[1]} | | {loop[1] / max(cont[1], 1):.0f}x |"
        )
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path, prefix: str = "bench") -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    lat = results.get("latency")
    if lat:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist([lat["running"], lat["succeeded"]], bins=40, label=["create -> Running", "create -> Succeeded"])
        if results.get("approvals"):
            ax.hist(results["approvals"]["approved"], bins=40, alpha=0.6, label="patch -> Approved")
        ax.set_xlabel("ms")
        ax.set_ylabel("samples")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{prefix}-latency.png", dpi=110)
        made.append(f"{prefix}-latency.png")
    t = results.get("throughput")
    if t and t["finish_times"]:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(t["finish_times"], range(1, len(t["finish_times"]) + 1))
        ax.set_xlabel("seconds since the sagas were applied")
        ax.set_ylabel("sagas Succeeded")
        fig.tight_layout()
        fig.savefig(out / f"{prefix}-throughput.png", dpi=110)
        made.append(f"{prefix}-throughput.png")
    hist = results.get("history")
    if hist:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, label in (("bench.looping", "while True"), ("bench.continuing", "continue_as_new")):
            pts = hist[name]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label)
        ax.set_xlabel("iterations")
        ax.set_ylabel("stored history (events)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{prefix}-history.png", dpi=110)
        made.append(f"{prefix}-history.png")
    mon = results.get("monitors")
    if mon and mon["series"]:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        s = mon["series"]
        ax.plot([p[0] for p in s], [p[1] for p in s])
        ax.set_xlabel("seconds")
        ax.set_ylabel("operator RSS (MiB)")
        ax.set_ylim(bottom=0)
        fig.tight_layout()
        fig.savefig(out / f"{prefix}-monitor-rss.png", dpi=110)
        made.append(f"{prefix}-monitor-rss.png")
    rows = results.get("scale", [])
    if len(rows) > 1:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        sizes = [r["resources"] for r in rows]
        ax.plot(sizes, [r["rss_mib"] for r in rows], marker="o", label="after creating them")
        if all("rss_after_restart_mib" in r for r in rows):
            ax.plot(sizes, [r["rss_after_restart_mib"] for r in rows], marker="o", label="after a restart")
        ax.axhline(300, color="grey", linestyle="--", label="target")
        ax.set_xlabel("live TaskSagas")
        ax.set_ylabel("operator RSS (MiB)")
        ax.set_ylim(bottom=0)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{prefix}-rss.png", dpi=110)
        made.append(f"{prefix}-rss.png")
    return made


def write_doc(path: Path, results: dict[str, Any], table: str, images: list[str], argv: list[str]) -> None:
    import dapr.version
    import kopf

    versions = (
        f"Python {platform.python_version()}, kopf {kopf.__version__ if hasattr(kopf, '__version__') else '?'}, "
        f"dapr {dapr.version.__version__}, kube-apiserver v1.34.4, etcd v3.6.13"
    )
    memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    body = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python bench/operator_bench.py {' '.join(argv)}` on "
        f"{os.cpu_count()} cores ({cpu}), {memory_gib} GiB; "
        f"{versions}. Everything runs on this one machine: the local control plane, the local engine "
        "(SQLite, fsync on), the sample task service and the operator."
        + (
            " Pinned (--pin): etcd, kube-apiserver, kube-controller-manager and the benchmark's client on CPU 0; "
            "the engine, the task service, the operator and the bare worker on the other CPU(s)."
            if results.get("pinned")
            else ""
        ),
        "",
        table,
        "",
        *[f"![{img}]({img})" for img in images],
        "",
        "How to read it: the baseline runs the same saga workflow and activities on the same engine through "
        "the SDK with no Kubernetes behind it, so the ratio is what the resource, the watch and the status "
        "writes cost. Latencies are measured one resource at a time, as a user would see them with "
        "`kubectl get -w`.",
        "",
        "Raw results:",
        "",
        "```json",
        json.dumps({k: v for k, v in results.items() if k not in ("latency", "approvals")}, default=str)[:4000],
        "```",
        "",
    ]
    path.write_text("\n".join(body))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--baseline-worker"]:
        return baseline_worker(argv[1])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=500)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--approvals", type=int, default=200)
    parser.add_argument("--scale", default="1000", help="comma-separated live-resource counts, e.g. 1000,5000,10000")
    parser.add_argument("--idle-seconds", type=float, default=20)
    parser.add_argument("--monitors", type=int, default=100)
    parser.add_argument("--monitor-seconds", type=float, default=120)
    parser.add_argument("--history-iterations", type=int, default=200)
    parser.add_argument("--write", type=Path, default=None, help="write the Markdown report here (plots beside it)")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="profile the operator (py-spy) and the API server (pprof) during saga throughput",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="control plane on CPU 0, engine/operator/bare worker on the rest (as in a cluster)",
    )
    parser.add_argument("--plot-prefix", default="bench", help="file name prefix of the PNG plots")
    parser.add_argument("--engine", default="local", choices=["local", "daprd"], help="workflow engine to run on")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"monitor_count": args.monitors, "history_iterations": args.history_iterations}
    with tempfile.TemporaryDirectory(prefix="steadfast-bench-") as tmp:
        bed = Bed(Path(tmp), pin=args.pin, engine=args.engine)
        results["pinned"] = args.pin
        try:
            if args.history_iterations:
                print("history: while True vs continue_as_new ...", file=sys.stderr, flush=True)
                results["history"] = history_growth(bed, args.history_iterations)
            if args.sagas:
                print(f"throughput: {args.sagas} sagas ...", file=sys.stderr, flush=True)
                results["throughput"] = saga_throughput(bed, args.sagas, args.threads, args.profile)
            if bed.operator is None:
                bed.start_operator()
            if args.latency:
                print(f"latency: {args.latency} sagas one at a time ...", file=sys.stderr, flush=True)
                results["latency"] = saga_latency(bed, args.latency)
            if args.approvals:
                print(f"approvals: {args.approvals} ...", file=sys.stderr, flush=True)
                results["approvals"] = approval_latency(bed, args.approvals)
            if args.monitors:
                print(f"monitors: {args.monitors} for {args.monitor_seconds:.0f}s ...", file=sys.stderr, flush=True)
                results["monitors"] = monitors(bed, args.monitors, args.monitor_seconds)
            sizes = [int(s) for s in args.scale.split(",") if s.strip()]
            if sizes:
                print(f"scale: {sizes} ...", file=sys.stderr, flush=True)
                results["scale"] = scale(bed, sizes, args.idle_seconds, args.threads)
        finally:
            bed.close()
    table = report(results)
    print(table)
    if args.write:
        images = plots(results, args.write.parent, args.plot_prefix)
        write_doc(args.write, results, table, images, argv)
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
