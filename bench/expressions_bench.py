"""Benchmark of expressions: their cost per step, and four-step saga throughput with outputs vs without.

    python bench/expressions_bench.py [--steps 2000] [--sagas 200] [--engine local]
                                      [--write docs/BENCHMARKS-expressions.md]

1. Cost per step, in microseconds: a typical step's expressions (four placeholders in url and body, a
   successWhen, two outputs) evaluated in this process (compiled once, as the sandbox does) against the
   same through the sandbox (two round trips to a child process: render the request, then read the response).
2. Throughput: N four-step TaskSagas applied at once on the local control plane, engine and operator, first
   without expressions, then the seed's saga with placeholders and outputs in every step (same bed, same run).
"""

from __future__ import annotations

import argparse
import platform
import statistics
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

from operator_bench import GROUP, VERSION, Bed, PhaseWatch, saga_spec  # noqa: E402
from steadfast.expressions.language import TASK, compile_expression, responding  # noqa: E402
from steadfast.expressions.sandbox import Sandbox  # noqa: E402

REQUEST = ["task.id", "task.title", "outputs.recordId", "task.assignee"]  # url and body placeholders
RESPONSE = [
    "response.status == 200 && has(response.body.reservationId)",
    "response.body.reservationId",
    "response.body.id",
]
VARIABLES: dict[str, Any] = {
    "task": {"id": "42", "title": "Onboard Ada", "assignee": "ada"},
    "saga": {"name": "onboard-42", "namespace": "team-a", "uid": "u-1"},
    "outputs": {"recordId": "rec-1"},
}
ANSWER = {"status": 200, "headers": {"content-type": "application/json"}, "durationMs": 3}
ANSWER["body"] = {"ok": True, "id": "rec-1", "reservationId": "res-2"}


def per_step_cost(steps: int) -> dict[str, float]:
    """Microseconds per step: in process vs through the sandbox, same expressions and data."""
    scope, answering = TASK, responding(TASK)
    with_response = {**VARIABLES, "response": ANSWER}
    request = [compile_expression(s, scope) for s in REQUEST]
    response = [compile_expression(s, answering) for s in RESPONSE]
    started = time.perf_counter()
    for _ in range(steps):
        for program in request:
            program.eval(data=VARIABLES)
        for program in response:
            program.eval(data=with_response)
    in_process = (time.perf_counter() - started) / steps * 1e6
    box = Sandbox(children=1)
    try:
        box.evaluate([("1 + 1", scope)], {})  # start the child outside the measurement
        samples = []
        for _ in range(steps):
            began = time.perf_counter()
            box.evaluate([(s, scope) for s in REQUEST], VARIABLES)
            box.evaluate([(s, answering) for s in RESPONSE], with_response)
            samples.append((time.perf_counter() - began) * 1e6)
    finally:
        box.close()
    return {
        "expressions_per_step": len(REQUEST) + len(RESPONSE),
        "in_process_us": in_process,
        "sandbox_us": statistics.mean(samples),
        "sandbox_p99_us": sorted(samples)[int(0.99 * (len(samples) - 1))],
    }


def seed_spec(task_url: str, task: str) -> dict[str, Any]:
    """The four steps of `saga_spec`, written with placeholders and outputs (as config/samples/)."""

    def http(method: str, path: str, body: Any = None, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"http": {"method": method, "url": f"{task_url}{path}", **extra}}
        if body is not None:
            out["http"]["body"] = body
        return out

    return {
        "task": {"id": task, "title": "Onboard Ada", "assignee": "ada"},
        "steps": [
            {
                "name": "create-task-record",
                "action": http("POST", "/records", {"id": "$(task.id)", "title": "$(task.title)"}),
                "outputs": {"recordId": "response.body.id"},
                "compensation": http("DELETE", "/records/$(outputs.recordId)"),
            },
            {
                "name": "reserve-capacity",
                "action": http(
                    "POST",
                    "/capacity/reserve",
                    {"assignee": "$(task.assignee)", "record": "$(outputs.recordId)"},
                    successWhen="response.status == 200 && has(response.body.reservationId)",
                ),
                "outputs": {"reservationId": "response.body.reservationId"},
                "compensation": http("POST", "/capacity/release", {"reservationId": "$(outputs.reservationId)"}),
            },
            {
                "name": "notify-assignee",
                "action": http("POST", "/notices", {"text": "task $(task.id) is yours, $(task.assignee)"}),
                "outputs": {"noticeId": "response.body.noticeId"},
                "compensation": http("DELETE", "/notices/$(outputs.noticeId)"),
            },
            {
                "name": "update-dashboard",
                "action": http(
                    "POST", "/dashboard", {"record": "$(outputs.recordId)", "notice": "$(outputs.noticeId)"}
                ),
            },
        ],
    }


def throughput(bed: Bed, n: int, threads: int, with_outputs: bool) -> dict[str, Any]:
    ns = bed.namespace()
    watch = PhaseWatch(bed, ns, "tasksagas")
    names = [f"{'o' if with_outputs else 'p'}{i:05d}" for i in range(n)]
    spec = seed_spec if with_outputs else saga_spec

    def create(name: str) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskSaga",
            "metadata": {"name": name},
            "spec": spec(bed.task_url, f"{ns}-{name}"),
        }
        bed.objects.create_namespaced_custom_object(GROUP, VERSION, ns, "tasksagas", body)

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, names))
    watch.wait(names, {"Succeeded", "Failed", "Compensated"}, timeout=max(600, n))
    elapsed = time.monotonic() - started
    watch.stop()
    succeeded = sum(1 for nm in names if "Succeeded" in watch.seen.get(nm, {}))
    return {"n": n, "succeeded": succeeded, "rate": succeeded / elapsed, "seconds": elapsed}


def report(results: dict[str, Any]) -> str:
    cost, plain, outputs = results["cost"], results.get("plain"), results.get("outputs")
    rows = [
        "| measure | value | baseline | ratio |",
        "|---|---|---|---|",
        f"| expressions of one step ({cost['expressions_per_step']}), sandbox: two batches (µs, mean / p99) "
        f"| {cost['sandbox_us']:.0f} / {cost['sandbox_p99_us']:.0f} | in process: {cost['in_process_us']:.0f} "
        f"| {cost['sandbox_us'] / cost['in_process_us']:.1f}x |",
    ]
    if plain and outputs:
        rows.append(
            f"| four-step sagas with placeholders and outputs, N={outputs['n']} (sagas/s) "
            f"| {outputs['rate']:.1f} ({outputs['succeeded']}/{outputs['n']} Succeeded) "
            f"| without: {plain['rate']:.1f} ({plain['succeeded']}/{plain['n']}) "
            f"| {outputs['rate'] / plain['rate']:.2f} |"
        )
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps for the per-step cost")
    parser.add_argument("--sagas", type=int, default=200, help="sagas per throughput run (0: skip)")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--engine", default="local", choices=["local", "daprd"])
    parser.add_argument("--write", type=Path, default=None, help="write the Markdown report here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"cost": per_step_cost(args.steps)}
    if args.sagas:
        with tempfile.TemporaryDirectory(prefix="steadfast-bench-") as tmp:
            bed = Bed(Path(tmp), engine=args.engine)
            try:
                bed.start_operator()
                results["plain"] = throughput(bed, args.sagas, args.threads, with_outputs=False)
                results["outputs"] = throughput(bed, args.sagas, args.threads, with_outputs=True)
            finally:
                bed.close()
    table = report(results)
    print(table)
    if args.write:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        import os

        machine = f"{os.cpu_count()} cores, Python {platform.python_version()}, engine {args.engine}"
        args.write.write_text(
            "# Benchmark: expressions\n\n"
            f"Measured {when} by `python bench/expressions_bench.py {' '.join(argv)}` on {machine}; everything "
            "(control plane, engine, task service, operator) on this one machine.\n\n"
            f"{table}\n\n"
            "How to read it: the first row is the price of isolating expressions in a child process (a pipe "
            "round trip per batch) over evaluating them in the operator; the second is what that price, plus "
            "rendering and reading responses, costs a saga end to end, against the same four steps written "
            "without expressions.\n"
        )
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
