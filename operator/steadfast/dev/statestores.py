"""The actor state store a test-bed daprd loads: SQLite in its folder, or the chart's PostgreSQL/Redis components.

For PostgreSQL and Redis the Component and Resiliency manifests are the ones `helm template charts/steadfast`
renders with the state-store values a platform team sets, pointed at a server started here (`databases`). In a
cluster the Dapr operator resolves a component's `secretKeyRef`s from Kubernetes Secrets and hands daprd the
values; we do that step ourselves, from the Secrets the test bed would create (name and key as the values say),
and refuse a reference to any other Secret. The manifests are otherwise written as rendered: a broken template
(wrong type, version, metadata name, scope) fails daprd's start-up or the first workflow.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

from steadfast.dev import databases
from steadfast.dev.controlplane import binaries

StoreName = Literal["sqlite", "postgresql", "redis"]
RELEASE = "steadfast"
CHART_ENV = "STEADFAST_CHART"

# The Secrets the chart's components reference, as the values name them (what `kubectl create secret` would hold).
POSTGRES_SECRET = ("steadfast-postgresql", "connectionString")
REDIS_SECRET = ("steadfast-redis", "password")

_SQLITE = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.sqlite
  version: v1
  metadata:
  - name: connectionString
    value: "{db}"
  - name: actorStateStore
    value: "true"
"""


class StateStore(Protocol):
    """What a daprd engine needs of its state store: its server's life, and the manifests to load."""

    name: StoreName

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def endpoints(self) -> list[tuple[int, str]]: ...
    def children(self) -> dict[str, subprocess.Popen[bytes]]: ...
    def write_resources(self, resources: Path, *, namespace: str, app_id: str) -> None: ...


def chart_dir() -> Path:
    """`$STEADFAST_CHART`, else charts/steadfast of the checkout this package runs from."""
    explicit = os.environ.get(CHART_ENV)
    chart = Path(explicit) if explicit else Path(__file__).resolve().parents[3] / "charts" / "steadfast"
    if not (chart / "Chart.yaml").is_file():
        raise FileNotFoundError(f"no Helm chart at {chart}: set ${CHART_ENV} to charts/steadfast of a checkout")
    return chart


def render(values: list[str], *, namespace: str) -> list[dict[str, Any]]:
    """The Dapr resources the chart renders with these `--set` values (templates/dapr-components.yaml)."""
    helm = binaries.ensure(binaries.HELM)["helm"]
    args = [str(helm), "template", RELEASE, str(chart_dir()), "-n", namespace]
    args += ["--show-only", "templates/dapr-components.yaml"]
    for value in values:
        args += ["--set", value]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"helm template failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def resolve_secrets(resource: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, Any]:
    """Inline each `secretKeyRef` from `secrets` ((name, key) -> value), as the Dapr operator does in a cluster."""
    for item in resource.get("spec", {}).get("metadata", []) or []:
        ref = item.get("secretKeyRef")
        if not ref:
            continue
        found = secrets.get((ref.get("name", ""), ref.get("key", "")))
        if found is None:
            name = resource["metadata"]["name"]
            raise ValueError(f"component {name} references Secret {ref} that the chart's values do not name")
        item.pop("secretKeyRef")
        item["value"] = found
    return resource


def write(resources: Path, docs: list[dict[str, Any]]) -> None:
    """One file per resource, replacing what a previous start wrote."""
    resources.mkdir(parents=True, exist_ok=True)
    for old in resources.glob("*.yaml"):
        old.unlink()
    for doc in docs:
        path = resources / f"{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        path.chmod(0o600)  # it holds the database password


class Sqlite:
    """The test bed's historical store: `state.sqlite` in the engine's folder (not a chart option)."""

    name: StoreName = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.db = Path(directory) / "state.db"

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def endpoints(self) -> list[tuple[int, str]]:
        return []

    def children(self) -> dict[str, subprocess.Popen[bytes]]:
        return {}

    def write_resources(self, resources: Path, *, namespace: str, app_id: str) -> None:
        resources.mkdir(parents=True, exist_ok=True)
        (resources / "statestore.yaml").write_text(_SQLITE.format(db=self.db))


class _ChartServerStore:
    """A chart-rendered state-store component on a database server this store starts and stops."""

    name: StoreName
    server: databases.Postgres | databases.Redis

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def endpoints(self) -> list[tuple[int, str]]:
        return [(self.server.port, f"the Dapr engine's {self.name} state store")]

    def children(self) -> dict[str, subprocess.Popen[bytes]]:
        return self.server.children()

    def values(self, secret: tuple[str, str]) -> list[str]:
        """The chart values that select this store (besides those every store sets)."""
        raise NotImplementedError

    def secret(self) -> tuple[tuple[str, str], str]:
        """The Secret (name, key) the chart's component refers to, and the value the test bed fills in."""
        raise NotImplementedError

    def write_resources(self, resources: Path, *, namespace: str, app_id: str) -> None:
        ref, value = self.secret()
        values = [
            "dapr.components.stateStore.enabled=true",
            f"dapr.components.stateStore.type={self.name}",
            *self.values(ref),
            "dapr.components.resiliency.enabled=true",
            f"dapr.appId={app_id}",
        ]
        docs = render(values, namespace=namespace)
        write(resources, [resolve_secrets(d, {ref: value}) for d in docs])


class ChartPostgres(_ChartServerStore):
    """The chart's `state.postgresql` v2 component on a local PostgreSQL server."""

    name: StoreName = "postgresql"
    server: databases.Postgres

    def __init__(self, directory: Path, *, detach: bool = False) -> None:
        self.server = databases.Postgres(Path(directory) / "postgres", detach=detach)

    def secret(self) -> tuple[tuple[str, str], str]:
        return POSTGRES_SECRET, self.server.connection_string

    def values(self, secret: tuple[str, str]) -> list[str]:
        name, key = secret
        return [
            f"dapr.components.stateStore.postgresql.connectionStringSecret.name={name}",
            f"dapr.components.stateStore.postgresql.connectionStringSecret.key={key}",
        ]


class ChartRedis(_ChartServerStore):
    """The chart's `state.redis` component on a local Redis server with a password."""

    name: StoreName = "redis"
    server: databases.Redis

    def __init__(self, directory: Path, *, detach: bool = False) -> None:
        self.server = databases.Redis(Path(directory) / "redis", detach=detach)

    def secret(self) -> tuple[tuple[str, str], str]:
        return REDIS_SECRET, self.server.password

    def values(self, secret: tuple[str, str]) -> list[str]:
        name, key = secret
        return [
            f"dapr.components.stateStore.redis.host={self.server.address}",
            f"dapr.components.stateStore.redis.passwordSecret.name={name}",
            f"dapr.components.stateStore.redis.passwordSecret.key={key}",
        ]


def create(name: StoreName, directory: Path, *, detach: bool = False) -> StateStore:
    if name == "postgresql":
        return ChartPostgres(directory, detach=detach)
    if name == "redis":
        return ChartRedis(directory, detach=detach)
    return Sqlite(directory)
