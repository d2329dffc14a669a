"""Saga throughput of one operator on daprd with each actor state store the chart renders, beside daprd on SQLite
(the test bed's default store) from the same run.

    python bench/statestores_bench.py [--sagas 40] [--repeat 3] [--write docs/BENCHMARKS-statestores.md]

Per store: a fresh control plane, daprd with the store's component (PostgreSQL and Redis from the chart's
`helm template`, servers started by the bench on loopback), one operator, N four-step TaskSagas created at once,
`--repeat` batches; throughput is N over the time from the first create until the engine reports every instance
COMPLETED (the best and the median batch). The default size runs in about three minutes on 2 cores; `--sagas 300`
is the documented bigger size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from operator_bench import Bed
from replicas_bench import peering, run, write_doc

STORES = {
    "daprd": "SQLite (`state.sqlite`, the test bed's default)",
    "daprd-postgres": "PostgreSQL (`state.postgresql` v2, the chart's)",
    "daprd-redis": "Redis (`state.redis`, the chart's, AOF)",
}


def measure(engine: str, sagas: int, repeat: int, threads: int, folder: Path) -> dict[str, Any]:
    bed = Bed(folder, engine=engine)
    try:
        peering(bed)
        batches = []
        for i in range(repeat):
            print(f"{engine}: batch {i + 1} of {repeat}, {sagas} sagas ...", file=sys.stderr, flush=True)
            batches.append(run(bed, 1, sagas, threads))
            print(batches[-1], file=sys.stderr, flush=True)
    finally:
        bed.close()
    rates = [b["sagas_per_second"] for b in batches]
    return {
        "engine": engine,
        "sagas": sagas,
        "batches": repeat,
        "best": max(rates),
        "median": statistics.median(rates),
        "cpu_busy": statistics.median(b["cpu_busy"] for b in batches),
        "stale_statuses": sum(b["stale_statuses"] for b in batches),
    }


def report(rows: list[dict[str, Any]]) -> str:
    base = rows[0]["median"]
    lines = [
        "| state store | sagas per batch | batches | sagas/s (median) | sagas/s (best) | vs SQLite | machine CPU busy "
        "| stale statuses |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {STORES[r['engine']]} | {r['sagas']} | {r['batches']} | {r['median']:.2f} | {r['best']:.2f} | "
            f"{r['median'] / base:.2f}x | {r['cpu_busy']:.0%} | {r['stale_statuses']} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sagas", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3, help="batches per store")
    parser.add_argument("--threads", type=int, default=8, help="threads creating the sagas")
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated engines, the first the baseline")
    parser.add_argument("--write", type=Path, default=None, help="replace the results block of this Markdown file")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="steadfast-stores-") as tmp:
        for engine in args.stores.split(","):
            rows.append(measure(engine, args.sagas, args.repeat, args.threads, Path(tmp) / engine))
    table = report(rows)
    print(table)
    if args.write:
        write_doc(args.write, table, argv, script="bench/statestores_bench.py")
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
