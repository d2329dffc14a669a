"""Benchmark of the local workflow engine through the real SDK (a table, not a timed test).

N workflows of four activities each are scheduled from 16 client threads; the worker runs in a
separate process (as the operator would). Each workflow runs two activities, waits for an external
event, then runs two more. When the workflow code reaches the wait it tells the benchmark over a
local socket; the benchmark then raises the event and the workflow records, when its code resumes,
the wall-clock time. Reported: workflows/s end to end and the p50/p99 latency from
``raise_workflow_event`` to the workflow resuming.

    python bench/engine_bench.py [-n 500] [--threads 16] [--write docs/engine.md]
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


def run(n: int, threads: int, synchronous: str = "FULL") -> dict[str, Any]:
    import subprocess

    import dapr.ext.workflow as wf

    from steadfast.dev.engine.process import start_engine

    tmp = Path(tempfile.mkdtemp(prefix="engine-bench-"))
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
    engine = start_engine(tmp / "bench.db", synchronous=synchronous)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--worker", engine.address, str(notify_port)]
    worker = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert worker.stdout is not None
        if b"ready" not in worker.stdout.readline():
            raise RuntimeError("benchmark worker did not start")
        client = wf.DaprWorkflowClient(host=engine.host, port=str(engine.port))
        engine_cpu0 = _cpu(engine.pid)
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
        engine_cpu = _cpu(engine.pid) - engine_cpu0
        worker_cpu = _cpu(worker.pid) - worker_cpu0
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


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def table(r: dict[str, Any]) -> str:
    rows = [
        ("workflows (4 activities + 1 event each)", f"{r['workflows']}"),
        ("client threads", f"{r['threads']}"),
        ("wall time", f"{r['seconds']:.2f} s"),
        ("throughput", f"{r['workflows_per_s']:.1f} workflows/s"),
        ("raise_event -> resume p50", f"{r['p50_ms']:.1f} ms"),
        ("raise_event -> resume p99", f"{r['p99_ms']:.1f} ms"),
        ("engine CPU", f"{r['engine_cpu_s']:.2f} s"),
        ("worker CPU (SDK, separate process)", f"{r['worker_cpu_s']:.2f} s"),
        ("CPUs", f"{r['cpus']}"),
        ("engine SQLite synchronous", f"{r.get('synchronous', 'FULL')}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'metric'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--worker":
        return worker_main(argv[1], int(argv[2]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=500)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--write", type=Path, help="also write the table into the marked section of this markdown file")
    p.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"], help="engine's SQLite mode")
    args = p.parse_args(argv)
    result = run(args.n, args.threads, args.synchronous)
    result["synchronous"] = args.synchronous
    text = table(result)
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
