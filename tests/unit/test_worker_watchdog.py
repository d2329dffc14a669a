"""The worker watchdog's own rules, with a fake engine client (the engine tests run it on real engines)."""

from __future__ import annotations

import threading
from typing import Any

import grpc

from steadfast.worker import Worker


class _Refused(grpc.RpcError):  # type: ignore[misc]  # grpc has no type hints: RpcError is Any
    def __init__(self, details: str) -> None:
        self._details = details

    def details(self) -> str:
        return self._details


class _Runtime:
    def __init__(self, fail_start: bool) -> None:
        self.fail_start = fail_start
        self.stopped = False

    def start(self) -> None:
        if self.fail_start:
            raise RuntimeError("engine refused the stream")

    def shutdown(self) -> None:
        self.stopped = True


class _Client:
    """Answers every probe as daprd does once it forgot this app's actor types, until told otherwise."""

    def __init__(self) -> None:
        self.forgotten = True
        self.probes = 0
        self.seen_twice = threading.Event()

    def purge_workflow(self, instance_id: str, recursive: bool = True) -> Any:
        self.probes += 1
        if self.probes >= 3:
            self.seen_twice.set()
        if self.forgotten:
            raise _Refused("failed to create actor: actor type dapr.internal.default.steadfast.workflow not registered")
        raise _Refused("failed to purge workflow state: failed to fetch workflow state: no such instance exists")


def test_a_failed_reconnect_does_not_end_the_watchdog() -> None:
    client = _Client()
    built: list[_Runtime] = []

    def build() -> Any:
        runtime = _Runtime(fail_start=len(built) == 1)  # the first reconnect fails to start
        built.append(runtime)
        return runtime

    worker = Worker(build, client, interval=0.01)  # type: ignore[arg-type]
    worker.start()
    try:
        assert client.seen_twice.wait(10), "the watchdog stopped probing after a failed reconnect"
        assert len(built) >= 3  # the original, the failed reconnect, and another try
    finally:
        client.forgotten = False
        worker.stop()
    assert built[0].stopped


def test_healthy_and_down_engines_are_left_alone() -> None:
    client = _Client()
    client.forgotten = False
    worker = Worker(lambda: _Runtime(fail_start=False), client)  # type: ignore[arg-type, return-value]
    assert worker.probe()
    client.purge_workflow = lambda *a, **k: (_ for _ in ()).throw(_Refused("failed to connect to all addresses"))  # type: ignore[method-assign]
    assert worker.probe()  # down, not forgotten: the SDK reconnects by itself


def test_the_operators_runtime_can_be_built_again_for_a_reconnect() -> None:
    """The SDK refuses a function registered before; a reconnect registers everything on a new runtime."""
    from steadfast.actions import ActionRunner
    from steadfast.egress import EgressPolicy
    from steadfast.runner import runtime_factory
    from steadfast.workflows.activities import Activities

    build = runtime_factory(Activities(ActionRunner(None, EgressPolicy.parse(allow=[], deny=[])), None))  # type: ignore[arg-type]
    first, second = build(), build()
    assert first is not second
