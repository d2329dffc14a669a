"""Fixtures: a real engine subprocess on a free loopback port, the real SDK client and worker.

Every fixture stops what it started in its finalizer, also when the test fails.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dapr.ext.workflow as wf
import pytest
from beds import Bed
from engine_workflows import register

from steadfast.dev import engines
from steadfast_engine.process import EngineProcess, start_engine

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.engine

logging.getLogger("durabletask-worker").setLevel(logging.ERROR)
logging.getLogger("durabletask-client").setLevel(logging.ERROR)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[EngineProcess]:
    # the engine's own logic, also with no worker connected (fidelity with daprd: test_fidelity.py, beds)
    proc = start_engine(tmp_path / "engine.db", extra_args=["--worker-wait", "off"])
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def client(engine: EngineProcess) -> Iterator[wf.DaprWorkflowClient]:
    c = wf.DaprWorkflowClient(host=engine.host, port=str(engine.port))
    try:
        yield c
    finally:
        c.close()  # type: ignore[no-untyped-call]  # the SDK's close() has no hints


@pytest.fixture
def runtime(engine: EngineProcess) -> Iterator[wf.WorkflowRuntime]:
    rt = wf.WorkflowRuntime(host=engine.host, port=str(engine.port))
    register(rt)
    rt.start()  # type: ignore[no-untyped-call]  # the SDK's start() has no hints
    try:
        yield rt
    finally:
        rt.shutdown()  # type: ignore[no-untyped-call]  # the SDK's shutdown() has no hints


class WorkerProcess:
    """A worker in its own process, so that tests can SIGKILL it."""

    def __init__(self, address: str, log: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "operator"), env.get("PYTHONPATH", "")])
        self._log = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("worker_proc.py")), address],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if b"worker ready" not in line:
            self.kill()
            raise RuntimeError(f"worker did not start: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self._log.closed:
            self._log.close()


@pytest.fixture
def worker_process(engine: EngineProcess, tmp_path: Path) -> Iterator[Callable[[], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def make() -> WorkerProcess:
        w = WorkerProcess(engine.address, tmp_path / f"worker{len(started)}.log")
        started.append(w)
        return w

    try:
        yield make
    finally:
        for w in started:
            w.stop()


@pytest.fixture(scope="module")
def beds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Bed]]:
    """Every selected engine at once, each with its own worker (the same registered workflows) and client."""
    started: list[tuple[engines.Engine, wf.WorkflowRuntime, wf.DaprWorkflowClient]] = []
    try:
        for name in engines.selected():
            directory = tmp_path_factory.mktemp(f"bed-{name}")
            engine = engines.start(name, directory)
            rt = wf.WorkflowRuntime(host=engine.host, port=str(engine.port))
            started.append((engine, rt, wf.DaprWorkflowClient(host=engine.host, port=str(engine.port))))
            register(rt)
            rt.start()  # type: ignore[no-untyped-call]  # the SDK's start() has no hints
        yield [Bed(e.name, e, c, tmp_path_factory.mktemp(f"marks-{e.name}")) for e, _, c in started]
    finally:
        for engine, rt, c in reversed(started):
            c.close()  # type: ignore[no-untyped-call]  # the SDK's close() has no hints
            rt.shutdown()  # type: ignore[no-untyped-call]  # the SDK's shutdown() has no hints
            engine.stop()


@pytest.fixture(scope="module")
def bare_beds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Bed]]:
    """Every selected engine at once with a client but no worker: tests connect the workers they need."""
    started: list[tuple[engines.Engine, wf.DaprWorkflowClient]] = []
    try:
        for name in engines.selected():
            engine = engines.start(name, tmp_path_factory.mktemp(f"bare-{name}"))
            started.append((engine, wf.DaprWorkflowClient(host=engine.host, port=str(engine.port))))
        yield [Bed(e.name, e, c, tmp_path_factory.mktemp(f"bare-marks-{e.name}")) for e, c in started]
    finally:
        for engine, c in reversed(started):
            c.close()  # type: ignore[no-untyped-call]  # the SDK's close() has no hints
            engine.stop()
