"""`steadfast dev demo`: the whole product on a laptop without Docker, in one command.

Starts (or reuses) the local control plane and engine, the sample task service on 127.0.0.1:8089 and
the operator; applies `config/samples/` plus a few demo-only resources (a monitor whose target flips, an
approval that times out, a saga whose refund fails while the refund service is down), approves the sample
request with the CLI as alice, repairs the failed refund once the service is back (`steadfast retry`), shows a live
`kubectl get steadfast` table and the final statuses. On a terminal it then keeps the table live until
Ctrl-C and stops everything; otherwise (scripts, CI) it leaves everything running and says how to stop it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from steadfast.console.cli import DEFAULT_LISTEN
from steadfast.dev.controlplane import binaries, cluster, identities, processes
from steadfast.dev.engines import EngineName

SAMPLES = cluster.REPO_ROOT / "config" / "samples"
TASK_SERVICE = cluster.REPO_ROOT / "examples" / "task_service.py"
TASK_SERVICE_PORT = 8089  # the samples' URLs point here
TASK_URL = f"http://127.0.0.1:{TASK_SERVICE_PORT}"
SETTLE_TIMEOUT = 90.0
APPROVAL_SAMPLE = "deploy-prod-123"
REFUND_SAMPLE = "order-7-refund"
REFUND_PATH = "/records/order-7"
CONSOLE_URL = f"http://{DEFAULT_LISTEN}/"  # where `steadfast console` serves by default

# Demo-only resources: what the samples cannot show in a minute with their production-like intervals.
EXTRA: list[dict[str, Any]] = [
    {
        "apiVersion": "steadfast.dev/v1alpha1",
        "kind": "HealthMonitor",
        "metadata": {"name": "flappy-service"},
        "spec": {
            "target": {"http": {"method": "GET", "url": f"{TASK_URL}/healthz/flappy", "timeout": "2s"}},
            "healthyInterval": "2s",
            "unhealthyInterval": "2s",
            "failureThreshold": 2,
            "alert": {
                "webhook": {"http": {"method": "POST", "url": f"{TASK_URL}/alerts"}},
                "severity": "critical",
                "sendOnRecovery": True,
            },
        },
    },
    {
        "apiVersion": "steadfast.dev/v1alpha1",
        "kind": "TaskSaga",
        "metadata": {"name": REFUND_SAMPLE},
        "spec": {
            "task": {"id": "order-7", "title": "Order 7: charge, then ship"},
            "steps": [
                {
                    "name": "charge",
                    "action": {"http": {"method": "POST", "url": f"{TASK_URL}/records", "body": {"id": "order-7"}}},
                    # The refund: fails while the refund service is down (the demo arms that fault first).
                    "compensation": {"http": {"method": "DELETE", "url": f"{TASK_URL}{REFUND_PATH}"}},
                },
                {
                    "name": "ship",
                    "action": {
                        "http": {
                            "method": "POST",
                            "url": f"{TASK_URL}/notices",
                            "headers": [{"name": "X-Fail", "value": "always"}],  # the carrier refuses it
                        }
                    },
                },
            ],
        },
    },
    {
        "apiVersion": "steadfast.dev/v1alpha1",
        "kind": "ApprovalRequest",
        "metadata": {"name": "hotfix-friday"},
        "spec": {"subject": {"title": "Hotfix on a Friday evening"}, "approvers": {"users": ["bob"]}, "timeout": "15s"},
    },
]
# Lets the approvers group decide ApprovalRequests in the demo namespace.
DECIDER_RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "steadfast-decider", "namespace": "default"},
        "rules": [
            {
                "apiGroups": ["steadfast.dev"],
                "resources": ["approvalrequests", "tasksagas", "healthmonitors"],
                "verbs": ["get", "list", "watch", "patch", "repair"],  # repair: decisions on sagas gone wrong
            },
            {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},  # the web console's timelines
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "steadfast-deciders", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "steadfast-decider"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "approvers"}],
    },
]
SETTLED = {
    "TaskSaga": {"Succeeded", "Compensated", "CompensationFailed", "Failed", "Rejected"},
    "ApprovalRequest": {"Completed", "ActionFailed", "Rejected", "TimedOut"},
}


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def _supported_kinds() -> set[str]:
    from steadfast import catalog
    from steadfast.api.kinds import TEMPLATES

    return {binding.kind.kind for binding in catalog.BINDINGS} | {kind.kind for kind in TEMPLATES}


def _start_extra(state: cluster.State, name: str, args: list[str], env: dict[str, str]) -> None:
    log = Path(state.directory) / "logs" / f"{name}.log"
    proc = processes.launch(args, log, detach=True, env=env)
    state.pids[name] = proc.pid
    state.logs[name] = str(log)
    cluster.write_state(state)


def _fault(route: str, fail: int) -> None:
    body = json.dumps({"route": route, "fail": fail}).encode()
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(f"{TASK_URL}/_faults", data=body, method="POST", headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=5):  # noqa: S310 (the local task service)
        pass


class Demo:
    def __init__(self, directory: Path, engine: EngineName = "local") -> None:
        self.engine: EngineName = engine
        self.directory = directory
        self.state = self._control_plane()
        self.kubectl = str(binaries.ensure(binaries.KUBECTL)["kubectl"])
        self.env = {**os.environ, **self.state.env(), "PYTHONUNBUFFERED": "1"}

    def _control_plane(self) -> cluster.State:
        existing = cluster.status(self.directory)
        if existing["running"]:
            _say(f"reusing what runs from {self.directory}")
            state = cluster.read_state(self.directory)
            assert state is not None
            return state
        if existing["components"]:
            cluster.ControlPlane(self.directory).down()
        users = [identities.Identity.parse(u) for u in ("alice:approvers", "bob:approvers", "carol")]
        return cluster.ControlPlane(self.directory, users=users, detach=True, engine=self.engine).up()

    def k(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl, *args], env=self.env, check=check, capture_output=True, text=True, input=stdin
        )

    def start_services(self) -> None:
        pids = self.state.pids
        if "task-service" not in pids or not processes.alive(pids["task-service"]):
            if processes.tcp_open("127.0.0.1", TASK_SERVICE_PORT):
                raise SystemExit(f"port {TASK_SERVICE_PORT} is taken; the samples expect the task service there")
            _say(f"starting the sample task service on {TASK_URL}")
            _start_extra(
                self.state,
                "task-service",
                [sys.executable, str(TASK_SERVICE), "--port", str(TASK_SERVICE_PORT)],
                self.env,
            )
            processes.wait_until(
                lambda: processes.tcp_open("127.0.0.1", TASK_SERVICE_PORT),
                what="task service",
                timeout=30,
                pid=self.state.pids["task-service"],
                log=Path(self.state.logs["task-service"]),
            )
        if "operator" not in pids or not processes.alive(pids["operator"]):
            _say("starting the operator (steadfast run)")
            _start_extra(
                self.state,
                "operator",
                # Of this host, actions may call the sample task service only: not the control plane beside it.
                [
                    sys.executable,
                    "-m",
                    "steadfast.cli",
                    "run",
                    "-A",
                    "--egress-allow",
                    f"127.0.0.1:{TASK_SERVICE_PORT}",
                ],
                self.env,
            )
            log = Path(self.state.logs["operator"])
            processes.wait_until(
                lambda: "admission webhooks on" in log.read_text() or "disabled" in log.read_text(),
                what="operator",
                timeout=60,
                pid=self.state.pids["operator"],
                log=log,
            )
            time.sleep(2)  # let kopf register its webhooks and start watching

    def apply(self) -> list[tuple[str, str]]:
        supported = _supported_kinds()
        applied: list[tuple[str, str]] = []
        self.k("apply", "-f", "-", stdin=yaml.safe_dump_all(DECIDER_RBAC))
        _fault(f"DELETE {REFUND_PATH}", -1)  # the refund service is down until the demo repairs the saga
        docs = [yaml.safe_load(p.read_text()) for p in sorted(SAMPLES.glob("*.yaml"))] + EXTRA
        for doc in docs:
            if doc.get("kind") not in supported:
                continue
            for _ in range(20):  # the webhooks may need a moment after the operator starts
                done = self.k("apply", "-f", "-", check=False, stdin=yaml.safe_dump(doc))
                if done.returncode == 0:
                    break
                time.sleep(0.5)
            else:
                raise SystemExit(f"could not apply {doc['kind']} {doc['metadata']['name']}: {done.stderr}")
            _say(f"applied {doc['kind']} {doc['metadata']['name']}")
            applied.append((doc["kind"], doc["metadata"]["name"]))
        return applied

    def phase(self, kind: str, name: str) -> str:
        out = self.k("get", kind.lower(), name, "-o", "jsonpath={.status.phase}", check=False)
        return out.stdout.strip()

    def table(self) -> str:
        return self.k("get", "steadfast", "-o", "wide", check=False).stdout

    def live(self, applied: list[tuple[str, str]]) -> None:
        """Refresh the table while the story plays out: approve, flip the monitor, wait for the timeout."""
        approved = flipped = repaired = False
        deadline = time.monotonic() + SETTLE_TIMEOUT
        tty = sys.stdout.isatty()
        while time.monotonic() < deadline:
            if not approved and self.phase("ApprovalRequest", APPROVAL_SAMPLE) == "Pending":
                _say(f"alice approves {APPROVAL_SAMPLE}: steadfast approve {APPROVAL_SAMPLE} --context alice")
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "steadfast.cli",
                        "approve",
                        APPROVAL_SAMPLE,
                        "--context",
                        "alice",
                        "--reason",
                        "demo: looks good",
                    ],
                    env=self.env,
                    capture_output=True,
                    text=True,
                )
                _say((done.stdout or done.stderr).strip())
                approved = done.returncode == 0
            if not repaired and self.phase("TaskSaga", REFUND_SAMPLE) == "CompensationFailed":
                _say(f"the refund service is back; alice retries the failed refund: steadfast retry {REFUND_SAMPLE}")
                _fault(f"DELETE {REFUND_PATH}", 0)
                retry = ["retry", REFUND_SAMPLE, "--context", "alice", "--reason", "demo: the refund service is back"]
                done = subprocess.run(
                    [sys.executable, "-m", "steadfast.cli", *retry],
                    env=self.env,
                    capture_output=True,
                    text=True,
                )
                _say((done.stdout or done.stderr).strip())
                repaired = done.returncode == 0
            if not flipped and self.phase("HealthMonitor", "flappy-service") == "Healthy":
                _say("the flappy service starts failing its health checks (3 failures, then fine again)")
                _fault("GET /healthz/flappy", 3)
                flipped = True
            settled = all(self.phase(kind, name) in SETTLED[kind] for kind, name in applied if kind in SETTLED)
            settled = settled and self.phase("TaskSaga", REFUND_SAMPLE) == "Compensated"
            monitor_done = (
                flipped and self.phase("HealthMonitor", "flappy-service") == "Healthy" and self._alerts() >= 2
            )
            if tty:
                print(
                    "\033[2J\033[H" + time.strftime("%H:%M:%S ") + "$ kubectl get steadfast -o wide\n" + self.table(),
                    flush=True,
                )
            if settled and monitor_done:
                break
            time.sleep(2)

    def _alerts(self) -> int:
        out = self.k("get", "hmon", "flappy-service", "-o", "jsonpath={.status.alertsSent}", check=False)
        return int(out.stdout or 0)

    def show(self, applied: list[tuple[str, str]]) -> None:
        print("\n$ kubectl get steadfast -o wide", flush=True)
        print(self.table(), flush=True)
        for kind, name in applied:
            out = self.k("get", kind.lower(), name, "-o", "json", check=False)
            if out.returncode == 0:
                status = json.loads(out.stdout).get("status", {})
                status.pop("conditions", None)
                print(f"$ kubectl get {kind.lower()} {name} -o yaml   # status; conditions left out", flush=True)
                print(yaml.safe_dump({"status": status}, sort_keys=False), flush=True)

    def next_steps(self) -> str:
        exports = self.state.exports().strip().replace("\n", "\n  ")
        return (
            "Try next, in another shell:\n"
            f"  {exports}\n"
            f"  {self.kubectl} get steadfast -w\n"
            f"  {self.kubectl} describe saga onboard-43-fails          # the Events of a compensated saga\n"
            f"  {sys.executable} -m steadfast.cli template params onboard   # what a run of the template gives\n"
            f"  {self.kubectl} --context carol patch apr hotfix-friday --type merge "
            '-p \'{"spec":{"decision":{"approved":true}}}\'   # refused: carol is no approver\n'
            f"  {sys.executable} -m steadfast.cli status -A\n"
            f"  {sys.executable} -m steadfast.cli console --context alice -n default   # the web console as alice\n"
            f"Web console (once started as above): {CONSOLE_URL}  (alice's approvals inbox: {CONSOLE_URL}approvals)\n"
            f"Logs: {self.state.directory}/logs"
        )


def run(directory: Path, engine: EngineName = "local") -> int:
    demo = Demo(directory, engine)
    demo.start_services()
    applied = demo.apply()
    _say("watching the resources settle (Ctrl-C stops everything)")
    try:
        demo.live(applied)
        demo.show(applied)
        print(demo.next_steps(), flush=True)
        if not sys.stdin.isatty():
            print(
                f"Everything keeps running. Stop it with: make dev-down (steadfast dev down --dir {directory})",
                flush=True,
            )
            return 0
        print("\nShowing the live table; press Ctrl-C to stop everything.", flush=True)
        while True:
            time.sleep(3)
            print(
                "\033[2J\033[H" + time.strftime("%H:%M:%S ") + "$ kubectl get steadfast -o wide\n" + demo.table(),
                flush=True,
            )
    except KeyboardInterrupt:
        _say("stopping everything")
        cluster.ControlPlane(directory).down()
        _say("stopped")
    return 0
