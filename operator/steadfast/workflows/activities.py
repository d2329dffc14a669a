"""The activities every kind shares: run an Action, report a status snapshot.

Activities hold all side effects (workflow code may not), and each is safe to run twice: actions carry
an Idempotency-Key, status snapshots carry a sequence number and Events a deterministic name.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from steadfast import metrics
from steadfast.actions import ActionRunner, WaitTicket
from steadfast.api.action import Action
from steadfast.records import EXECUTE, REPORT, ActionRequest, Outcome, StatusReport
from steadfast.status import StatusWriter
from steadfast.worker import registrable

log = logging.getLogger(__name__)

REPORT_TIMEOUT = 60.0


class Activities:
    def __init__(self, runner: ActionRunner, writer: StatusWriter) -> None:
        self.runner = runner
        self.writer = writer

    def _submit(self, report: StatusReport) -> Any:
        # A snapshot the workflow waits for (a final state) is never held back to coalesce.
        return self.writer.submit(report.ref, report.status, seq=report.seq, events=report.events, urgent=report.wait)

    def execute(self, _ctx: Any, inp: dict[str, Any]) -> dict[str, Any]:
        """Report the snapshot that says this attempt is running, then make the attempt."""
        request = ActionRequest.model_validate(inp)
        if request.report is not None:
            self._submit(request.report)  # not awaited: the next snapshot supersedes it anyway
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

    def report(self, _ctx: Any, inp: dict[str, Any]) -> None:
        """Write a snapshot; waits until it is on the resource when the workflow asks (final states)."""
        report = StatusReport.model_validate(inp)
        future = self._submit(report)
        if report.wait:
            future.result(timeout=REPORT_TIMEOUT)

    def register(self, runtime: Any) -> None:
        runtime.register_activity(registrable(self.execute), name=EXECUTE)
        runtime.register_activity(registrable(self.report), name=REPORT)
