"""Benchmark of the web console: how long its pages take over N Steadfast resources, and how soon a change shows,
each beside the Kubernetes API calls the page rests on, made directly by the same user in the same run.

    python bench/console_bench.py [--resources 10000] [--namespaces 50] [--runs 7] [--write docs/BENCHMARKS-console.md]

The same cluster as bench/fleet_bench.py (the local control plane alone, N resources in a mix of phases written
through the status subresource, no operator), plus the user alice, who may read the three kinds and Events in
every namespace and is an approver of about half the requests. `steadfast console --context alice` runs as a
process; each page is fetched over HTTP (p50 and p95 of --runs runs, after a warm-up), and the live update is
timed from a status patch to the `change` event on an open stream of that saga's page.

The baseline: each run of a page is followed by the API calls the page makes, made from this process with
alice's kubeconfig context (the overview's fleet listing through steadfast.fleet, a list of 50 for a list page,
the GET and Events list of a saga page, the field-selected list of the inbox), the answers read as JSON and
nothing else; the live update beside a watch of the same saga opened directly, which sees the same patch. The
ratio console / API is the console's own share. Beside the overview, `steadfast list -A --needs-person` (the
CLI's fleet view, in this process) against its own calls.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from urllib3.exceptions import HTTPError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_bench import Fleet, p95  # noqa: E402
from steadfast.api.kinds import KINDS, TASK_SAGA, Kind, kind_named  # noqa: E402
from steadfast.dev.controlplane import processes  # noqa: E402
from steadfast.fleet import query  # noqa: E402
from steadfast.fleet.filters import Filters  # noqa: E402

USER = "alice"
SAGA = ("fleet-0", "tasksaga-0")
CLI = ["list", "-A", "--needs-person"]


@dataclass
class Row:
    """One line of the table: the console's (or the CLI's) time beside that of the API calls it rests on."""

    what: str
    p50: float
    p95: float
    api50: float
    api95: float
    calls: int  # API calls of one baseline run
    rows: int
    kb: float

    @property
    def ratio(self) -> float:
        return self.p50 / self.api50 if self.api50 > 0 else float("nan")


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


# ---- the baseline: the API calls of each page, made directly with the viewer's credentials -----------------


class Direct:
    """Alice's API client, made as the console makes its own (kubeconfig mode), and the calls of each page."""

    def __init__(self, kubeconfig: str, context: str) -> None:
        from kubernetes import client, config

        self.kubeconfig, self.context = kubeconfig, context
        self.api = config.new_client_from_config(config_file=kubeconfig, context=context)
        self.objects = client.CustomObjectsApi(self.api)

    def call(self, path: str, params: list[tuple[str, Any]], *, stream: bool = False) -> Any:
        """One GET as alice; its answer as JSON (or, with `stream`, the open response)."""
        response = self.api.call_api(
            path,
            "GET",
            query_params=params,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=False,
        )
        return response if stream else json.loads(response.data)

    def fleet(self, filters: Filters, *, objects: bool) -> Callable[[], int]:
        """steadfast.fleet's listing calls (paged, concurrent, Table format unless `objects`): objects read."""

        def run() -> int:
            return len(query.fetch(self.objects, filters.requests(), None, filters.selector, objects=objects).items)

        return run

    def list_page(self, kind: Kind, namespace: str | None, phase: str | None, token: str | None) -> Callable[[], int]:
        """One list call of 50, filtered by the API server, as a list page makes it."""
        where = "" if namespace is None else f"namespaces/{namespace}/"
        path = f"/apis/{kind.group}/{kind.version}/{where}{kind.plural}"
        params: list[tuple[str, Any]] = [("limit", 50)]
        if phase:
            params.append(("fieldSelector", f"status.phase={phase}"))
        if token:
            params.append(("continue", token))

        def run() -> int:
            return len(self.call(path, params).get("items") or [])

        return run

    def detail(self, kind: Kind, namespace: str, name: str) -> Callable[[], int]:
        """A resource page's calls: the GET of the object and the list of its Events."""
        path = f"/apis/{kind.group}/{kind.version}/namespaces/{namespace}/{kind.plural}/{name}"
        selector = f"involvedObject.kind={kind.kind},involvedObject.name={name}"

        def run() -> int:
            self.call(path, [])
            events = self.call(f"/api/v1/namespaces/{namespace}/events", [("fieldSelector", selector), ("limit", 200)])
            return 1 + len(events.get("items") or [])

        return run

    def for_page(self, url: str) -> Callable[[], int]:
        """The calls the console page at `url` rests on."""
        parts = urlsplit(url)
        q = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        namespace = q.get("ns") or None
        if parts.path == "/":
            return self.fleet(Filters.build(), objects=False)
        if parts.path == "/approvals":
            return self.fleet(Filters.build(kinds=["apr"], phases=["Pending"]), objects=True)
        if parts.path == "/list":
            kind = kind_named(q.get("kind", TASK_SAGA.plural))
            return self.list_page(kind, namespace, q.get("phase") or None, q.get("cont") or None)
        _, _, ns, plural, name = parts.path.split("/")
        return self.detail(kind_named(plural), ns, name)


def calls_of(fn: Callable[[], Any]) -> int:
    """How many API calls (pages included) one run of `fn` makes."""
    from kubernetes.client import ApiClient

    original = ApiClient.call_api
    lock = threading.Lock()
    calls = 0

    def counted(self: ApiClient, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        with lock:
            calls += 1
        return original(self, *args, **kwargs)

    ApiClient.call_api = counted
    try:
        fn()
    finally:
        ApiClient.call_api = original
    return calls


# ---- timing ------------------------------------------------------------------------------------------------


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def paired(runs: int, subject: Callable[[], Any], baseline: Callable[[], Any]) -> tuple[list[float], list[float], Any]:
    """Each run times `subject`, then `baseline` (so both see the same load), after one warm-up of each; the
    samples of both and `subject`'s last answer."""
    subject()
    baseline()
    mine: list[float] = []
    theirs: list[float] = []
    last = None
    for _ in range(runs):
        started = time.perf_counter()
        last = subject()
        mine.append(time.perf_counter() - started)
        started = time.perf_counter()
        baseline()
        theirs.append(time.perf_counter() - started)
    return mine, theirs, last


def row(what: str, mine: list[float], theirs: list[float], calls: int, rows: int, kb: float) -> Row:
    return Row(what, statistics.median(mine), p95(mine), statistics.median(theirs), p95(theirs), calls, rows, kb)


def page(port: int, path: str, runs: int, direct: Direct) -> Row:
    def fetch() -> bytes:
        status, body = get(port, path)
        assert status == 200, (path, status, body[:500])
        return body

    baseline = direct.for_page(path)
    mine, theirs, body = paired(runs, fetch, baseline)
    rows = body.count(b"<tr>") + body.count(b'<article class="card"')
    return row(path, mine, theirs, calls_of(baseline), rows, len(body) / 1024)


def cli(direct: Direct, runs: int) -> Row:
    """`steadfast list -A --needs-person` as alice in this process (no interpreter start), beside its own calls."""
    from steadfast.cli import main

    def run() -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = main([*CLI, "--kubeconfig", direct.kubeconfig, "--context", direct.context])
        assert code == 0, f"steadfast {' '.join(CLI)} exited {code}"
        return out.getvalue()

    baseline = direct.fleet(Filters.build(needs_person=True), objects=False)
    mine, theirs, text = paired(runs, run, baseline)
    shown = text.count("\n") - 1 if text else 0  # the table's header
    return row(f"CLI: steadfast {' '.join(CLI)}", mine, theirs, calls_of(baseline), shown, len(text) / 1024)


class Arrivals:
    """When each event of a stream arrived, read by a thread of its own until the stream closes."""

    def __init__(self, lines: Iterator[bytes], opens: Callable[[bytes], bool], counts: Callable[[bytes], bool]) -> None:
        self.times: list[float] = []
        self.opened = threading.Event()
        self._got = threading.Condition()
        self._lines, self._opens, self._counts = lines, opens, counts
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self._lines:
                if self._opens(line):
                    self.opened.set()
                elif self._counts(line):
                    with self._got:
                        self.times.append(time.perf_counter())
                        self._got.notify_all()
        except (OSError, ValueError, AttributeError, HTTPError):  # the stream closed at the end of the measurement
            return

    def first_after(self, before: int, what: str) -> float:
        """The time of event number `before` (counting from 0), waiting for it."""
        with self._got:
            assert self._got.wait_for(lambda: len(self.times) > before, timeout=30), f"no {what}"
            return self.times[before]


def is_modified(line: bytes) -> bool:
    """Whether a line of a watch is a MODIFIED event."""
    return bool(line.strip()) and json.loads(line).get("type") == "MODIFIED"


def live_latency(fleet: Fleet, port: int, runs: int, direct: Direct) -> Row:
    """Seconds from a status patch of one saga to the `change` event on its page's open stream, and to the
    MODIFIED event of a watch of that saga opened directly by the same user (both see each patch)."""
    namespace, name = SAGA
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", f"/live?kind=tasksagas&ns={namespace}&name={name}")
    stream = conn.getresponse()
    page = Arrivals(iter(stream), lambda b: b.startswith(b"event: open"), lambda b: b.startswith(b"event: change"))
    kind = TASK_SAGA
    path = f"/apis/{kind.group}/{kind.version}/namespaces/{namespace}/{kind.plural}"
    version = direct.call(f"{path}/{name}", [])["metadata"]["resourceVersion"]
    params = [("watch", "true"), ("fieldSelector", f"metadata.name={name}"), ("resourceVersion", version)]
    response = direct.call(path, [*params, ("timeoutSeconds", 600)], stream=True)
    watch = Arrivals(iter(response), lambda b: False, is_modified)
    assert page.opened.wait(60), "no open event"
    time.sleep(1.0)  # the console's watch starts right after `open`
    mine: list[float] = []
    theirs: list[float] = []
    try:
        for i in range(runs + 1):  # the first one a warm-up
            before_page, before_watch = len(page.times), len(watch.times)
            started = time.perf_counter()
            fleet.objects.patch_namespaced_custom_object_status(
                kind.group, kind.version, namespace, kind.plural, name,
                {"status": {"currentStep": f"step-{i % 4}"}},
            )  # fmt: skip
            changed = page.first_after(before_page, "change event")
            modified = watch.first_after(before_watch, "watch event")
            if i:
                mine.append(changed - started)
                theirs.append(modified - started)
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            response.shutdown() if hasattr(response, "shutdown") else response.close()
    return row("live: status patch -> change event", mine, theirs, 1, 1, 0.0)


def measure(fleet: Fleet, port: int, runs: int, direct: Direct) -> list[Row]:
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
        "/ns/{}/tasksagas/{}".format(*SAGA),
    ]
    rows = [page(port, p, runs, direct) for p in paths]
    rows.insert(1, cli(direct, runs))
    rows.append(live_latency(fleet, port, runs, direct))
    return rows


# ---- the report --------------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = [
        "| page | p50 (s) | p95 (s) | API p50 (s) | API p95 (s) | console / API (p50) | API calls | rows or cards "
        "| page (KiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        what = r.what if r.what.startswith(("live", "CLI")) else f"`{r.what[:90]}`"
        if r.what.startswith("CLI"):
            what = f"CLI: `{r.what.removeprefix('CLI: ')}`"
        lines.append(
            f"| {what} | {r.p50:.3f} | {r.p95:.3f} | {r.api50:.3f} | {r.api95:.3f} | {r.ratio:.1f} | {r.calls} "
            f"| {r.rows} | {r.kb:.0f} |"
        )
    return "\n".join(lines)


def plural(n: int, word: str) -> str:
    return f"one {word}" if n == 1 else f"{n} {word}s"


def summary(rows: list[Row]) -> str:
    """What the ratios say, from this run's numbers."""
    overview, command, inbox = rows[0], rows[1], rows[2]
    lists = [r for r in rows if r.what.startswith("/list")]
    detail, live = rows[-2], rows[-1]
    low, high = min(r.ratio for r in lists), max(r.ratio for r in lists)
    return (
        f"The overview takes {overview.p50:.2f} s, {overview.ratio:.1f} times the {overview.api50:.2f} s of its "
        f"{overview.calls} API calls; the inbox {inbox.ratio:.1f} times its {plural(inbox.calls, 'call')}; a list page "
        f"{low:.1f} to {high:.1f} times its one call of 50; the saga page {detail.ratio:.1f} times its GET and Events "
        f"list; a status change reaches the page's stream {live.ratio:.1f} times as late as a direct watch sees it "
        f"({live.p50 * 1000:.0f} ms against {live.api50 * 1000:.0f} ms). `steadfast list -A --needs-person` answers "
        f"the overview's question without the counts ({command.calls} field-selected calls, the needs-person "
        f"phases alone) in {command.p50:.2f} s, {command.ratio:.1f} times its calls."
    )


def report(
    args: argparse.Namespace, argv: list[str], rows: list[Row], seconds: float, pending: int, load: float
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "# Benchmark: the web console\n\n"
        f"Measured {when} by `python bench/console_bench.py {' '.join(argv)}` on {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; the local control plane (etcd, kube-apiserver), the console "
        f"(`steadfast console --context {USER}`, one process) and the client on this one machine, no operator. "
        f"{args.resources} resources in {args.namespaces} namespaces, created in {seconds:.0f} s "
        f"(as bench/fleet_bench.py: {pending} Pending ApprovalRequests, {USER} an approver of about half). "
        f"Load average (1 min) {load:.1f} when the measurements started. {args.runs} runs per page after a "
        "warm-up; a page's time is the whole HTTP answer (the API calls as alice, the HTML).\n\n"
        "The baseline, from the same run: after each run of a page, the benchmark's process makes the API calls "
        "that page rests on, directly, as alice (her kubeconfig context, a client made as the console makes its "
        "own), and reads the answers as JSON, nothing more: for the overview steadfast.fleet's listing (the Table "
        "format, paged, the kinds concurrently, the needs-a-person phases as whole objects), for the inbox its "
        "field-selected list, for a list page its one list call of 50 (with the same `continue` token or field "
        "selector), for the saga page the GET of the saga and the list of its Events. The live update's baseline "
        "is a watch of the same saga opened directly by alice: each status patch reaches both. *console / API* "
        "is the page's p50 over its calls' p50, the console's own share (HTTP to the console, reading the answers "
        "into records, the HTML); *API calls* counts one baseline run's calls, pages included. The CLI row is "
        "`steadfast list -A --needs-person` as alice in the benchmark's process (no interpreter start, but each "
        "run reads the kubeconfig and opens its connections, as a new command does; rows and KiB of its output), "
        "beside its own calls made on an open client.\n\n"
        f"{table(rows)}\n\n"
        f"{summary(rows)}\n\n"
        "The overview lists every resource alice may see (the fleet view's Table-format listing, paged, the "
        "kinds concurrently) and shows the first 200 that need a person; the inbox reads the Pending requests "
        "as objects (one field-selected call) and shows a card for each that names alice; a list page is one "
        "API call of 50 (`limit`/`continue`), filtered by the API server. The live row is the time from a "
        "status patch to the `change` event on the saga page's open stream (one watch, no polling).\n"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=10000, help="Steadfast resources to create")
    parser.add_argument("--namespaces", type=int, default=50, help="spread over this many namespaces")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per page")
    parser.add_argument("--write", type=Path, default=None, help="write the Markdown report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        fleet = Fleet(Path(tmp), users=(USER,))
        console = None
        try:
            reader_rbac(fleet, USER)
            print(f"creating {args.resources} resources in {args.namespaces} namespaces", file=sys.stderr)
            seconds, counts = fleet.populate(args.resources, args.namespaces)
            port = processes.free_port()
            argv_console = [sys.executable, "-m", "steadfast.cli", "console", "--listen", f"127.0.0.1:{port}"]
            argv_console += ["--kubeconfig", fleet.kubeconfig, "--context", USER]
            log = Path(tmp) / "console.log"
            env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
            console = processes.launch(argv_console, log, detach=False, env=env)
            processes.wait_until(
                lambda: processes.http_ok(f"http://127.0.0.1:{port}/healthz"),
                what="console", timeout=60, pid=console.pid, log=log,
            )  # fmt: skip
            load = os.getloadavg()[0]
            rows = measure(fleet, port, args.runs, Direct(fleet.kubeconfig, USER))
        finally:
            if console is not None:
                processes.stop(console.pid)
            fleet.stop()
    print(table(rows))
    print(summary(rows))
    if args.write:
        pending = counts.get("ApprovalRequest/Pending", 0)
        args.write.write_text(report(args, argv, rows, seconds, pending, load))
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
