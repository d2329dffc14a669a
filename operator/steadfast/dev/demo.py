"""`steadfast dev demo`: the whole product on a laptop without Docker, in one command.

Starts (or reuses) the local control plane and engine, the sample task service on 127.0.0.1:8089 and
the operator, applies `config/samples/`, waits for the samples to settle and shows their statuses.
Everything keeps running afterwards; `steadfast dev down` stops it all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from steadfast.dev.controlplane import binaries, cluster, identities, processes

SAMPLES = cluster.REPO_ROOT / "config" / "samples"
TASK_SERVICE = cluster.REPO_ROOT / "examples" / "task_service.py"
TASK_SERVICE_PORT = 8089  # the samples' URLs point here
SETTLE_TIMEOUT = 60.0


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def _supported_kinds() -> set[str]:
    from steadfast import kinds

    return {setup.binding.kind.kind for setup in kinds.BINDINGS}


def _start_extra(state: cluster.State, name: str, args: list[str], env: dict[str, str]) -> None:
    log = Path(state.directory) / "logs" / f"{name}.log"
    proc = processes.launch(args, log, detach=True, env=env)
    state.pids[name] = proc.pid
    state.logs[name] = str(log)
    cluster.write_state(state)


def run(directory: Path) -> int:
    existing = cluster.status(directory)
    if existing["running"]:
        _say(f"reusing what runs from {directory}")
        state = cluster.read_state(directory)
        assert state is not None
    else:
        if existing["components"]:
            cluster.ControlPlane(directory).down()
        users = [identities.Identity.parse(u) for u in ("alice:approvers", "bob:approvers", "carol")]
        state = cluster.ControlPlane(directory, users=users, detach=True).up()
    kubectl = str(binaries.ensure(binaries.KUBECTL)["kubectl"])
    env = {**os.environ, **state.env(), "PYTHONUNBUFFERED": "1"}

    if "task-service" not in state.pids or not processes.alive(state.pids["task-service"]):
        if processes.tcp_open("127.0.0.1", TASK_SERVICE_PORT):
            _say(f"port {TASK_SERVICE_PORT} is taken; the samples expect the task service there")
            return 1
        _say(f"starting the sample task service on 127.0.0.1:{TASK_SERVICE_PORT}")
        _start_extra(state, "task-service", [sys.executable, str(TASK_SERVICE), "--port", str(TASK_SERVICE_PORT)],
                     env)
        processes.wait_until(lambda: processes.tcp_open("127.0.0.1", TASK_SERVICE_PORT), what="task service",
                             timeout=30, pid=state.pids["task-service"], log=Path(state.logs["task-service"]))
    if "operator" not in state.pids or not processes.alive(state.pids["operator"]):
        _say("starting the operator (steadfast run)")
        _start_extra(state, "operator", [sys.executable, "-m", "steadfast.cli", "run", "-A",
                                         "--egress-allow", "127.0.0.0/8"], env)

    supported = _supported_kinds()
    applied: list[tuple[str, str]] = []
    for sample in sorted(SAMPLES.glob("*.yaml")):
        doc = yaml.safe_load(sample.read_text())
        if doc.get("kind") not in supported:
            _say(f"skipping {sample.name}: {doc.get('kind')} is not handled by this build yet")
            continue
        subprocess.run([kubectl, "apply", "-f", str(sample)], env=env, check=True)
        applied.append((doc["kind"].lower(), doc["metadata"]["name"]))

    _say("waiting for the samples to settle")
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        phases = []
        for kind, name in applied:
            out = subprocess.run([kubectl, "get", kind, name, "-o", "jsonpath={.status.phase}"], env=env,
                                 capture_output=True, text=True)
            phases.append(out.stdout.strip())
        if all(p and p not in ("Pending", "Running", "Compensating") for p in phases):
            break
        time.sleep(0.5)

    print("\n$ kubectl get steadfast -A", flush=True)
    subprocess.run([kubectl, "get", "steadfast", "-A"], env=env, check=False)
    for kind, name in applied:
        out = subprocess.run([kubectl, "get", kind, name, "-o", "json"], env=env, capture_output=True, text=True)
        if out.returncode == 0:
            status = json.loads(out.stdout).get("status", {})
            status.pop("conditions", None)
            print(f"\n$ kubectl get {kind} {name} -o yaml   # status, conditions left out", flush=True)
            print(yaml.safe_dump({"status": status}, sort_keys=False), flush=True)
    exports = state.exports().strip().replace("\n", "\n  ")
    print(
        "Everything keeps running. In another shell:\n"
        f"  {exports}\n"
        f"  {kubectl} get steadfast -A\n"
        f"Logs are in {state.directory}/logs. Stop everything with: make dev-down "
        f"(or steadfast dev down --dir {directory})",
        flush=True,
    )
    return 0
