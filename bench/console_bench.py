"""Benchmark of the web console: how long its pages take over N Steadfast resources, and how soon a change shows.

    python bench/console_bench.py [--resources 10000] [--namespaces 50] [--runs 7] [--write docs/BENCHMARKS-console.md]

The same cluster as bench/fleet_bench.py (the local control plane alone, N resources in a mix of phases written
through the status subresource, no operator), plus the user alice, who may read the three kinds and Events in
every namespace and is an approver of about half the requests. `steadfast console --context alice` runs as a
process; each page is fetched over HTTP (p50 and p95 of --runs runs, after a warm-up), and the live update is
timed from a status patch to the `change` event on an open stream of that saga's page.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_bench import Fleet, p95  # noqa: E402
from steadfast.api.kinds import KINDS, TASK_SAGA  # noqa: E402
from steadfast.dev.controlplane import processes  # noqa: E402


def reader_rbac(fleet: Fleet, user: str) -> None:
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(fleet.api_client)
    rbac.create_cluster_role(
        {
            "metadata": {"name": "console-bench-reader"},
            "rules": [
                {
                    "apiGroups": ["steadfast.dev"],
                    "resources": [k.plural for k in KINDS],
                    "verbs": ["get", "list", "watch"],
                },
                {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
            ],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": "console-bench-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "console-bench-reader"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
    )


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def page(port: int, path: str, runs: int) -> dict[str, Any]:
    status, body = get(port, path)  # warm-up
    assert status == 200, (path, status, body[:500])
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        status, body = get(port, path)
        samples.append(time.perf_counter() - started)
        assert status == 200, (path, status)
    rows = body.count(b"<tr>") + body.count(b'<article class="card"')
    return {"what": path, "p50": statistics.median(samples), "p95": p95(samples), "rows": rows, "kb": len(body) / 1024}


def more(events: list[float], than: int) -> bool:
    return len(events) > than


def live_latency(fleet: Fleet, port: int, namespace: str, name: str, runs: int) -> dict[str, Any]:
    """Seconds from a status patch of one saga to the `change` event on its page's open stream."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", f"/live?kind=tasksagas&ns={namespace}&name={name}")
    stream = conn.getresponse()
    events: list[float] = []
    opened = threading.Event()
    got = threading.Condition()

    def read() -> None:
        try:
            for line in stream:
                if line.startswith(b"event: open"):
                    opened.set()
                elif line.startswith(b"event: change"):
                    with got:
                        events.append(time.perf_counter())
                        got.notify_all()
        except (OSError, ValueError):  # the stream closed at the end of the measurement
            return

    threading.Thread(target=read, daemon=True).start()
    assert opened.wait(60), "no open event"
    time.sleep(1.0)  # the watch starts right after `open`
    samples = []
    for i in range(runs):
        before = len(events)
        started = time.perf_counter()
        fleet.objects.patch_namespaced_custom_object_status(
            TASK_SAGA.group, TASK_SAGA.version, namespace, TASK_SAGA.plural, name,
            {"status": {"currentStep": f"step-{i % 4}"}},
        )  # fmt: skip
        with got:
            assert got.wait_for(partial(more, events, before), timeout=30), "no change event"
        samples.append(events[before] - started)
    conn.close()
    return {
        "what": "live: status patch -> change event",
        "p50": statistics.median(samples),
        "p95": p95(samples),
        "rows": 1,
        "kb": 0.0,
    }


def measure(fleet: Fleet, port: int, runs: int) -> list[dict[str, Any]]:
    _, body = get(port, "/list?kind=tasksagas&ns=")
    token = re.search(rb'rel="next" href="([^"]+)"', body)
    assert token, "no next page"
    second = token.group(1).decode().replace("&amp;", "&")
    paths = [
        "/?ns=",
        "/approvals?ns=",
        "/list?kind=tasksagas&ns=",
        second,
        "/list?kind=tasksagas&ns=&phase=CompensationFailed",
        "/list?kind=approvalrequests&ns=fleet-3&phase=Pending",
        "/ns/fleet-0/tasksagas/tasksaga-0",
    ]
    rows = [page(port, p, runs) for p in paths]
    rows.append(live_latency(fleet, port, "fleet-0", "tasksaga-0", runs))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| page | p50 (s) | p95 (s) | rows or cards | page (KiB) |", "|---|---|---|---|---|"]
    for r in rows:
        what = r["what"] if r["what"].startswith("live") else f"`{r['what'][:90]}`"
        lines.append(f"| {what} | {r['p50']:.3f} | {r['p95']:.3f} | {r['rows']} | {r['kb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=10000, help="Steadfast resources to create")
    parser.add_argument("--namespaces", type=int, default=50, help="spread over this many namespaces")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per page")
    parser.add_argument("--write", type=Path, default=None, help="write the Markdown report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        fleet = Fleet(Path(tmp), users=("alice",))
        console = None
        try:
            reader_rbac(fleet, "alice")
            print(f"creating {args.resources} resources in {args.namespaces} namespaces", file=sys.stderr)
            seconds, counts = fleet.populate(args.resources, args.namespaces)
            port = processes.free_port()
            argv_console = [sys.executable, "-m", "steadfast.cli", "console", "--listen", f"127.0.0.1:{port}"]
            argv_console += ["--kubeconfig", fleet.kubeconfig, "--context", "alice"]
            log = Path(tmp) / "console.log"
            env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
            console = processes.launch(argv_console, log, detach=False, env=env)
            processes.wait_until(
                lambda: processes.http_ok(f"http://127.0.0.1:{port}/healthz"),
                what="console", timeout=60, pid=console.pid, log=log,
            )  # fmt: skip
            load = os.getloadavg()[0]
            rows = measure(fleet, port, args.runs)
        finally:
            if console is not None:
                processes.stop(console.pid)
            fleet.stop()
    text = table(rows)
    print(text)
    if args.write:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        pending = counts.get("ApprovalRequest/Pending", 0)
        args.write.write_text(
            "# Benchmark: the web console\n\n"
            f"Measured {when} by `python bench/console_bench.py {' '.join(argv)}` on {os.cpu_count()} cores, "
            f"Python {platform.python_version()}; the local control plane (etcd, kube-apiserver), the console "
            f"(`steadfast console --context alice`, one process) and the client on this one machine, no operator. "
            f"{args.resources} resources in {args.namespaces} namespaces, created in {seconds:.0f} s "
            f"(as bench/fleet_bench.py: {pending} Pending ApprovalRequests, alice an approver of about half). "
            f"Load average (1 min) {load:.1f} when the measurements started. {args.runs} runs per page after a "
            "warm-up; a page's time is the whole HTTP answer (the API calls as alice, the HTML).\n\n"
            f"{text}\n\n"
            "The overview lists every resource alice may see (the fleet view's Table-format listing, paged, the "
            "kinds concurrently) and shows the first 200 that need a person; the inbox reads the Pending requests "
            "as objects (one field-selected call) and shows a card for each that names alice; a list page is one "
            "API call of 50 (`limit`/`continue`), filtered by the API server. The live row is the time from a "
            "status patch to the `change` event on the saga page's open stream (one watch, no polling).\n"
        )
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
