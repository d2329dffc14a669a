"""SagaSchedules at scale: N schedules firing at the same second, how late their runs are and what each fire costs.

    python bench/schedules_bench.py [--schedules 50] [--baseline N/10] [--namespaces 5] [--period 60]
                                    [--periods 3] [--write docs/BENCHMARKS-schedules.md]

Two flows on one operator and the local engine: first a baseline of `--baseline` schedules (default N/10), then
`--schedules`, spread over `--namespaces` namespaces. Every schedule is `@every <period>s` (`--form cron`: the
6-field `*/<period> * * * * *`), so all of them fire at the same second, the worst case (`--stagger` spreads them
over the period instead); each run is a one-step saga calling the task service. The operator runs with
`--min-schedule-interval` set to the period (its default, 60 s, is the shortest a cluster allows unless its admin
lowers it). After one warm-up period the flow is measured over `--periods` scheduled times:
- lateness of each run: its creationTimestamp (1 s resolution) minus its scheduled time (label
  `steadfast.dev/scheduled-time`), p50/p95/max; and as this benchmark's watch first saw it (ms);
- runs created against runs owed (a run is owed for each scheduled time inside the window): none missing, none
  twice (two UIDs under one name), and the schedules' own `missedRuns` / `skippedRuns`;
- CPU seconds of each process and API requests by verb and resource (kube-apiserver's `apiserver_request_total`)
  over the window, per run;
- operator RSS, engine instances, TaskSagas and Events kept, and the stored workflow history of a schedule and of
  a run (events, bytes), at the end of the flow.
The baseline's namespaces are deleted before the second flow starts. The table compares the two flows (a ratio:
at N / at the baseline); with --write, a Markdown report. `--schedules 1000` is the documented bigger size.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from operator_bench import GROUP, VERSION, Bed, api_calls, pct, rss_mib, scrape
from replicas_bench import write_doc
from steadfast.dev.workflow_api import WorkflowAPI
from steadfast.schedules.cron import parse

SCHEDULE_LABEL = "steadfast.dev/schedule"
TIME_LABEL = "steadfast.dev/scheduled-time"


# ------------------------------------------------------------------------------------------- the runs seen
@dataclass
class Run:
    namespace: str
    name: str
    schedule: str
    scheduled: int  # unix seconds, from the label
    created: float  # creationTimestamp, unix seconds (1 s resolution)
    seen: float  # when this benchmark's watch first saw it
    uids: set[str] = field(default_factory=set)
    succeeded: float | None = None


class RunWatch:
    """Every TaskSaga a schedule made, cluster-wide, as a watch sees it (runs the history limits delete included)."""

    def __init__(self, bed: Bed) -> None:
        from kubernetes import watch

        self.bed = bed
        self.runs: dict[tuple[str, str], Run] = {}
        self._lock = threading.Lock()
        self._stopped = False
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # A watch ends (server timeout, expired resource version): list and watch again until stop().
        while not self._stopped:
            with contextlib.suppress(Exception):
                listed = self.bed.objects.list_cluster_custom_object(
                    GROUP, VERSION, "tasksagas", label_selector=SCHEDULE_LABEL
                )
                for obj in listed.get("items", []):
                    self._record(obj)
                for event in self._watch.stream(
                    self.bed.objects.list_cluster_custom_object,
                    GROUP,
                    VERSION,
                    "tasksagas",
                    label_selector=SCHEDULE_LABEL,
                    resource_version=listed["metadata"]["resourceVersion"],
                    timeout_seconds=600,
                ):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(event["object"])
            if not self._stopped:
                time.sleep(0.5)

    def _record(self, obj: dict[str, Any]) -> None:
        now = time.time()
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        with self._lock:
            run = self.runs.get(key)
            if run is None:
                created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00")).timestamp()
                labels = meta.get("labels") or {}
                run = Run(
                    meta["namespace"], meta["name"], labels[SCHEDULE_LABEL], int(labels[TIME_LABEL]), created, now
                )
                self.runs[key] = run
            run.uids.add(meta["uid"])
            if run.succeeded is None and (obj.get("status") or {}).get("phase") == "Succeeded":
                run.succeeded = now

    def snapshot(self) -> list[Run]:
        with self._lock:
            return list(self.runs.values())

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


# ------------------------------------------------------------------------------------------------- a flow
def schedule_spec(bed: Bed, index: int, period: int, form: str, stagger: bool) -> dict[str, Any]:
    if stagger:
        expr = f"{index % period}/{period} * * * * *"
    elif form == "cron":
        expr = f"*/{period} * * * * *"
    else:
        expr = f"@every {period}s"
    http = {"method": "POST", "url": f"{bed.task_url}/notices", "body": {"task": f"sched-{index}"}}
    step = {"name": "notify", "action": {"http": http}}
    return {"schedule": expr, "sagaTemplate": {"spec": {"steps": [step]}}}


def count(bed: Bed, namespace: str, group: str, plural: str) -> int:
    """Objects the API server holds in `namespace`, counted by etcd (a list with limit 1)."""
    if group:
        listed = bed.objects.list_namespaced_custom_object(group, VERSION, namespace, plural, limit=1)
        meta = listed.get("metadata") or {}
        return len(listed.get("items") or []) + int(meta.get("remainingItemCount") or 0)
    events = bed.core.list_namespaced_event(namespace, limit=1)
    return len(events.items or []) + int(events.metadata.remaining_item_count or 0)


def statuses(bed: Bed, namespaces: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ns in namespaces:
        out.extend(bed.objects.list_namespaced_custom_object(GROUP, VERSION, ns, "sagaschedules")["items"])
    return out


def stored_history(api: WorkflowAPI, instance: str) -> tuple[int, int]:
    """Events and bytes the engine stores for the instance's current run."""
    events = api.history(instance)
    return len(events), sum(e.ByteSize() for e in events)


def flow(bed: Bed, watch: RunWatch, n: int, namespaces: int, period: int, periods: int, args: Any) -> dict[str, Any]:
    spaces = [bed.namespace() for _ in range(max(1, min(namespaces, n)))]
    api = WorkflowAPI(bed.engine.address)
    instances0 = len(api.instance_ids())
    rss0 = rss_mib(bed.operator.pid)
    names = [(spaces[i % len(spaces)], f"s-{i:04d}") for i in range(n)]

    def create(i: int) -> None:
        ns, name = names[i]
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SagaSchedule", "metadata": {"name": name}}
        spec = schedule_spec(bed, i, period, args.form, args.stagger)
        bed.objects.create_namespaced_custom_object(GROUP, VERSION, ns, "sagaschedules", {**body, "spec": spec})

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(n)))
    create_seconds = time.monotonic() - t0
    deadline = time.monotonic() + max(120, n / 2)
    while True:  # every schedule's workflow has started and reported its next time
        ready = sum(1 for s in statuses(bed, spaces) if (s.get("status") or {}).get("nextScheduleTime"))
        if ready >= n or time.monotonic() > deadline:
            break
        time.sleep(2)
    ready_seconds = time.monotonic() - t0
    # One warm-up period (the first fires land while the schedules are still being created), then the window
    # (start, end]: the scheduled times in it are owed. CPU and API requests are counted from just before it.
    crons = {
        name: parse(schedule_spec(bed, i, period, args.form, args.stagger)["schedule"], "UTC")
        for i, (_, name) in enumerate(names)
    }
    now = datetime.now(UTC)
    first = min(c.next_after(now) for c in crons.values())
    start = first.timestamp() + period - 0.5
    end = start + period * periods
    owed: dict[tuple[str, str], list[int]] = {}
    for ns, name in names:
        times, t = [], crons[name].next_after(datetime.fromtimestamp(start, UTC))
        while t.timestamp() <= end:
            times.append(int(t.timestamp()))
            t = crons[name].next_after(t)
        owed[(ns, name)] = times
    expected = sum(len(v) for v in owed.values())
    time.sleep(max(0.0, start - time.time()))
    cpu0 = bed.cpu()
    calls0 = api_calls(scrape(f"{bed.state.apiserver}/metrics", bed.admin_token, bed.ca))
    rss_samples: list[float] = []
    while time.time() < end:
        rss_samples.append(rss_mib(bed.operator.pid))
        time.sleep(min(2.0, max(0.0, end - time.time())))

    def in_window() -> list[Run]:
        return [r for r in watch.snapshot() if r.namespace in spaces and start < r.scheduled <= end]

    # After the last scheduled time: until every owed run has Succeeded, at most until just before the next one.
    grace_end = end + period - 1.5
    while time.time() < grace_end:
        runs = in_window()
        if len(runs) >= expected and all(r.succeeded for r in runs):
            break
        rss_samples.append(rss_mib(bed.operator.pid))
        time.sleep(0.5)
    measured = time.time() - start
    cpu1 = bed.cpu()
    calls1 = api_calls(scrape(f"{bed.state.apiserver}/metrics", bed.admin_token, bed.ca))
    runs = in_window()
    made = {(r.namespace, r.schedule, r.scheduled) for r in runs}
    missing = sum(1 for (ns, name), times in owed.items() for t in times if (ns, name, t) not in made)
    twice = sum(1 for r in runs if len(r.uids) > 1)
    late_created = [r.created - r.scheduled for r in runs]
    late_seen = [(r.seen - r.scheduled) * 1000 for r in runs]
    to_succeeded = [r.succeeded - r.scheduled for r in runs if r.succeeded]
    cpu = {k: round(cpu1[k] - cpu0.get(k, 0.0), 2) for k in cpu1}
    calls = {k: v - calls0.get(k, 0.0) for k, v in calls1.items()}
    calls = {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v > 0}
    scheds = statuses(bed, spaces)
    sample = [s for s in scheds if (s.get("status") or {}).get("workflowInstanceId")][:5]
    sched_history = [stored_history(api, s["status"]["workflowInstanceId"]) for s in sample]
    run_history: list[tuple[int, int]] = []
    for ns in spaces[:1]:
        items = bed.objects.list_namespaced_custom_object(GROUP, VERSION, ns, "tasksagas", limit=5)["items"]
        run_history = [
            stored_history(api, r["status"]["workflowInstanceId"])
            for r in items
            if (r.get("status") or {}).get("workflowInstanceId") and r["status"].get("phase") == "Succeeded"
        ]
    result = {
        "schedules": n,
        "namespaces": len(spaces),
        "period": period,
        "periods": periods,
        "create_seconds": round(create_seconds, 1),
        "ready_seconds": round(ready_seconds, 1),
        "measured_seconds": round(measured, 1),
        "expected": expected,
        "created": len(runs),
        "missing": missing,
        "twice": twice,
        "succeeded": sum(1 for r in runs if r.succeeded),
        "missed_runs": sum(int((s.get("status") or {}).get("missedRuns") or 0) for s in scheds),
        "skipped_runs": sum(int((s.get("status") or {}).get("skippedRuns") or 0) for s in scheds),
        "late_created": late_created,
        "late_seen_ms": late_seen,
        "to_succeeded": to_succeeded,
        "cpu": cpu,
        "calls": calls,
        "rss0": round(rss0, 1),
        "rss_peak": round(max(rss_samples, default=float("nan")), 1),
        "rss_end": round(rss_mib(bed.operator.pid), 1),
        "instances0": instances0,
        "instances": len(api.instance_ids()),
        "sagas_kept": sum(count(bed, ns, GROUP, "tasksagas") for ns in spaces),
        "events_kept": sum(count(bed, ns, "", "events") for ns in spaces),
        "schedule_history": max(sched_history, default=(0, 0)),
        "run_history": max(run_history, default=(0, 0)),
        "spaces": spaces,
    }
    api.close()
    return result


# ------------------------------------------------------------------------------------------------ reporting
def per_run(row: dict[str, Any]) -> dict[str, float]:
    runs = max(row["created"], 1)
    return {
        "operator_ms": row["cpu"].get("operator", 0.0) * 1000 / runs,
        "all_ms": sum(row["cpu"].values()) * 1000 / runs,
        "calls": sum(row["calls"].values()) / runs,
    }


def report(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    lines = [
        "| schedules (namespaces) | runs created / owed | missing, twice, missedRuns, skippedRuns "
        "| lateness by creationTimestamp p50 / p95 / max (s) | as watched p50 / p95 / max (ms) "
        "| scheduled → Succeeded p95 (s) | CPU s over the window: operator / all | CPU ms per run: operator / all "
        "| API requests per run | operator RSS before → peak (MiB) | engine instances | TaskSagas / Events kept "
        "| vs baseline: lateness p95, CPU per run |",
        "|---|---:|---|---|---|---:|---|---|---:|---|---:|---|---|",
    ]
    b = per_run(base)
    b95 = pct(base["late_seen_ms"], 95)
    for r in rows:
        p = per_run(r)
        lc, ls = r["late_created"], r["late_seen_ms"]
        ratio = (
            f"{pct(ls, 95) / b95:.1f}x, {p['all_ms'] / b['all_ms']:.2f}x"
            if b95 and b["all_ms"] and r is not base
            else "1x, 1x"
        )
        lines.append(
            f"| {r['schedules']} ({r['namespaces']}) | {r['created']} / {r['expected']} "
            f"| {r['missing']}, {r['twice']}, {r['missed_runs']}, {r['skipped_runs']} "
            f"| {pct(lc, 50):.0f} / {pct(lc, 95):.0f} / {max(lc, default=float('nan')):.0f} "
            f"| {pct(ls, 50):.0f} / {pct(ls, 95):.0f} / {max(ls, default=float('nan')):.0f} "
            f"| {pct(r['to_succeeded'], 95):.1f} "
            f"| {r['cpu'].get('operator', 0):.1f} / {sum(r['cpu'].values()):.1f} "
            f"| {p['operator_ms']:.0f} / {p['all_ms']:.0f} | {p['calls']:.1f} "
            f"| {r['rss0']} → {r['rss_peak']} | {r['instances'] - r['instances0']} "
            f"| {r['sagas_kept']} / {r['events_kept']} | {ratio} |"
        )
    return "\n".join(lines)


def costs(row: dict[str, Any]) -> str:
    """The bigger flow's cost per run and per schedule: API requests by verb/resource, history, CPU by process."""
    runs = max(row["created"], 1)
    calls = ", ".join(f"{k} {v / runs:.2f}" for k, v in row["calls"].items() if v / runs >= 0.01)
    cpu = ", ".join(f"{k} {v * 1000 / runs:.0f}" for k, v in sorted(row["cpu"].items(), key=lambda kv: -kv[1]) if v)
    n = row["schedules"]
    sh, rh = row["schedule_history"], row["run_history"]
    return "\n".join(
        [
            f"At {n} schedules, per run created ({row['created']} runs over {row['measured_seconds']} s):",
            "",
            "| cost | value |",
            "|---|---|",
            f"| API requests per run ({sum(row['calls'].values()) / runs:.1f}) | {calls} |",
            f"| CPU ms per run, by process | {cpu} |",
            f"| stored history: a schedule's instance at rest (its current run, waiting for its timer) "
            f"| {sh[0]} events, {sh[1]} bytes |",
            f"| stored history: one run's saga instance | {rh[0]} events, {rh[1]} bytes |",
            f"| engine instances per schedule at the end | {(row['instances'] - row['instances0']) / n:.2f} |",
            f"| TaskSagas kept per schedule at the end | {row['sagas_kept'] / n:.2f} |",
            f"| Events kept per schedule at the end | {row['events_kept'] / n:.2f} |",
            f"| operator RSS per schedule (peak - before) | {(row['rss_peak'] - row['rss0']) * 1024 / n:.0f} KiB |",
            f"| creating the schedules / until all had reported their next time | {row['create_seconds']} s / "
            f"{row['ready_seconds']} s |",
        ]
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--schedules", type=int, default=50)
    parser.add_argument("--baseline", type=int, default=None, help="schedules of the baseline flow (default N/10)")
    parser.add_argument("--namespaces", type=int, default=5)
    parser.add_argument("--period", type=int, default=60, help="seconds between two scheduled times")
    parser.add_argument("--periods", type=int, default=3, help="scheduled times measured (after one warm-up)")
    parser.add_argument("--form", choices=["every", "cron"], default="every", help="@every Ns or */N seconds cron")
    parser.add_argument("--stagger", action="store_true", help="spread the schedules over the period (6-field cron)")
    parser.add_argument("--engine", default="local", choices=["local", "daprd"])
    parser.add_argument("--write", type=Path, default=None, help="replace the results block of this Markdown file")
    args = parser.parse_args(argv)
    if (args.form == "cron" or args.stagger) and 60 % args.period:
        parser.error("a 6-field cron period must divide 60")
    sizes = [args.baseline or max(1, args.schedules // 10), args.schedules]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="steadfast-schedules-") as tmp:
        bed = Bed(Path(tmp), engine=args.engine)
        watch: RunWatch | None = None
        try:
            bed.start_operator("--min-schedule-interval", f"{args.period}s")  # a cluster's default is 60 s
            watch = RunWatch(bed)
            for i, n in enumerate(sizes):
                print(f"{n} schedules, {args.periods} periods of {args.period} s ...", file=sys.stderr, flush=True)
                row = flow(bed, watch, n, args.namespaces, args.period, args.periods, args)
                rows.append(row)
                brief = {k: v for k, v in row.items() if not isinstance(v, list)}
                print(brief, file=sys.stderr, flush=True)
                if i < len(sizes) - 1:  # the baseline's schedules go before the next flow is measured
                    for ns in row["spaces"]:
                        bed.core.delete_namespace(ns)
                    for ns in row["spaces"]:
                        bed.wait_namespace_gone(ns)
        finally:
            if watch is not None:
                watch.stop()
            with contextlib.suppress(Exception):
                bed.close()
    table = report(rows)
    detail = costs(rows[-1])
    print(table)
    print()
    print(detail)
    if args.write:
        write_doc(args.write, f"{table}\n\n{detail}", argv, script="bench/schedules_bench.py")
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
