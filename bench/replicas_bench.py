"""Saga throughput with 1, 2 and 3 operator replicas, each with its own daprd, on one placement, scheduler and
PostgreSQL state store (as the chart deploys them), beside the 1-replica baseline of the same run.

    python bench/replicas_bench.py [--sagas 40] [--replicas 1,2,3] [--write docs/BENCHMARKS-replicas.md]

Per replica count: fresh operator processes with kopf peering (one active for resource handlers, all running the
workflow worker), a fresh namespace, N four-step TaskSagas created at once; throughput is N over the time from the
first create to the last Succeeded. Each replica's activity count (its metrics) shows how the engine spread the
work. The default size runs in about a minute on 2 cores; `--sagas 300` is the documented bigger size.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from operator_bench import GROUP, REPO, VERSION, Bed, saga_spec, scrape, total
from steadfast.api.kinds import TASK_SAGA
from steadfast.binding import instance_id
from steadfast.dev.workflow_api import WorkflowAPI

PEERING = "bench-peers"


def peering(bed: Bed) -> None:
    """kopf's peering CRD (from the chart) and its object: without them every replica would think it is alone."""
    from kubernetes.client.exceptions import ApiException

    from steadfast.dev.controlplane import binaries

    kubectl = str(binaries.ensure(binaries.KUBECTL)["kubectl"])
    env = {**os.environ, "KUBECONFIG": bed.state.kubeconfig}
    crd = REPO / "charts/steadfast/crds/clusterkopfpeerings.kopf.dev.yaml"
    subprocess.run([kubectl, "apply", "--server-side", "-f", str(crd)], env=env, check=True, capture_output=True)
    wait = [kubectl, "wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev"]
    subprocess.run(wait, env=env, check=True, capture_output=True)
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}}
    with contextlib.suppress(ApiException):
        bed.objects.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)


class Replica:
    """One `steadfast run --peering` process on its own daprd."""

    def __init__(self, bed: Bed, engine: Any, index: int) -> None:
        self.bed, self.engine, self.index = bed, engine, index
        self.metrics_url = f"http://127.0.0.1:{bed.processes.free_port()}/metrics"
        self.log = bed.workdir / f"replica-{index}.log"
        address = self.metrics_url.removeprefix("http://").removesuffix("/metrics")
        self.proc = bed.processes.launch(
            [
                sys.executable,
                "-m",
                "steadfast.cli",
                "run",
                "-A",
                "--egress-allow",
                bed.egress_allow,
                "--metrics",
                address,
                "--peering",
                PEERING,
                "--peering-lifetime",
                "3",
                "--priority",
                str(100 - index),
            ],
            self.log,
            detach=False,
            env={**bed.env, "DAPR_GRPC_ENDPOINT": engine.address},
        )
        bed.processes.wait_until(
            lambda: "workflow worker connected" in self.log.read_text(),
            what=f"replica {index}",
            timeout=60,
            pid=self.proc.pid,
            log=self.log,
        )
        bed._wait_admission()

    def activities(self) -> float:
        return total(scrape(self.metrics_url), "steadfast_action_duration_seconds_count{")

    def stop(self) -> None:
        self.bed.processes.stop(self.proc.pid)


def run(bed: Bed, replicas: int, sagas: int, threads: int) -> dict[str, Any]:
    from steadfast.dev.controlplane.daprd import DaprdEngine

    assert isinstance(bed.engine, DaprdEngine)
    sidecars = [bed.engine.sidecar(bed.workdir / f"daprd-{i}").start() for i in range(1, replicas)]
    started: list[Replica] = []
    try:
        for i, engine in enumerate([bed.engine, *sidecars]):
            started.append(Replica(bed, engine, i))
        ns = bed.namespace()
        names = [f"r{replicas}-{i:04d}" for i in range(sagas)]
        before = [r.activities() for r in started]
        cpu_before = _cpu_seconds()
        t0 = time.monotonic()

        def create(name: str) -> str:
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskSaga", "metadata": {"name": name}}
            body["spec"] = saga_spec(bed.task_url, f"{ns}-{name}")
            made = bed.objects.create_namespaced_custom_object(GROUP, VERSION, ns, "tasksagas", body)
            return instance_id(TASK_SAGA, ns, name, made["metadata"]["uid"])

        with ThreadPoolExecutor(threads) as pool:
            instances = list(pool.map(create, names))
        # The work is done when the engine says every instance COMPLETED; the statuses are checked after.
        with WorkflowAPI(bed.engine.address) as api:
            while True:
                states = [api.runtime_status(i) for i in instances]
                if states.count("COMPLETED") == sagas:
                    break
                if any(s in ("FAILED", "TERMINATED") for s in states) or time.monotonic() - t0 > 600:
                    raise RuntimeError(f"not every instance completed: {sorted(set(states))}")
                time.sleep(0.25)
        seconds = time.monotonic() - t0
        cpu = _cpu_seconds() - cpu_before
        deadline = time.monotonic() + 10
        while True:
            items = bed.objects.list_namespaced_custom_object(GROUP, VERSION, ns, "tasksagas")["items"]
            stale = [i["metadata"]["name"] for i in items if (i.get("status") or {}).get("phase") != "Succeeded"]
            if not stale or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        per_replica = [int(r.activities() - b) for r, b in zip(started, before, strict=True)]
        bed.core.delete_namespace(ns)
        return {
            "replicas": replicas,
            "sagas": sagas,
            "seconds": round(seconds, 2),
            "sagas_per_second": round(sagas / seconds, 2),
            "activities_per_replica": per_replica,
            "cpu_busy": round(cpu / (seconds * (os.cpu_count() or 1)), 2),
            # Completed in the engine, yet not Succeeded on the resource 10 s later (see docs/engine.md, "Replicas").
            "stale_statuses": len(stale),
        }
    finally:
        for replica in started:
            replica.stop()
        for sidecar in sidecars:
            sidecar.stop()


def _cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine (every process: the bench shares it with nothing it controls)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def report(rows: list[dict[str, Any]]) -> str:
    base = rows[0]["sagas_per_second"]
    lines = [
        "| replicas | sagas | seconds | sagas/s | vs 1 replica | activities per replica | machine CPU busy "
        "| stale statuses |",
        "|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        per = " / ".join(str(a) for a in r["activities_per_replica"])
        lines.append(
            f"| {r['replicas']} | {r['sagas']} | {r['seconds']} | {r['sagas_per_second']} | "
            f"{r['sagas_per_second'] / base:.2f}x | {per} | {r['cpu_busy']:.0%} | {r['stale_statuses']} |"
        )
    return "\n".join(lines)


def write_doc(path: Path, table: str, argv: list[str], script: str = "bench/replicas_bench.py") -> None:
    """Replace what follows the `<!-- results -->` marker of `path` with the command, the machine and `table`."""
    text = path.read_text() if path.exists() else ""
    marker = "<!-- results -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"{marker}\n`python {script} {' '.join(argv)}` on {os.cpu_count()} CPUs "
        f"({platform.machine()}, Python {platform.python_version()}), {stamp}:\n\n{table}\n"
    )
    path.write_text(text.split(marker)[0] + block if marker in text else text + "\n" + block)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=40)
    parser.add_argument("--replicas", default="1,2,3", help="comma-separated replica counts, the first the baseline")
    parser.add_argument("--threads", type=int, default=8, help="threads creating the sagas")
    parser.add_argument("--engine", default="daprd-postgres", choices=["daprd-postgres", "daprd-redis"])
    parser.add_argument("--write", type=Path, default=None, help="replace the results block of this Markdown file")
    parser.add_argument("--keep", type=Path, default=None, help="run in this folder and keep it (the logs)")
    args = parser.parse_args(argv)
    rows = []
    with contextlib.ExitStack() as stack:
        tmp = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="steadfast-replicas-")))
        bed = Bed(Path(tmp), engine=args.engine)
        try:
            peering(bed)
            for n in (int(v) for v in args.replicas.split(",")):
                print(f"{n} replica(s): {args.sagas} sagas ...", file=sys.stderr, flush=True)
                rows.append(run(bed, n, args.sagas, args.threads))
                print(rows[-1], file=sys.stderr, flush=True)
        finally:
            bed.close()
    table = report(rows)
    print(table)
    if args.write:
        write_doc(args.write, table, argv)
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
