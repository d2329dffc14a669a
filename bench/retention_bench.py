"""Sagas flowing through at a steady rate with a short retention: what a cluster keeps stays flat.

    python bench/retention_bench.py [--sagas 2000] [--rate 8] [--ttl 10s] [--write docs/BENCHMARKS-retention.md]

Two flows of four-step TaskSagas, created at `--rate` per second on one operator and the local engine: first a
baseline without retention (what every cluster kept before it: everything), then `--sagas` with
`spec.retention.succeeded: --ttl` and the operator sweeping every 2 s. Every `--every` seconds it samples the
TaskSagas the API server holds (a list with limit 1: `remainingItemCount`, so etcd's count, not a cache), the
instances the engine holds (its workflow API) and the operator's RSS. The table compares the two flows at their
end (a ratio: kept with retention / kept without, per saga created); with --write, a Markdown report and a plot.
`--sagas 10000 --rate 10` is the documented bigger size (about 17 minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from operator_bench import GROUP, VERSION, Bed, rss_mib, saga_spec
from replicas_bench import write_doc
from steadfast.dev.workflow_api import WorkflowAPI


def kept(bed: Bed, namespace: str) -> int:
    """TaskSagas the API server holds in `namespace`, counted by etcd (not a watch cache)."""
    listed = bed.objects.list_namespaced_custom_object(GROUP, VERSION, namespace, "tasksagas", limit=1)
    meta = listed.get("metadata") or {}
    return len(listed.get("items") or []) + int(meta.get("remainingItemCount") or 0)


def flow(bed: Bed, sagas: int, rate: float, ttl: str | None, every: float) -> dict[str, Any]:
    """Create `sagas` at `rate`/s, sampling until the last is created and, with a TTL, until it is swept."""
    namespace = bed.namespace()
    samples: list[dict[str, float]] = []
    done = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        with WorkflowAPI(bed.engine.address) as api:
            while not done.is_set():
                samples.append(
                    {
                        "t": round(time.monotonic() - t0, 1),
                        "objects": kept(bed, namespace),
                        "instances": len(api.instance_ids()),
                        "rss": round(rss_mib(bed.operator.pid), 1),
                    }
                )
                done.wait(every)

    def create(i: int) -> None:
        spec = saga_spec(bed.task_url, f"{namespace}-{i}")
        if ttl:
            spec["retention"] = {"succeeded": ttl}
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskSaga", "metadata": {"name": f"s-{i:05d}"}}
        bed.objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "tasksagas", {**body, "spec": spec})

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(8) as pool:
        for i in range(sagas):
            pool.submit(create, i)
            time.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
    created = time.monotonic() - t0
    if ttl:  # let the last ones finish and be swept
        deadline = time.monotonic() + 120
        while kept(bed, namespace) > rate * 30 and time.monotonic() < deadline:
            time.sleep(every)
    done.set()
    sampler.join()
    last = samples[-1]
    return {
        "flow": f"retention succeeded: {ttl}" if ttl else "no retention (baseline)",
        "sagas": sagas,
        "rate": rate,
        "seconds": round(created, 1),
        "objects": int(last["objects"]),
        "objects_peak": int(max(s["objects"] for s in samples)),
        "instances": int(last["instances"]),
        "rss_start": samples[0]["rss"],
        "rss_end": last["rss"],
        "samples": samples,
    }


def report(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    lines = [
        "| flow | sagas created | at /s | objects kept at end | peak | engine instances at end | kept per saga "
        "| vs baseline | operator RSS start → end (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        per = r["objects"] / r["sagas"]
        ratio = per / (base["objects"] / base["sagas"]) if base["objects"] else float("nan")
        lines.append(
            f"| {r['flow']} | {r['sagas']} | {r['rate']} | {r['objects']} | {r['objects_peak']} | {r['instances']} "
            f"| {per:.3f} | {ratio:.3f}x | {r['rss_start']} → {r['rss_end']} |"
        )
    return "\n".join(lines)


def series(row: dict[str, Any], points: int = 12) -> str:
    """The flow's samples at about `points` moments, as a table (the plot's numbers)."""
    samples = row["samples"]
    step = max(1, len(samples) // points)
    lines = ["| seconds | TaskSagas in etcd | engine instances | operator RSS (MiB) |", "|---:|---:|---:|---:|"]
    for s in [*samples[::step], samples[-1]] if samples[-1] not in samples[::step] else samples[::step]:
        lines.append(f"| {s['t']} | {int(s['objects'])} | {int(s['instances'])} | {s['rss']} |")
    return "\n".join(lines)


def plot(row: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [s["t"] for s in row["samples"]]
    fig, left = plt.subplots(figsize=(8, 4))
    left.plot(t, [s["objects"] for s in row["samples"]], label="TaskSagas in etcd")
    left.plot(t, [s["instances"] for s in row["samples"]], label="engine instances")
    left.set_xlabel("seconds")
    left.set_ylabel("count")
    right = left.twinx()
    right.plot(t, [s["rss"] for s in row["samples"]], color="grey", linestyle="--", label="operator RSS (MiB)")
    right.set_ylabel("MiB")
    fig.legend(loc="upper left")
    left.set_title(f"{row['sagas']} sagas at {row['rate']}/s, {row['flow']}")
    fig.tight_layout()
    fig.savefig(path)
    return True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sagas", type=int, default=2000)
    parser.add_argument("--baseline", type=int, default=None, help="sagas of the baseline flow (default sagas/4)")
    parser.add_argument("--rate", type=float, default=8.0, help="sagas created per second")
    parser.add_argument("--ttl", default="10s")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--write", type=Path, default=None, help="replace the results block of this Markdown file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="steadfast-retention-") as tmp:
        bed = Bed(Path(tmp))
        bed.env["STEADFAST_RETENTION_SWEEP_INTERVAL"] = "2"
        try:
            bed.start_operator()
            rows = [flow(bed, args.baseline or max(1, args.sagas // 4), args.rate, None, args.every)]
            print(rows[-1] | {"samples": len(rows[-1]["samples"])}, file=sys.stderr, flush=True)
            rows.append(flow(bed, args.sagas, args.rate, args.ttl, args.every))
            print(rows[-1] | {"samples": len(rows[-1]["samples"])}, file=sys.stderr, flush=True)
        finally:
            with contextlib.suppress(Exception):
                bed.close()
    table = report(rows)
    print(table)
    if args.write:
        image = args.write.parent / "bench-retention.png"
        drawn = plot(rows[1], image)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        figure = f"\n\n![retention flow]({image.name})\n" if drawn else ""
        note = "The flow with retention over time (the engine's count includes the baseline's instances):"
        over_time = f"\n\n{note}\n\n{series(rows[1])}\n"
        write_doc(args.write, table + figure + over_time, argv, script="bench/retention_bench.py")
        print(f"wrote {args.write} ({stamp}, {os.cpu_count()} CPUs, {platform.machine()})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
