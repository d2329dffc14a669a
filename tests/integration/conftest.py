"""End-to-end fixtures: a workflow engine, the sample task service and a running operator process.

Every test that needs the engine (directly or through the operator) runs once on each engine of
`$STEADFAST_ENGINES` (default: the local engine and daprd). All are real processes on free loopback ports,
killed with the test run.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import TASK_SERVICE_PORT, Operator, TaskService
from kubernetes import client, config

from steadfast.dev import engines
from steadfast.dev.controlplane import cluster, processes

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", params=engines.selected())
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[engines.Engine]:
    proc = engines.start(request.param, tmp_path_factory.mktemp(f"engine-{request.param}"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def task_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskService]:
    port = TASK_SERVICE_PORT  # the operator's egress allows it (e2e_support.EGRESS_ALLOW)
    log = tmp_path_factory.mktemp("task-service") / "task-service.log"
    proc = processes.launch(
        [sys.executable, str(REPO / "examples" / "task_service.py"), "--port", str(port)], log, detach=False
    )
    try:
        processes.wait_until(
            lambda: processes.tcp_open("127.0.0.1", port), what="task service", timeout=30, pid=proc.pid, log=log
        )
        yield TaskService(port)
    finally:
        processes.stop(proc.pid)


@pytest.fixture(scope="session")
def operator(
    control_plane: cluster.State, engine: engines.Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    op = Operator(control_plane, engine, tmp_path_factory.mktemp(f"operator-{engine.name}") / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="session")
def kube(control_plane: cluster.State) -> client.ApiClient:
    return config.new_client_from_config(config_file=control_plane.kubeconfig, context="admin")


@pytest.fixture
def namespace(kube: client.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)  # its resources go too, so finished tests leave no running workflows
