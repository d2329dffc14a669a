"""Benchmark of waiting Kubernetes actions: what N sagas waiting on objects cost the API server.

    python bench/waits_bench.py [--sagas 200] [--window 60] [--engine local] [--write docs/BENCHMARKS-waits.md]

On the local control plane, engine and operator: first the API server's request rate with the operator idle
(the baseline: kopf's watches, the controller manager, leases), then with N sagas each waiting for its own
ConfigMap (`successWhen: object.data.ready == "yes"`), over the same window. The difference, per waiting
saga and minute, is what waiting costs; the shared watches are counted too. Then every ConfigMap is set ready
at once and the time until all N sagas succeed is measured (the watch, not a poll, ends each wait).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO / "bench"))

from operator_bench import GROUP, VERSION, Bed, PhaseWatch, api_calls, scrape, total  # noqa: E402

POLL_SECONDS = 10  # the naive alternative: every waiting step reads its object this often


def waiting_spec(name: str) -> dict[str, Any]:
    return {
        "task": {"id": name, "title": "wait for a ConfigMap"},
        "steps": [
            {
                "name": "wait",
                "action": {
                    "kubernetes": {
                        "object": {
                            "apiVersion": "v1",
                            "kind": "ConfigMap",
                            "metadata": {"name": f"gate-{name}"},
                            "data": {"ready": "no"},
                        },
                        "successWhen": 'object.data.ready == "yes"',
                        "timeout": "1h",
                    }
                },
            }
        ],
    }


def window(bed: Bed, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    """API server requests by verb/resource, and the operator's samples, over `seconds`."""
    a0, m0 = api_calls(scrape(f"{bed.state.apiserver}/metrics", bed.admin_token, bed.ca)), scrape(bed.metrics_url)
    time.sleep(seconds)
    a1, m1 = api_calls(scrape(f"{bed.state.apiserver}/metrics", bed.admin_token, bed.ca)), scrape(bed.metrics_url)
    calls = {k: v - a0.get(k, 0.0) for k, v in a1.items() if v - a0.get(k, 0.0) > 0}
    ops = {k: v - m0.get(k, 0.0) for k, v in m1.items() if k.startswith("steadfast_object_requests_total")}
    return calls, ops


def settle(bed: Bed, quiet: float = 5.0) -> None:
    """Until the operator has written no status for `quiet` seconds: starts write at a bounded rate."""
    last, since = -1.0, time.monotonic()
    while time.monotonic() - since < quiet:
        now = scrape(bed.metrics_url).get("steadfast_status_writes_total", 0.0)
        if now != last:
            last, since = now, time.monotonic()
        time.sleep(0.5)


def run(bed: Bed, n: int, seconds: float, threads: int) -> dict[str, Any]:
    idle, _ = window(bed, seconds)
    ns = bed.namespace()
    watch = PhaseWatch(bed, ns, "tasksagas")
    names = [f"w{i:05d}" for i in range(n)]

    def create(name: str) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskSaga", "metadata": {"name": name}}
        bed.objects.create_namespaced_custom_object(
            GROUP, VERSION, ns, "tasksagas", {**body, "spec": waiting_spec(name)}
        )

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, names))
    deadline = time.monotonic() + max(300, n)
    while scrape(bed.metrics_url).get("steadfast_object_waits", 0) < n:
        assert time.monotonic() < deadline, "not every saga registered its wait"
        time.sleep(1)
    settle(bed)
    busy, ops = window(bed, seconds)
    samples = scrape(bed.metrics_url)
    started = time.monotonic()

    def release(name: str) -> None:
        bed.core.patch_namespaced_config_map(f"gate-{name}", ns, {"data": {"ready": "yes"}})

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(release, names))
    watch.wait(names, {"Succeeded", "Failed", "Compensated"}, timeout=max(300, n))
    released = time.monotonic() - started
    watch.stop()
    succeeded = sum(1 for nm in names if "Succeeded" in watch.seen.get(nm, {}))
    minutes = seconds / 60
    return {
        "n": n,
        "seconds": seconds,
        "idle_per_min": sum(idle.values()) / minutes,
        "busy_per_min": sum(busy.values()) / minutes,
        "operator_object_requests": total(ops, "steadfast_object_requests_total"),
        "watches": samples.get("steadfast_object_watches", 0.0),
        "waits": samples.get("steadfast_object_waits", 0.0),
        "released_seconds": released,
        "succeeded": succeeded,
        "busy_top": sorted(busy.items(), key=lambda kv: -kv[1])[:5],
    }


def report(r: dict[str, Any]) -> str:
    extra = (r["busy_per_min"] - r["idle_per_min"]) / r["n"]
    polling = 60 / POLL_SECONDS
    rows = [
        "| measure | value | baseline | ratio |",
        "|---|---|---|---|",
        f"| API server requests per minute, all clients, {r['n']} sagas waiting "
        f"| {r['busy_per_min']:.0f} | operator idle: {r['idle_per_min']:.0f} "
        f"| {r['busy_per_min'] / max(r['idle_per_min'], 1):.2f} |",
        f"| extra API requests per waiting saga per minute | {max(extra, 0):.3f} "
        f"| polling every {POLL_SECONDS}s: {polling:.0f} | {max(extra, 0) / polling:.4f} |",
        f"| requests the operator made for kubernetes actions in the window | {r['operator_object_requests']:.0f} "
        f"| | |",
        f"| shared watches open / waits registered | {r['watches']:.0f} / {r['waits']:.0f} | | |",
        f"| all {r['n']} ConfigMaps set ready -> all sagas Succeeded (s) | {r['released_seconds']:.1f} "
        f"({r['succeeded']}/{r['n']}) | | |",
    ]
    top = ", ".join(f"{k}: {v:.0f}" for k, v in r["busy_top"])
    return "\n".join(rows) + f"\n\nBusiest API requests in the waiting window: {top}."


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=200)
    parser.add_argument("--window", type=float, default=60.0, help="seconds of each measurement window")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--engine", default="local", choices=["local", "daprd"])
    parser.add_argument("--write", type=Path, default=None, help="write the Markdown report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="steadfast-bench-") as tmp:
        bed = Bed(Path(tmp), engine=args.engine)
        try:
            bed.start_operator()
            results = run(bed, args.sagas, args.window, args.threads)
        finally:
            bed.close()
    table = report(results)
    print(table)
    if args.write:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        machine = f"{os.cpu_count()} cores, Python {platform.python_version()}, engine {args.engine}"
        args.write.write_text(
            "# Benchmark: waiting Kubernetes actions\n\n"
            f"Measured {when} by `python bench/waits_bench.py {' '.join(argv)}` on {machine}; control plane, "
            "engine and operator on this one machine.\n\n"
            f"{table}\n\n"
            "How to read it: a waiting step costs the API server one impersonated read when it registers (and "
            "another at each re-arm, every 10 minutes or when the operator restarts); the object itself is "
            "followed by one shared watch per resource and namespace, however many steps wait on it. The "
            "baseline row is the same control plane with the operator idle, measured just before; polling is "
            "what reading each object every few seconds would cost instead. The window holds no re-arm (every "
            "10 minutes by design), so amortised a waiting saga costs 0.1 impersonated GET per minute on top of "
            "what is measured here.\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
