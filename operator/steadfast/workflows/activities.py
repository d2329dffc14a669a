"""The activities every kind shares: run an Action, report a status snapshot.

Activities hold all side effects (workflow code may not), and each is safe to run twice: actions carry
an Idempotency-Key, status snapshots carry a sequence number and Events a deterministic name.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from steadfast import metrics
from steadfast.actions import ActionRunner
from steadfast.api.action import Action
from steadfast.kube import ObjectRef
from steadfast.records import EXECUTE, REPORT, EventSpec, Outcome
from steadfast.status import StatusWriter
from steadfast.worker import registrable

log = logging.getLogger(__name__)

REPORT_TIMEOUT = 60.0


class Activities:
    def __init__(self, runner: ActionRunner, writer: StatusWriter) -> None:
        self.runner = runner
        self.writer = writer

    def _submit(self, inp: dict[str, Any]) -> Any:
        ref = ObjectRef.from_dict(inp["ref"])
        events = [EventSpec.from_dict(e) for e in inp.get("events") or []]
        # A snapshot the workflow waits for (a final state) is never held back to coalesce.
        return self.writer.submit(ref, inp["status"], seq=int(inp["seq"]), events=events, urgent=bool(inp.get("wait")))

    def execute(self, _ctx: Any, inp: dict[str, Any]) -> dict[str, Any]:
        """Report the snapshot that says this attempt is running, then make the attempt."""
        if inp.get("status") is not None:
            self._submit(inp)  # not awaited: the next snapshot supersedes it anyway
        ref = ObjectRef.from_dict(inp["ref"])
        try:
            action = Action.model_validate(inp["action"])
        except ValueError as exc:
            return Outcome(False, message=f"invalid action: {exc}").to_dict()
        started = time.perf_counter()
        outcome = self.runner.run(action, namespace=ref.namespace, key=str(inp["key"]), timeout=inp.get("timeout"))
        category = str(inp.get("category") or "action")
        metrics.ACTION_SECONDS.labels(ref.kind, category, "ok" if outcome.ok else "failed").observe(
            time.perf_counter() - started
        )
        if category == "alert" and outcome.ok:
            metrics.ALERTS.inc()
        log.debug("%s/%s %s: %s", ref.namespace, ref.name, inp.get("what"), outcome.message)
        return outcome.to_dict()

    def report(self, _ctx: Any, inp: dict[str, Any]) -> None:
        """Write a snapshot; waits until it is on the resource when the workflow asks (final states)."""
        future = self._submit(inp)
        if inp.get("wait"):
            future.result(timeout=REPORT_TIMEOUT)

    def register(self, runtime: Any) -> None:
        runtime.register_activity(registrable(self.execute), name=EXECUTE)
        runtime.register_activity(registrable(self.report), name=REPORT)
