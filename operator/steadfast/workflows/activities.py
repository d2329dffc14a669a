"""The activities every kind shares: run an Action, report a status snapshot.

Activities hold all side effects (workflow code may not), and each is safe to run twice: actions carry
an Idempotency-Key, status snapshots carry a sequence number and Events a deterministic name.

Both are coroutines, so the SDK runs them on its event loop and none of them occupies the worker's thread
pool, which also runs the workflows' code. An action waits for its namespace's share of the action threads
(`shares.Shares`: a per-namespace limit, places kept for namespaces with nothing in flight) without holding a
thread; only then does its blocking work (HTTP, the API server, the sandbox) run on one of those threads. So
a namespace whose actions call a slow endpoint holds at most its own share, never the threads that other
namespaces' actions or any workflow need.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from steadfast import metrics
from steadfast.actions import ActionRunner, WaitTicket
from steadfast.api.action import Action
from steadfast.records import EXECUTE, REPORT, ActionRequest, Outcome, StatusReport
from steadfast.shares import Observe, Shares, on_behalf_of
from steadfast.status import StatusWriter
from steadfast.worker import registrable

log = logging.getLogger(__name__)

REPORT_TIMEOUT = 60.0
ACTION_THREADS = 64  # actions running at once, all namespaces together (they mostly wait on sockets)
ACTIONS_PER_NAMESPACE = 8  # of which one namespace may hold at most this many


def action_shares(
    threads: int = ACTION_THREADS,
    per_namespace: int | Callable[[str], int] = ACTIONS_PER_NAMESPACE,
    observe: Observe | None = None,
) -> Shares:
    """The action threads' shares: `per_namespace` (a number or namespace -> number) each, and an eighth of
    the threads (at least one) kept for namespaces with nothing in flight."""
    return Shares("actions", threads, per_namespace, reserve=max(1, threads // 8), observe=observe)


class Activities:
    def __init__(self, runner: ActionRunner, writer: StatusWriter, shares: Shares | None = None) -> None:
        self.runner = runner
        self.writer = writer
        self.shares = shares or action_shares()
        # Created lazily up to the capacity; the shares admit no more actions than there are threads.
        self.threads = ThreadPoolExecutor(self.shares.capacity, thread_name_prefix="action")

    def _submit(self, report: StatusReport) -> Any:
        # A snapshot the workflow waits for (a final state) is never held back to coalesce.
        return self.writer.submit(
            report.ref, report.status, seq=report.seq, run=report.run, events=report.events, urgent=report.wait
        )

    async def execute(self, _ctx: Any, inp: dict[str, Any]) -> dict[str, Any]:
        """Report the snapshot that says this attempt is running, then make the attempt in the namespace's share."""
        request = ActionRequest.model_validate(inp)
        if request.report is not None:
            self._submit(request.report)  # not awaited: the next snapshot supersedes it anyway
        async with self.shares.ahold(request.ref.namespace):
            return await asyncio.get_running_loop().run_in_executor(self.threads, self.attempt, request)

    def attempt(self, request: ActionRequest) -> dict[str, Any]:
        """One attempt of the action, on an action thread (blocking); its expressions are charged to its namespace."""
        with on_behalf_of(request.ref.namespace):
            return self._attempt(request)

    def _attempt(self, request: ActionRequest) -> dict[str, Any]:
        ref = request.ref
        try:
            action = Action.model_validate(request.action)
        except ValueError as exc:
            return Outcome(False, message=f"invalid action: {exc}").to_dict()
        started = time.perf_counter()
        outcome = self.runner.run(
            action,
            namespace=ref.namespace,
            key=request.key,
            timeout=request.timeout,
            variables=request.variables,
            outputs=request.outputs,
            conditions=request.conditions,
            actor=request.actor,
            wait=WaitTicket(request.instance_id, request.wait_event, request.timeout or 0.0)
            if request.wait_event
            else None,
            undo=request.undo,
            rearm=request.rearm,
        )
        metrics.ACTION_SECONDS.labels(ref.kind, request.category, "ok" if outcome.ok else "failed").observe(
            time.perf_counter() - started
        )
        if request.category == "alert" and outcome.ok:
            metrics.ALERTS.inc()
        log.debug("%s/%s %s: %s", ref.namespace, ref.name, request.what, outcome.message)
        return outcome.to_dict()

    async def report(self, _ctx: Any, inp: dict[str, Any]) -> None:
        """Write a snapshot; waits until it is on the resource when the workflow asks (final states)."""
        report = StatusReport.model_validate(inp)
        future = self._submit(report)
        if report.wait:
            await asyncio.wait_for(asyncio.wrap_future(future), REPORT_TIMEOUT)

    def close(self) -> None:
        self.threads.shutdown(wait=False, cancel_futures=True)

    def register(self, runtime: Any) -> None:
        runtime.register_activity(registrable(self.execute), name=EXECUTE)
        runtime.register_activity(registrable(self.report), name=REPORT)
