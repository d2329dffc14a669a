"""The workflow worker, kept reachable: reconnect it when the engine no longer routes work to it.

daprd registers the workflow actor types while a worker's GetWorkItems stream is open and counts the
streams to know when to unregister them. Under operator crash loops that count can drift (daprd 1.18.3
decrements it twice when a stream ends during registration), and daprd then unregisters the actor types
of a worker that is still connected: every workflow call fails with "actor type ... not registered" and
nothing heals until the worker opens a new stream. So a watchdog probes the engine and reconnects.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc
from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime

from steadfast import metrics

log = logging.getLogger("steadfast.worker")

# Purging an instance that cannot exist (not a valid resource's instance ID) goes through the workflow actor on
# daprd, and neither engine logs it; the answer tells whether the actor types are there.
PROBE_INSTANCE = "steadfast-worker-probe"
_HEALTHY = "no such instance exists"
_UNROUTED = ("not registered", "did not find address for actor")


def registrable(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A new function object that calls `fn`, for each runtime `fn` is registered on.

    The SDK marks every function it registers, for the whole process, and refuses it on a second runtime:
    without this a reconnect (a new runtime) fails with "Activity execute already registered". A coroutine
    function stays one, so the SDK still runs it on its event loop rather than on its thread pool.
    """
    call: Callable[..., Any]
    if inspect.iscoroutinefunction(fn):

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await fn(*args, **kwargs)

    else:

        def call(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

    call.__name__ = getattr(fn, "__name__", "registered")
    call.__qualname__ = getattr(fn, "__qualname__", call.__name__)
    call.__doc__ = fn.__doc__
    call.__signature__ = inspect.signature(fn)  # type: ignore[union-attr]
    return call


def unreachable(details: str) -> bool:
    """True when an engine's answer says the workflow actors of this app are gone (not when it is just down)."""
    return _HEALTHY not in details and any(marker in details for marker in _UNROUTED)


class Worker:
    """A WorkflowRuntime built by `build`, started, and rebuilt when the engine stops routing work to it."""

    def __init__(
        self, build: Callable[[], WorkflowRuntime], client: DaprWorkflowClient, *, interval: float = 15.0
    ) -> None:
        self._build = build
        self._client = client
        self._interval = interval
        self._stop = threading.Event()
        self._runtime: WorkflowRuntime | None = None
        self._thread = threading.Thread(target=self._watch, name="worker-watchdog", daemon=True)

    def start(self) -> None:
        self._runtime = self._build()
        self._runtime.start()  # type: ignore[no-untyped-call]
        self._thread.start()

    def probe(self) -> bool:
        """False when the engine answers that this app's workflow actors are not registered."""
        try:
            self._client.purge_workflow(PROBE_INSTANCE, recursive=False)
        except grpc.RpcError as exc:
            return not unreachable(exc.details() or "")
        return True

    def reconnect(self) -> None:
        """A fresh runtime opens a new work-item stream, on which daprd registers the actor types again."""
        old, self._runtime = self._runtime, self._build()
        if old is not None:
            old.shutdown()  # type: ignore[no-untyped-call]
        self._runtime.start()  # type: ignore[no-untyped-call]
        metrics.WORKER_RECONNECTS.inc()

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self.probe():
                    log.warning("the workflow engine no longer routes work to this worker; reconnecting it")
                    self.reconnect()
            except Exception:  # the watchdog must outlive any one failed probe or reconnect
                log.exception("worker watchdog: probe or reconnect failed; trying again in %.0fs", self._interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval + 10)
        if self._runtime is not None:
            self._runtime.shutdown()  # type: ignore[no-untyped-call]
