"""Benchmark of both workflow engines, the local one and daprd, through the real SDK in one run.

The same load runs on each engine of ``--engines`` (default both), and the table prints them side by
side with the ratio local/daprd. N workflows of four activities each are scheduled from 16 client
threads; the worker runs in a separate process (as the operator would). Each workflow runs two
activities, waits for an external event, then runs two more. When the workflow code reaches the wait
it tells the benchmark over a local socket; the benchmark then raises the event and the workflow
records, when its code resumes, the wall-clock time. Reported: workflows/s end to end, the p50/p99 latency from
``raise_workflow_event`` to the workflow resuming, CPU of the engine's processes under load and while
idle (a worker connected, nothing to do), and their resident memory after the load.

    python bench/engine_bench.py [-n 500] [--threads 16] [--engines local,daprd] [--write docs/engine.md]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))


def _register(rt: Any, notify_port: int) -> None:
    import dapr.ext.workflow as wf

    lock = threading.Lock()
    conn: list[socket.socket] = []

    @rt.activity(name="bench_double")  # type: ignore[untyped-decorator]
    def bench_double(ctx: Any, arg: dict[str, Any]) -> dict[str, Any]:
        return {**arg, "x": arg["x"] * 2}

    def notify_waiting(instance_id: str) -> None:
        with lock:
            if not conn:
                conn.append(socket.create_connection(("127.0.0.1", notify_port)))
            conn[0].sendall(f"{instance_id}\n".encode())

    @rt.workflow(name="bench_flow")  # type: ignore[untyped-decorator]
    def bench_flow(ctx: wf.DaprWorkflowContext, x: int) -> Any:
        arg: dict[str, Any] = {"x": x}
        arg = yield ctx.call_activity(bench_double, input=arg)
        arg = yield ctx.call_activity(bench_double, input=arg)
        waiting = ctx.wait_for_external_event("go")
        if not ctx.is_replaying:
            notify_waiting(ctx.instance_id)  # benchmark-only side effect: "about to wait"
        yield waiting
        if not ctx.is_replaying:
            arg["resumed"] = time.time()  # only meaningful for the first, live execution of this step
        arg = yield ctx.call_activity(bench_double, input=arg)
        arg = yield ctx.call_activity(bench_double, input=arg)
        return arg


def worker_main(address: str, notify_port: int) -> int:
    """Worker mode: serve the benchmark workflow until SIGTERM."""
    import logging
    import signal

    import dapr.ext.workflow as wf

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("durabletask-worker").setLevel(logging.WARNING)
    host, port = address.rsplit(":", 1)
    rt = wf.WorkflowRuntime(host=host, port=port)
    _register(rt, notify_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rt.start()  # type: ignore[no-untyped-call]
    print("ready", flush=True)
    stop.wait()
    rt.shutdown()  # type: ignore[no-untyped-call]
    return 0


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run(engine_name: str, n: int, threads: int, idle_seconds: float, synchronous: str = "FULL") -> dict[str, Any]:
    import subprocess

    import dapr.ext.workflow as wf

    from steadfast.dev import engines
    from steadfast_engine.process import start_engine

    tmp = Path(tempfile.mkdtemp(prefix=f"engine-bench-{engine_name}-"))
    listener = socket.create_server(("127.0.0.1", 0))
    notify_port = listener.getsockname()[1]
    ready: dict[str, threading.Event] = {}
    ready_lock = threading.Lock()

    def event_for(iid: str) -> threading.Event:
        with ready_lock:
            return ready.setdefault(iid, threading.Event())

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=read, args=(conn,), daemon=True).start()

    def read(conn: socket.socket) -> None:
        for line in conn.makefile("r"):
            event_for(line.strip()).set()

    threading.Thread(target=accept, daemon=True).start()
    engine: engines.Engine
    if engine_name == "local":
        engine = start_engine(tmp / "bench.db", synchronous=synchronous)
    else:
        engine = engines.start("daprd", tmp)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--worker", engine.address, str(notify_port)]
    worker = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert worker.stdout is not None
        if b"ready" not in worker.stdout.readline():
            raise RuntimeError("benchmark worker did not start")
        client = wf.DaprWorkflowClient(host=engine.host, port=str(engine.port))
        pids = list(engine.pids.values())
        time.sleep(2)  # let start-up work settle before measuring idle
        idle0 = _cpu(*pids)
        time.sleep(idle_seconds)
        idle_cpu = (_cpu(*pids) - idle0) / idle_seconds
        engine_cpu0 = _cpu(*pids)
        worker_cpu0 = _cpu(worker.pid)
        latencies: list[float] = []
        outputs: dict[str, Any] = {}

        def one(i: int) -> None:
            iid = f"bench-{i}"
            signal = event_for(iid)
            client.schedule_new_workflow("bench_flow", input=i, instance_id=iid)
            if not signal.wait(120):
                raise RuntimeError(f"{iid} never became ready")
            raised = time.time()
            client.raise_workflow_event(iid, "go")
            state = client.wait_for_workflow_completion(iid, timeout_in_seconds=120)
            assert state is not None and state.runtime_status.name == "COMPLETED", iid
            out = json.loads(state.serialized_output)
            outputs[iid] = out
            latencies.append(out["resumed"] - raised)

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(n)))
        elapsed = time.perf_counter() - started
        engine_cpu = _cpu(*pids) - engine_cpu0
        worker_cpu = _cpu(worker.pid) - worker_cpu0
        rss = sum(_rss_mib(pid) for pid in pids)
        bad = [iid for iid, out in outputs.items() if out["x"] != int(iid.split("-")[1]) * 16]
        assert not bad, bad[:5]
        client.close()  # type: ignore[no-untyped-call]
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        engine.stop()
        listener.close()
    return {
        "engine": engine_name,
        "processes": len(pids),
        "idle_cpu_pct": idle_cpu * 100,
        "rss_mib": rss,
        "workflows": n,
        "threads": threads,
        "seconds": elapsed,
        "workflows_per_s": n / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "engine_cpu_s": engine_cpu,
        "worker_cpu_s": worker_cpu,
        "cpus": os.cpu_count(),
    }


def _cpu(*pids: int) -> float:
    """User + system CPU seconds of the processes so far."""
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# (label, key, format); the ratio column is local / daprd.
_ROWS = [
    ("throughput (workflows/s)", "workflows_per_s", "{:.1f}"),
    ("raise_event -> resume p50 (ms)", "p50_ms", "{:.1f}"),
    ("raise_event -> resume p99 (ms)", "p99_ms", "{:.1f}"),
    ("engine CPU under load (s)", "engine_cpu_s", "{:.2f}"),
    ("engine CPU per workflow (ms)", "engine_cpu_ms_per_wf", "{:.2f}"),
    ("worker CPU, SDK process (s)", "worker_cpu_s", "{:.2f}"),
    ("engine idle CPU, worker connected (%)", "idle_cpu_pct", "{:.2f}"),
    ("engine RSS after the load (MiB)", "rss_mib", "{:.0f}"),
    ("engine processes", "processes", "{}"),
    ("wall time (s)", "seconds", "{:.2f}"),
]


def table(results: list[dict[str, Any]]) -> str:
    """One column per engine, and local/daprd when both ran."""
    for r in results:
        r["engine_cpu_ms_per_wf"] = r["engine_cpu_s"] * 1000 / r["workflows"]
    by = {r["engine"]: r for r in results}
    ratio = "local" in by and "daprd" in by
    head = ["metric", *by, *(["local / daprd"] if ratio else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for label, key, fmt in _ROWS:
        cells = [fmt.format(r[key]) for r in by.values()]
        if ratio:
            base = by["daprd"][key]
            cells.append(f"{by['local'][key] / base:.2f}" if base else "-")
        lines.append("| " + " | ".join([label, *cells]) + " |")
    first = results[0]
    lines.append("")
    lines.append(
        f"{first['workflows']} workflows (4 activities + 1 external event each), {first['threads']} client "
        f"threads, worker in its own process, {first['cpus']} CPUs; local engine SQLite synchronous="
        f"{first.get('synchronous', 'FULL')}; daprd v1.18.3 with placement and scheduler, state.sqlite "
        "actor state store."
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--worker":
        return worker_main(argv[1], int(argv[2]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=500)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--write", type=Path, help="also write the table into the marked section of this markdown file")
    p.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"], help="local engine's SQLite mode")
    p.add_argument("--engines", default="local,daprd", help="comma-separated: local, daprd (default both)")
    p.add_argument("--idle-seconds", type=float, default=10.0, help="how long idle CPU is measured")
    args = p.parse_args(argv)
    from steadfast.dev import engines

    results = []
    for name in engines.parse(args.engines):
        print(f"[bench] {name}: {args.n} workflows", file=sys.stderr, flush=True)
        result = run(name, args.n, args.threads, args.idle_seconds, args.synchronous)
        result["synchronous"] = args.synchronous
        results.append(result)
    text = table(results)
    print(text)
    if args.write:
        write_section(args.write, text)
    return 0


START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def write_section(path: Path, text: str) -> None:
    """Replace the marked benchmark section of a markdown file (append one if it has none)."""
    stamp = time.strftime("%Y-%m-%d %H:%M")
    section = f"{START}\n_Measured by `bench/engine_bench.py` on {stamp}._\n\n{text}\n{END}"
    doc = path.read_text() if path.exists() else ""
    if START in doc and END in doc:
        head, rest = doc.split(START, 1)
        doc = head + section + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(doc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
