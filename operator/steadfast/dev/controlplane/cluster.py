"""A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) plus the workflow engine.

The same class backs `steadfast dev up/down/status` (detached processes recorded in a state file) and the
test fixture (attached processes that die with the test run).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from steadfast import certs
from steadfast.dev.controlplane import binaries, identities, processes
from steadfast.dev.controlplane.daprd import DaprdEngine
from steadfast.dev.engines import STORES, EngineName
from steadfast.endpoints import Endpoint

STATE_FILE = "state.json"
DEFAULT_DIR = Path(".steadfast/dev")
REPO_ROOT = Path(__file__).resolve().parents[4]


@dataclass
class State:
    """What `dev up` started: enough for `status`, `down` and other processes to find it."""

    directory: str
    apiserver: str
    etcd: str
    kubeconfig: str
    engine: str | None = None
    api_token: str | None = None  # daprd's (DAPR_API_TOKEN); the local engine has none
    pids: dict[str, int] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    users: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = 0.0

    def env(self) -> dict[str, str]:
        """The environment a shell, operator or test needs to reach this control plane."""
        out = {"KUBECONFIG": self.kubeconfig}
        if self.engine:
            out["DAPR_GRPC_ENDPOINT"] = self.engine
        if self.api_token:
            out["DAPR_API_TOKEN"] = self.api_token
        return out

    def exports(self) -> str:
        return "".join(f"export {k}={v}\n" for k, v in self.env().items())

    def kubeconfig_for(self, user: str) -> str:
        """A kubeconfig path whose current context is `user` (written next to the shared one)."""
        path = Path(self.directory) / f"kubeconfig-{user}"
        if not path.exists():
            doc = json.loads(json.dumps(_load_yaml(Path(self.kubeconfig))))
            if user not in {c["name"] for c in doc["contexts"]}:
                raise KeyError(f"no identity {user!r}; known: {[c['name'] for c in doc['contexts']]}")
            doc["current-context"] = user
            import yaml

            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            path.chmod(0o600)
        return str(path)


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _engine_available() -> bool:
    try:
        return importlib.util.find_spec("steadfast_engine.__main__") is not None
    except ModuleNotFoundError:
        return False


def _grpc_ready(address: str) -> bool:
    import grpc

    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=0.5)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


class ControlPlane:
    def __init__(
        self,
        directory: Path = DEFAULT_DIR,
        *,
        users: list[identities.Identity] | None = None,
        engine: bool | EngineName = True,
        detach: bool = False,
        crds: Path | None = None,
        log: Any = None,
    ) -> None:
        """`engine`: which workflow engine to start beside the control plane (True = the local one)."""
        self.directory = directory.resolve()
        self.users = users or []
        self.engine = engine
        self.detach = detach
        self.crds = crds
        self.state: State | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._published: list[Endpoint] = []  # what the kubeconfig tells an operator never to call
        self._commands: dict[str, list[str]] = {}
        self._log = log or (lambda msg: print(f"[steadfast dev] {msg}", file=sys.stderr, flush=True))

    # -- lifecycle -------------------------------------------------------------------------------
    def up(self, timeout: float = 60.0) -> State:
        existing = read_state(self.directory)
        if existing and any(processes.alive(p) for p in existing.pids.values()):
            raise processes.StartError(
                f"a control plane already runs from {self.directory} (`steadfast dev down` first, or use another --dir)"
            )
        paths = binaries.ensure()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        logs = self.directory / "logs"
        started = time.monotonic()
        try:
            return self._start(paths, logs, timeout, started)
        except BaseException:
            self.down()
            raise

    def _start(self, paths: dict[str, Path], logs: Path, timeout: float, started: float) -> State:
        pki = certs.generate(self.directory / "pki")
        admin = identities.admin()
        people = [admin, *self.users]
        tokens = self.directory / "tokens.csv"
        identities.write_token_file(tokens, people)

        # etcd requires client certificates from its own CA, as a cluster runs it: a request without one (an
        # HTTP action of a saga, anything else on this host) reads and writes nothing.
        etcd_port, peer_port = processes.free_port(), processes.free_port()
        etcd_url = f"https://127.0.0.1:{etcd_port}"
        peer_url = f"https://127.0.0.1:{peer_port}"
        tls = [f"--cert-file={pki.etcd_cert}", f"--key-file={pki.etcd_key}", f"--trusted-ca-file={pki.etcd_ca}"]
        peer_tls = [
            f"--peer-cert-file={pki.etcd_cert}",
            f"--peer-key-file={pki.etcd_key}",
            f"--peer-trusted-ca-file={pki.etcd_ca}",
        ]
        self._spawn(
            "etcd",
            [
                str(paths["etcd"]),
                "--name=steadfast",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=steadfast={peer_url}",
                *tls,
                "--client-cert-auth=true",
                *peer_tls,
                "--peer-client-cert-auth=true",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            logs,
        )
        self._published = [
            Endpoint(host="127.0.0.1", port=etcd_port, what="the control plane's etcd"),
            Endpoint(host="127.0.0.1", port=peer_port, what="the control plane's etcd (peer port)"),
        ]
        etcd_client = (pki.etcd_client_cert, pki.etcd_client_key)
        processes.wait_until(
            lambda: processes.http_ok(f"{etcd_url}/health", ca_file=pki.etcd_ca, client_cert=etcd_client),
            what="etcd",
            timeout=timeout,
            pid=self._procs["etcd"].pid,
            log=logs / "etcd.log",
        )

        api_port = processes.free_port()
        server = f"https://127.0.0.1:{api_port}"
        self._spawn(
            "kube-apiserver",
            [
                str(paths["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                f"--etcd-cafile={pki.etcd_ca}",
                f"--etcd-certfile={pki.etcd_client_cert}",
                f"--etcd-keyfile={pki.etcd_client_key}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                f"--service-account-key-file={pki.sa_public}",
                f"--service-account-signing-key-file={pki.sa_private}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                "--endpoint-reconciler-type=none",
            ],
            logs,
        )
        ca_pem = pki.ca_cert.read_bytes()
        processes.wait_until(
            lambda: processes.http_ok(f"{server}/readyz", token=admin.token, ca_file=pki.ca_cert),
            what="kube-apiserver",
            timeout=timeout,
            pid=self._procs["kube-apiserver"].pid,
            log=logs / "kube-apiserver.log",
        )

        self._published.append(Endpoint(host="127.0.0.1", port=api_port, what="the Kubernetes API server"))
        kubeconfig = self.directory / "kubeconfig"
        kubeconfig.write_text(identities.kubeconfig(server, ca_pem, people))
        kubeconfig.chmod(0o600)

        kcm_port = processes.free_port()
        self._spawn(
            "kube-controller-manager",
            [
                str(paths["kube-controller-manager"]),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                # Deployments and ReplicaSets too: a Deployment scaled to zero becomes Available with no kubelet.
                # ClusterRole aggregation and ResourceQuota as in any cluster: the chart's roles aggregate into
                # edit/view, and a quota on Steadfast kinds (count/tasksagas.steadfast.dev) is enforced.
                "--controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,"
                "deployment-controller,replicaset-controller,clusterrole-aggregation-controller,"
                "resourcequota-controller",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.directory / 'kcm-certs'}",
                "--use-service-account-credentials=false",
                f"--root-ca-file={pki.ca_cert}",
            ],
            logs,
        )
        processes.wait_until(
            lambda: processes.http_ok(f"https://127.0.0.1:{kcm_port}/healthz", insecure=True),
            what="kube-controller-manager",
            timeout=timeout,
            pid=self._procs["kube-controller-manager"].pid,
            log=logs / "kube-controller-manager.log",
        )

        self._published.append(
            Endpoint(host="127.0.0.1", port=kcm_port, what="the control plane's kube-controller-manager")
        )

        engine_address: str | None = None
        api_token: str | None = None
        if isinstance(self.engine, str) and self.engine in STORES:
            store = STORES[self.engine]
            self._log(f"starting daprd, placement and scheduler ({store} state store)")
            daprd = DaprdEngine(
                self.directory / "daprd", detach=self.detach, start_timeout=timeout, store=store
            ).start()
            self._procs.update(daprd.children)
            engine_address, api_token = daprd.address, daprd.token
            self._published += [Endpoint(host=daprd.host, port=p, what=w) for p, w in daprd.endpoints()]
        elif self.engine and _engine_available():
            engine_port = processes.free_port()
            engine_address = f"127.0.0.1:{engine_port}"
            self._spawn(
                "engine",
                [
                    sys.executable,
                    "-m",
                    "steadfast_engine",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(engine_port),
                    "--db",
                    str(self.directory / "engine.db"),
                ],
                logs,
            )
            self._published.append(Endpoint(host="127.0.0.1", port=engine_port, what="the local workflow engine"))
            processes.wait_until(
                lambda: _grpc_ready(engine_address or ""),
                what="workflow engine",
                timeout=timeout,
                pid=self._procs["engine"].pid,
                log=logs / "engine.log",
            )
        elif self.engine:
            self._log("the local workflow engine is not part of this build; skipping it")
        # The kubeconfig publishes every endpoint opened here: an operator run with it refuses them all.
        kubeconfig.write_text(identities.kubeconfig(server, ca_pem, people, protected=self._published))

        self.state = State(
            directory=str(self.directory),
            apiserver=server,
            etcd=etcd_url,
            kubeconfig=str(kubeconfig),
            engine=engine_address,
            api_token=api_token,
            pids={n: p.pid for n, p in self._procs.items()},
            logs={n: str(logs / f"{n}.log") for n in self._procs},
            users=[{"name": i.name, "groups": list(i.groups)} for i in people],
            started_at=time.time(),
        )
        write_state(self.state)
        self._install_crds(paths["kubectl"], kubeconfig)
        self._log(f"control plane ready in {time.monotonic() - started:.1f}s: {server}")
        return self.state

    def _spawn(self, name: str, args: list[str], logs: Path) -> None:
        self._log(f"starting {name}")
        self._commands[name] = args
        self._procs[name] = processes.launch(args, logs / f"{name}.log", detach=self.detach)
        # Record pids as we go, so `down` can clean up after a start that failed half-way.
        write_state(
            State(
                directory=str(self.directory),
                apiserver="",
                etcd="",
                kubeconfig="",
                pids={n: p.pid for n, p in self._procs.items()},
            )
        )

    def _crd_files(self) -> list[Path]:
        source = self.crds or REPO_ROOT / "crds"
        if source.is_dir() and any(source.glob("*.yaml")):
            return sorted(source.glob("*.yaml"))
        try:
            from steadfast.api import crd
        except ImportError:
            return []
        rendered = self.directory / "crds"
        rendered.mkdir(exist_ok=True)
        for name, text in crd.render_all().items():
            (rendered / name).write_text(text)
        return sorted(rendered.glob("*.yaml"))

    def _install_crds(self, kubectl: Path, kubeconfig: Path) -> None:
        files = self._crd_files()
        if not files:
            self._log("no CRDs found to install")
            return
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        args = [str(kubectl), "apply", "--server-side", "--force-conflicts"]
        for path in files:
            args += ["-f", str(path)]
        for command in (args, [str(kubectl), "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"]):
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise processes.StartError(f"installing CRDs failed ({' '.join(command[1:3])}):\n{done.stderr.strip()}")
        self._log(f"installed {len(files)} CRDs")

    def restart(self, *names: str, timeout: float = 60.0) -> float:
        """Stop the named components (in reverse order), start them again on the same data and ports.

        For chaos tests: the API server or etcd going away and coming back. Returns the seconds until the
        API server answered /readyz again.
        """
        if self.state is None:
            raise RuntimeError("restart() needs a control plane started by this object")
        for name in reversed(names):
            processes.stop(self._procs[name].pid)
            with contextlib.suppress(Exception):
                self._procs[name].wait(timeout=5)
        started = time.monotonic()
        logs = self.directory / "logs"
        for name in names:
            self._spawn(name, self._commands[name], logs)
        admin = next(u for u in _load_yaml(Path(self.state.kubeconfig))["users"] if u["name"] == identities.ADMIN)
        processes.wait_until(
            lambda: processes.http_ok(
                f"{self.state.apiserver}/readyz" if self.state else "",
                token=admin["user"]["token"],
                ca_file=self.directory / "pki" / "ca.crt",
            ),
            what="kube-apiserver",
            timeout=timeout,
            pid=self._procs["kube-apiserver"].pid,
            log=logs / "kube-apiserver.log",
        )
        self.state.pids.update({n: p.pid for n, p in self._procs.items()})
        write_state(self.state)
        return time.monotonic() - started

    def down(self) -> None:
        state = read_state(self.directory)
        pids = dict(state.pids) if state else {}
        pids.update({n: p.pid for n, p in self._procs.items()})
        # Reverse start order: nothing writes to etcd after it is gone.
        for name in reversed(list(pids)):
            processes.stop(pids[name])
        for proc in self._procs.values():
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        self._procs.clear()
        shutil.rmtree(self.directory, ignore_errors=True)


def write_state(state: State) -> None:
    path = Path(state.directory) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)  # it may hold daprd's API token
    tmp.write_text(json.dumps(asdict(state), indent=2))
    os.replace(tmp, path)


def read_state(directory: Path) -> State | None:
    try:
        data = json.loads((directory.resolve() / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return State(**data)


def status(directory: Path) -> dict[str, Any]:
    """What runs from `directory`: each component alive or not, and the API server's readiness."""
    state = read_state(directory)
    if state is None:
        return {"running": False, "directory": str(directory.resolve()), "components": {}}
    components = {name: {"pid": pid, "alive": processes.alive(pid)} for name, pid in state.pids.items()}
    return {
        "running": bool(components) and all(c["alive"] for c in components.values()),
        "directory": state.directory,
        "apiserver": state.apiserver,
        "engine": state.engine,
        "kubeconfig": state.kubeconfig,
        "users": state.users,
        "components": components,
    }
