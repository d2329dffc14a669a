"""The state store's database restarted under running sagas: nothing lost, each effect once, recovery timed.

Runs on the engines with a database server of their own (`daprd-postgres`, `daprd-redis`; `make statestores`) and
is skipped on the others. CI runs a handful of sagas; `STEADFAST_STATESTORE_SAGAS=100` runs more. Each run prints
and appends to `$STEADFAST_STATESTORE_RESULTS` (if set) how long the work stalled after the database came back: until
the first effect, the last effect, and every saga's status final.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from e2e_support import Operator, Resources, TaskService, eventually
from kubernetes import client
from test_resilience import assert_effects_once, final_sagas, saga

from steadfast.dev import databases, statestores
from steadfast.dev.controlplane.daprd import DaprdEngine
from steadfast.dev.engines import Engine

pytestmark = [pytest.mark.controlplane, pytest.mark.chaos, pytest.mark.statestores]

SAGAS = int(os.environ.get("STEADFAST_STATESTORE_SAGAS", "6"))
DOWN_FOR = float(os.environ.get("STEADFAST_STATESTORE_DOWN_SECONDS", "2"))


def database(engine: Engine) -> databases.Postgres | databases.Redis:
    if isinstance(engine, DaprdEngine) and isinstance(engine.store, statestores.ChartPostgres | statestores.ChartRedis):
        return engine.store.server
    pytest.skip("this engine's state store has no database server of its own")


def test_database_restart_mid_run(
    operator: Operator, engine: Engine, task_service: TaskService, kube: client.ApiClient, namespace: str
) -> None:
    server = database(engine)
    task_service.reset()
    task_service.fault("POST /notices", fail=0, delay=0.5)  # keep sagas in flight across the restart
    sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
    names = [f"d{i:03d}" for i in range(SAGAS)]
    for name in names:
        sagas.create(name, saga(task_service, f"{namespace}-{name}"))
    eventually(lambda: len(task_service.stats()["applied"]) >= len(names), what="sagas under way")

    server.stop()
    time.sleep(DOWN_FOR)
    before = len(task_service.stats()["applied"])
    server.start()
    back, back_wall = time.monotonic(), time.time()
    eventually(lambda: len(task_service.stats()["applied"]) > before, what="an effect after the restart", timeout=180)
    first_effect = time.monotonic() - back
    done = final_sagas(sagas, names, timeout=180 + SAGAS)
    all_final = time.monotonic() - back
    last_effect = max(a["at"] for a in task_service.stats()["applied"]) - back_wall

    assert {d["status"]["phase"] for d in done.values()} == {"Succeeded"}
    assert_effects_once(task_service, names)
    assert engine.running, f"daprd exited while its database was down:\n{engine.log_tail()}"
    result = {
        "store": server.kind,
        "sagas": SAGAS,
        "down_seconds": DOWN_FOR,
        "first_effect_after_restart_seconds": round(first_effect, 2),
        "last_effect_after_restart_seconds": round(last_effect, 2),
        "all_final_after_restart_seconds": round(all_final, 2),
        "applied_before_restart": before,
    }
    print(f"\n[statestores] {json.dumps(result)}")
    out = os.environ.get("STEADFAST_STATESTORE_RESULTS")
    if out:
        with Path(out).open("a") as handle:
            handle.write(json.dumps(result) + "\n")
