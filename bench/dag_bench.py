"""Benchmark of parallel steps (#28): a fan-out of N one-second steps beside the same N steps in order.

    python bench/dag_bench.py [--steps 50] [--delay 1.0] [--rounds 1] [--engine local|daprd]
                              [--actions-per-namespace 8] [--write docs/BENCHMARKS-dag.md [--append]]

On the local control plane, engine and operator (operator_bench.Bed). Each saga has N steps that each POST
/records to the task service, which answers after `--delay` seconds. Fan-out: every step declares `dependsOn: []`
(a root), so all start at once; in order: no dependsOn, each step after the one before. Reported per run: wall
time from create to Succeeded (as the watch saw it), the step time the receiver imposes (delay, or N x delay),
the overhead per step ((wall - step time) / N), the spread of the N requests' arrivals at the receiver, and the
ratio of the two wall times.

The operator runs at most `--actions-per-namespace` actions of one namespace at once (its fair share, 8 by
default): a fan-out wider than that runs in waves of that many, so the flag is passed to the operator as given.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from operator_bench import GROUP, VERSION, Bed, PhaseWatch

ROUTE = "POST /records"


def _call(url: str, method: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def plan(bed: Bed, name: str, n: int, *, fan_out: bool) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for i in range(n):
        step: dict[str, Any] = {
            "name": f"s{i:03d}",
            "action": {"http": {"method": "POST", "url": f"{bed.task_url}/records", "body": {"id": f"{name}-{i}"}}},
        }
        if fan_out:
            step["dependsOn"] = []  # declared, empty: a root; all of them start at once
        steps.append(step)
    return {"task": {"id": name}, "steps": steps}


def run(bed: Bed, n: int, delay: float, *, fan_out: bool, round_no: int) -> dict[str, Any]:
    ns = bed.namespace()
    watch = PhaseWatch(bed, ns, "tasksagas")
    name = f"{'fan' if fan_out else 'seq'}-{round_no}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TaskSaga",
        "metadata": {"name": name},
        "spec": plan(bed, name, n, fan_out=fan_out),
    }
    created = time.time()
    bed.objects.create_namespaced_custom_object(GROUP, VERSION, ns, "tasksagas", body)
    done = watch.wait([name], {"Succeeded", "Compensated", "Failed"}, timeout=max(600, n * delay * 4))
    watch.stop()
    seen = watch.seen.get(name, {})
    wall = seen.get("Succeeded", time.time()) - created
    arrivals = sorted(
        a["at"]
        for a in _call(f"{bed.task_url}/_stats", "GET")["applied"]
        if a["route"] == ROUTE and str((a.get("body") or {}).get("id", "")).startswith(f"{name}-")
    )
    step_time = delay if fan_out else n * delay
    return {
        "mode": "fan-out" if fan_out else "in order",
        "n": n,
        "ok": done and "Succeeded" in seen,
        "wall": wall,
        "step_time": step_time,
        "overhead": (wall - step_time) / n,
        "spread": (arrivals[-1] - arrivals[0]) if arrivals else float("nan"),
        "calls": len(arrivals),
    }


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "| run | steps | Succeeded | wall s (create → Succeeded) | step time s | overhead / step s "
        "| arrivals spread s | requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['mode']} | {r['n']} | {'yes' if r['ok'] else 'NO'} | {r['wall']:.2f} | {r['step_time']:.1f} | "
            f"{r['overhead']:.3f} | {r['spread']:.2f} | {r['calls']} |"
        )
    fans = [r["wall"] for r in results if r["mode"] == "fan-out"]
    seqs = [r["wall"] for r in results if r["mode"] == "in order"]
    if fans and seqs:
        ratio = (sum(seqs) / len(seqs)) / (sum(fans) / len(fans))
        lines.append(f"\nIn order / fan-out wall time: **{ratio:.1f}x**.")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--delay", type=float, default=1.0, help="seconds the receiver takes to answer each step")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each mode")
    parser.add_argument("--engine", default="local", choices=["local", "daprd"])
    parser.add_argument("--actions-per-namespace", type=int, default=8, help="the operator's per-namespace share")
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument("--append", action="store_true", help="add a section to --write instead of replacing it")
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="steadfast-bench-") as tmp:
        bed = Bed(Path(tmp), engine=args.engine)
        try:
            bed.start_operator("--actions-per-namespace", str(args.actions_per_namespace))
            _call(f"{bed.task_url}/_faults", "POST", {"route": ROUTE, "fail": 0, "delay": args.delay})
            for round_no in range(args.rounds):
                for fan_out in (True, False):
                    print(f"{args.steps} steps, {'fan-out' if fan_out else 'in order'} ...", file=sys.stderr)
                    results.append(run(bed, args.steps, args.delay, fan_out=fan_out, round_no=round_no))
        finally:
            bed.close()
    table = report(results)
    print(table)
    if args.write:
        load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
        section = (
            f"## {args.engine}: {args.steps} steps, at most {args.actions_per_namespace} actions per namespace at "
            "once\n\n"
            f"`python bench/dag_bench.py {' '.join(argv)}` on {platform.machine()}, "
            f"{datetime.now(UTC):%Y-%m-%d}, engine {args.engine}, receiver delay {args.delay}s per step; load "
            f"average (1 min) {load} at the end.\n\n"
            f"{table}\n"
        )
        if args.append and args.write.exists():
            args.write.write_text(args.write.read_text() + "\n" + section)
        else:
            args.write.write_text("# Benchmark: parallel steps\n\n" + section)
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
