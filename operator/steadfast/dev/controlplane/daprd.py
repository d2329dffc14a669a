"""Real daprd (with placement and scheduler) on loopback, as one engine: what a cluster's sidecar runs.

The three processes are pinned Dapr builds (see `binaries`). Their state lives in one folder: the actor
state store is `state.sqlite` in `state.db` (or the chart's PostgreSQL or Redis component on a server started in
that folder, see `statestores`), timers and reminders in the scheduler's embedded etcd, so a restarted unit
continues where it stopped, like the local engine on its SQLite file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import secrets
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from steadfast.dev import statestores
from steadfast.dev.controlplane import binaries, processes

APP_ID = "steadfast"
NAMESPACE = "default"


@dataclass
class _Ports:
    """Every port the three processes open, all picked free on loopback once, so restarts keep them."""

    grpc: int = field(default_factory=processes.free_port)
    http: int = field(default_factory=processes.free_port)
    internal_grpc: int = field(default_factory=processes.free_port)
    public: int = field(default_factory=processes.free_port)
    metrics: int = field(default_factory=processes.free_port)
    placement: int = field(default_factory=processes.free_port)
    placement_raft: int = field(default_factory=processes.free_port)
    placement_healthz: int = field(default_factory=processes.free_port)
    placement_metrics: int = field(default_factory=processes.free_port)
    scheduler: int = field(default_factory=processes.free_port)
    scheduler_healthz: int = field(default_factory=processes.free_port)
    scheduler_metrics: int = field(default_factory=processes.free_port)
    etcd_client: int = field(default_factory=processes.free_port)
    etcd_peer: int = field(default_factory=processes.free_port)


# The ports of the cluster services (placement, scheduler and its etcd) that every sidecar of one app shares.
_SHARED = (
    "placement",
    "placement_raft",
    "placement_healthz",
    "placement_metrics",
    "scheduler",
    "scheduler_healthz",
    "scheduler_metrics",
    "etcd_client",
    "etcd_peer",
)


def api_token() -> str:
    """The Dapr API token of the daprd engines this process tree starts: `$DAPR_API_TOKEN`, else a new random one.

    daprd then answers its HTTP and gRPC APIs only to requests that carry it (`dapr-api-token`), so a process on
    this host that does not know it (an HTTP action of a saga) gets nothing. A new token is exported to this
    process's environment and the SDK's settings, so the clients and child processes it starts send it.
    """
    token = os.environ.get("DAPR_API_TOKEN")
    if not token:
        from dapr.conf import settings

        token = secrets.token_urlsafe(32)
        os.environ["DAPR_API_TOKEN"] = token
        settings.DAPR_API_TOKEN = token  # type: ignore[attr-defined]  # set from the env at import
    return token


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback URL we built)
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError):
        return False


class DaprdEngine:
    """daprd + placement + scheduler, started and stopped as one unit.

    The same surface as the local engine's `EngineProcess` (address, start, stop, kill, restart,
    log_tail), so fixtures and benchmarks take either. `kill()` SIGKILLs daprd only, as when a sidecar
    crashes: placement, scheduler and the state store's server are cluster services and keep running; `stop()`
    stops them all.
    """

    name = "daprd"

    def __init__(
        self,
        directory: Path,
        *,
        host: str = "127.0.0.1",
        detach: bool = False,
        start_timeout: float = 60.0,
        log_level: str | None = None,
        store: statestores.StoreName = "sqlite",
        cluster: DaprdEngine | None = None,
    ) -> None:
        self.directory = Path(directory)
        # A sidecar (`cluster` given) uses that unit's placement, scheduler and state store and starts none of them.
        self.cluster = cluster
        self.store: statestores.StateStore = (
            cluster.store if cluster else statestores.create(store, self.directory, detach=detach)
        )
        self.host = host
        self.detach = detach
        self.start_timeout = start_timeout
        # `$STEADFAST_DAPRD_LOG_LEVEL` (debug, info) to see what daprd does in a failing test; warn by default.
        self.log_level = log_level or os.environ.get("STEADFAST_DAPRD_LOG_LEVEL") or "warn"
        self.ports: _Ports = _Ports(**{f: getattr(cluster.ports, f) for f in _SHARED}) if cluster else _Ports()
        self.token = api_token()
        self.log_file = self.directory / "daprd.log"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def sidecar(self, directory: Path) -> DaprdEngine:
        """Another daprd of this app (own ports, own folder) on this unit's placement, scheduler and store."""
        if self.cluster is not None:
            return self.cluster.sidecar(directory)
        return DaprdEngine(
            directory, host=self.host, detach=self.detach, start_timeout=self.start_timeout, cluster=self
        )

    @property
    def port(self) -> int:
        return self.ports.grpc

    @property
    def address(self) -> str:
        """`host:port` of daprd's gRPC API, as `DAPR_GRPC_ENDPOINT` takes it."""
        return f"{self.host}:{self.ports.grpc}"

    def endpoints(self) -> list[tuple[int, str]]:
        """Every port the unit listens on, with what it is: published so that the operator refuses them all."""
        ports = self.ports
        return [
            (getattr(ports, f.name), f"the Dapr engine's {f.name.replace('_', ' ')} port")
            for f in dataclasses.fields(ports)
        ] + self.store.endpoints()

    @property
    def pid(self) -> int:
        proc = self._procs.get("daprd")
        if proc is None or proc.poll() is not None:
            raise RuntimeError("daprd is not running")
        return proc.pid

    @property
    def pids(self) -> dict[str, int]:
        """Every running process of the unit, for CPU and memory accounting."""
        return {name: p.pid for name, p in self._procs.items() if p.poll() is None}

    @property
    def children(self) -> dict[str, subprocess.Popen[bytes]]:
        """The running processes by name (the dev control plane records and stops them with its own)."""
        mine = {name: p for name, p in self._procs.items() if p.poll() is None}
        return mine if self.cluster else mine | self.store.children()

    @property
    def running(self) -> bool:
        proc = self._procs.get("daprd")
        return proc is not None and proc.poll() is None

    def _alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def _launch(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        env = {**os.environ, "NAMESPACE": NAMESPACE, "DAPR_HOST_IP": self.host, "DAPR_API_TOKEN": self.token}
        proc = processes.launch(args, self.directory / f"{name}.log", detach=self.detach, env=env)
        self._procs[name] = proc
        return proc

    def _wait(self, name: str, url: str) -> None:
        processes.wait_until(
            lambda: _healthy(url),
            what=name,
            timeout=self.start_timeout,
            pid=self._procs[name].pid,
            log=self.directory / f"{name}.log",
        )

    def _start_services(self) -> None:
        """The state store's server, placement and scheduler: what the sidecars of this unit share."""
        paths = binaries.ensure(*binaries.DAPR)
        p, h = self.ports, self.host
        self.store.start()
        if not self._alive("placement"):
            self._launch(
                "placement",
                [
                    str(paths["placement"]),
                    "--mode",
                    "standalone",
                    "--id",
                    "dapr-placement-0",
                    "--initial-cluster",
                    f"dapr-placement-0={h}:{p.placement_raft}",
                    "--port",
                    str(p.placement),
                    "--listen-address",
                    h,
                    "--healthz-port",
                    str(p.placement_healthz),
                    "--healthz-listen-address",
                    h,
                    "--metrics-port",
                    str(p.placement_metrics),
                    "--metrics-listen-address",
                    h,
                    "--log-level",
                    self.log_level,
                ],
            )
        if not self._alive("scheduler"):
            self._launch(
                "scheduler",
                [
                    str(paths["scheduler"]),
                    "--mode",
                    "standalone",
                    "--id",
                    "dapr-scheduler-server-0",
                    "--port",
                    str(p.scheduler),
                    "--listen-address",
                    h,
                    "--override-broadcast-host-port",
                    f"{h}:{p.scheduler}",
                    "--healthz-port",
                    str(p.scheduler_healthz),
                    "--healthz-listen-address",
                    h,
                    "--metrics-port",
                    str(p.scheduler_metrics),
                    "--metrics-listen-address",
                    h,
                    "--etcd-data-dir",
                    str(self.directory / "scheduler-etcd"),
                    "--etcd-client-port",
                    str(p.etcd_client),
                    "--etcd-client-listen-address",
                    h,
                    "--etcd-initial-cluster",
                    f"dapr-scheduler-server-0=http://{h}:{p.etcd_peer}",
                    "--identity-directory-write",
                    str(self.directory / "identity"),
                    "--log-level",
                    self.log_level,
                ],
            )

    def _wait_services(self) -> None:
        """Until the owner's placement and scheduler answer (a sidecar waits on its unit's)."""
        owner = self.cluster or self
        for name, port in (("placement", self.ports.placement_healthz), ("scheduler", self.ports.scheduler_healthz)):
            url = f"http://{self.host}:{port}/healthz"
            proc = owner._procs.get(name)
            processes.wait_until(
                functools.partial(_healthy, url),
                what=name,
                timeout=self.start_timeout,
                pid=proc.pid if proc else None,
                log=owner.directory / f"{name}.log",
            )

    def start(self) -> DaprdEngine:
        """Start what is not running (placement, scheduler, then daprd) and wait until daprd is healthy."""
        paths = binaries.ensure(*binaries.DAPR)
        self.directory.mkdir(parents=True, exist_ok=True)
        resources = self.directory / "resources"
        p, h = self.ports, self.host
        try:
            if self.cluster is None:
                self._start_services()
            self.store.write_resources(resources, namespace=NAMESPACE, app_id=APP_ID)
            self._wait_services()
            if not self._alive("daprd"):
                self._launch(
                    "daprd",
                    [
                        str(paths["daprd"]),
                        "--mode",
                        "standalone",
                        "--app-id",
                        APP_ID,
                        "--dapr-grpc-port",
                        str(p.grpc),
                        "--dapr-http-port",
                        str(p.http),
                        "--dapr-internal-grpc-port",
                        str(p.internal_grpc),
                        "--dapr-public-port",
                        str(p.public),
                        "--dapr-listen-addresses",
                        h,
                        "--dapr-public-listen-address",
                        h,
                        "--dapr-internal-grpc-listen-address",
                        h,
                        "--metrics-port",
                        str(p.metrics),
                        "--metrics-listen-address",
                        h,
                        "--placement-host-address",
                        f"{h}:{p.placement}",
                        "--scheduler-host-address",
                        f"{h}:{p.scheduler}",
                        "--resources-path",
                        str(resources),
                        "--log-level",
                        self.log_level,
                    ],
                )
            self._wait("daprd", f"http://{h}:{p.http}/v1.0/healthz")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM daprd, then scheduler and placement (SIGKILL after `timeout` each), then the state store.

        A sidecar stops its daprd only; stopping the unit that made it does not stop its sidecars.
        """
        for name in ("daprd", "scheduler", "placement"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                processes.stop(proc.pid, timeout)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(1)
        if self.cluster is None:  # a sidecar leaves its unit's store running
            self.store.stop()

    def kill(self) -> None:
        """SIGKILL daprd: no chance to flush anything (the chaos tests' crash of the sidecar)."""
        proc = self._procs.pop("daprd", None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def restart(self, *, hard: bool = False) -> DaprdEngine:
        if hard:
            self.kill()
        else:
            proc = self._procs.pop("daprd", None)
            if proc is not None:
                processes.stop(proc.pid)
                proc.wait()
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        return processes.tail(self.log_file, lines)

    def __enter__(self) -> DaprdEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
