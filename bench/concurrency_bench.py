"""Benchmark of concurrency limits (#26 item 3b): N one-step sagas on one key with a limit, at a slow idempotent
receiver that records when each call arrives, beside the same N sagas without a key.

    python bench/concurrency_bench.py [--sagas 1000] [--limit 5] [--delay 0.2] [--engine local|daprd]
                                      [--write docs/BENCHMARKS-concurrency.md]

On the local control plane, engine and operator (operator_bench.Bed). Each saga calls DELETE /notices/<ns>-<name>
on the task service, which answers after `--delay` seconds. Reported for both runs: wall time to all Succeeded,
the most sagas whose calls overlapped at the receiver (with a key it must be at most the limit), whether the
sagas still in line once all had joined it started in creation order (creationTimestamp, then name), the time
from create to Succeeded per saga (p50, p95), API server requests and status writes per saga; the difference
between the runs is the cost of queueing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from operator_bench import GROUP, VERSION, Bed, PhaseWatch, api_calls, pct, scrape

ROUTE = "DELETE /notices/{id}"


def _call(url: str, method: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def most_at_once(calls: list[tuple[float, str]], delay: float) -> int:
    """The most distinct sagas with a call in flight at once (a call lasts `delay` seconds from its arrival)."""
    ordered = sorted(calls)
    best, start = 0, 0
    for end_index, (at, _) in enumerate(ordered):
        while ordered[start][0] <= at - delay:
            start += 1
        best = max(best, len({n for _, n in ordered[start : end_index + 1]}))
    return best


def run(bed: Bed, n: int, limit: int | None, threads: int, delay: float) -> dict[str, Any]:
    ns = bed.namespace()
    watch = PhaseWatch(bed, ns, "tasksagas")
    names = [f"s{i:05d}" for i in range(n)]

    def spec(name: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": {"id": name},
            "steps": [
                {"name": "call", "action": {"http": {"method": "DELETE", "url": f"{bed.task_url}/notices/{ns}-{name}"}}}
            ],
        }
        if limit is not None:
            out["concurrency"] = {"key": "downstream", "limit": limit}
        return out

    created: dict[str, float] = {}

    def create(name: str) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskSaga", "metadata": {"name": name}, "spec": spec(name)}
        created[name] = time.time()
        bed.objects.create_namespaced_custom_object(GROUP, VERSION, ns, "tasksagas", body)

    before = scrape(bed.metrics_url)
    calls0 = api_calls(scrape(f"{bed.state.apiserver}/metrics", bed.admin_token, bed.ca))
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, names))
    done = watch.wait(names, {"Succeeded"}, timeout=max(600, n * 2))
    elapsed = time.monotonic() - started
    calls = api_calls(scrape(f"{bed.state.apiserver}/metrics", bed.admin_token, bed.ca))
    after = scrape(bed.metrics_url)
    watch.stop()
    prefix = f"/notices/{ns}-"
    deliveries = [
        (d["at"], d["path"].removeprefix(prefix))
        for d in _call(f"{bed.task_url}/_stats", "GET")["deliveries"]
        if d["path"].startswith(prefix)
    ]
    first: dict[str, float] = {}
    for at, name in sorted(deliveries):
        first.setdefault(name, at)
    # FIFO is judged on the sagas still waiting once every saga had joined the line (seen Queued or later, plus a
    # second for its acquire): whoever started before then may have found a free slot while sagas created earlier
    # had not been started by the operator yet, which is no queue jump.
    lined_up = max(min(seen.values()) for seen in watch.seen.values()) + 1.0
    listed = bed.objects.list_namespaced_custom_object(GROUP, VERSION, ns, "tasksagas")["items"]
    place = {o["metadata"]["name"]: (o["metadata"]["creationTimestamp"], o["metadata"]["name"]) for o in listed}
    late = [name for _, name in sorted((at, name) for name, at in first.items() if at > lined_up)]
    fifo = [place[name] for name in late] == sorted(place[name] for name in late)
    latencies = [watch.seen[nm]["Succeeded"] - created[nm] for nm in names if "Succeeded" in watch.seen.get(nm, {})]
    writes = after.get("steadfast_status_writes_total", 0) - before.get("steadfast_status_writes_total", 0)
    return {
        "limit": limit,
        "n": n,
        "all_done": done,
        "succeeded": len(latencies),
        "elapsed": elapsed,
        "calls": len(deliveries),
        "most_at_once": most_at_once(deliveries, delay),
        "fifo": fifo,
        "judged": len(late),
        "p50": pct(latencies, 50),
        "p95": pct(latencies, 95),
        "api_per_saga": sum(v - calls0.get(k, 0.0) for k, v in calls.items()) / n,
        "writes_per_saga": writes / n,
    }


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "| run | sagas | all Succeeded | wall s | most in flight | queued in creation order "
        "| create→Succeeded p50 / p95 s | API requests / saga | status writes / saga |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        what = f"key, limit {r['limit']}" if r["limit"] is not None else "no key"
        fifo = f"{'yes' if r['fifo'] else 'NO'} ({r['judged']} judged)" if r["limit"] is not None else "-"
        lines.append(
            f"| {what} | {r['n']} | {r['succeeded']} | {r['elapsed']:.1f} | {r['most_at_once']} | {fifo} | "
            f"{r['p50']:.1f} / {r['p95']:.1f} | {r['api_per_saga']:.1f} | {r['writes_per_saga']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sagas", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the receiver takes to answer")
    parser.add_argument("--threads", type=int, default=16, help="threads creating the sagas")
    parser.add_argument("--engine", default="local", choices=["local", "daprd"])
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="steadfast-bench-") as tmp:
        bed = Bed(Path(tmp), engine=args.engine)
        try:
            bed.start_operator()
            _call(f"{bed.task_url}/_faults", "POST", {"route": ROUTE, "fail": 0, "delay": args.delay})
            for limit in (args.limit, None):
                print(f"{args.sagas} sagas, limit {limit} ...", file=sys.stderr, flush=True)
                results.append(run(bed, args.sagas, limit, args.threads, args.delay))
        finally:
            bed.close()
    table = report(results)
    print(table)
    if args.write:
        load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
        args.write.write_text(
            "# Benchmark: concurrency limits\n\n"
            f"`python bench/concurrency_bench.py {' '.join(argv)}` on {platform.machine()}, "
            f"{datetime.now(UTC):%Y-%m-%d}, engine {args.engine}, receiver delay {args.delay}s; load average "
            f"(1 min) {load} at the end.\n\n"
            f"{table}\n"
        )
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
