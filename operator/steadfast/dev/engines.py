"""The two workflow engines the dev control plane, the tests and the benchmarks run on, behind one surface.

`local` is the project's own engine (Dapr's workflow gRPC API on SQLite, one Python process); `daprd` is
the real Dapr 1.18 sidecar with placement and scheduler, as in a cluster, on the SQLite actor state store.
`daprd-postgres` and `daprd-redis` are the same daprd on the chart's PostgreSQL or Redis state-store component,
with a server of that database started in the engine's folder (docs/engine.md, "State stores").
Where the engines differ, daprd is right.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Protocol, get_args

from steadfast.dev.statestores import StoreName

EngineName = Literal["local", "daprd", "daprd-postgres", "daprd-redis"]
NAMES: tuple[EngineName, ...] = get_args(EngineName)
# The actor state store of each daprd engine.
STORES: dict[EngineName, StoreName] = {"daprd": "sqlite", "daprd-postgres": "postgresql", "daprd-redis": "redis"}
ENV = "STEADFAST_ENGINES"


class Engine(Protocol):
    """What fixtures need of an engine: where it listens, and a crash, a stop and a start."""

    name: str
    host: str

    @property
    def port(self) -> int: ...
    @property
    def address(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def pids(self) -> dict[str, int]: ...
    @property
    def running(self) -> bool: ...
    def start(self) -> Engine: ...
    def stop(self, timeout: float = 10.0) -> object: ...
    def kill(self) -> None: ...
    def restart(self, *, hard: bool = False) -> Engine: ...
    def log_tail(self, lines: int = 40) -> str: ...
    def endpoints(self) -> list[tuple[int, str]]: ...


def parse(value: str) -> list[EngineName]:
    """`local,daprd` -> the names, refusing unknown ones (a typo must not silently skip a whole engine)."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        raise ValueError(f"engines must be a comma-separated list of {list(NAMES)}, got {value!r}")
    return [n for n in NAMES if n in names]


def selected(default: str = "local,daprd") -> list[EngineName]:
    """The engines a test run covers: `$STEADFAST_ENGINES`, else `default` (the local engine and daprd on SQLite)."""
    return parse(os.environ.get(ENV) or default)


def create(name: EngineName, directory: Path, *, detach: bool = False) -> Engine:
    """An engine whose state lives in `directory`, not yet started."""
    if name in STORES:
        from steadfast.dev.controlplane.daprd import DaprdEngine

        return DaprdEngine(directory, detach=detach, store=STORES[name])
    from steadfast_engine.process import EngineProcess

    return EngineProcess(directory / "engine.db", log_file=directory / "engine.log", synchronous="NORMAL")


def start(name: EngineName, directory: Path, *, detach: bool = False) -> Engine:
    return create(name, directory, detach=detach).start()
