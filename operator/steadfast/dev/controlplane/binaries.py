"""Pinned Kubernetes, etcd, Helm and Dapr binaries built from the Go module proxy.

These machines have Go and the module proxy but no release downloads and no Docker, so we do what
controller-runtime's envtest does with downloads, with `go build` instead: one small wrapper module
per upstream release, binaries named by version in a cache outside the work tree, reused when present.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.13"
HELM_VERSION = "v3.22.0"
DAPR_VERSION = "v1.18.3"

# `module=path[,module=path...]`: build with a local copy of a module the proxy does not serve (a folder, or a
# .tar.gz holding one top folder). Empty on a normal network.
REPLACE_ENV = "STEADFAST_GO_REPLACE"


class BuildError(RuntimeError):
    """A binary could not be built; the message says what is missing."""


def cache_dir() -> Path:
    """Where built binaries live: `$STEADFAST_CACHE`, else the user's cache folder."""
    explicit = os.environ.get("STEADFAST_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "steadfast"


def bin_dir() -> Path:
    return cache_dir() / "bin"


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    group: str  # which wrapper module builds it
    recipe: str = ""  # bumped when the way it is built changes, so a cached binary built the old way is not reused

    @property
    def path(self) -> Path:
        return bin_dir() / f"{self.name}-{self.version}{self.recipe}"


KUBE_APISERVER = Component("kube-apiserver", KUBERNETES_VERSION, "kubernetes")
KUBE_CONTROLLER_MANAGER = Component("kube-controller-manager", KUBERNETES_VERSION, "kubernetes")
KUBECTL = Component("kubectl", KUBERNETES_VERSION, "kubernetes")
ETCD = Component("etcd", ETCD_VERSION, "etcd")
HELM = Component("helm", HELM_VERSION, "helm", recipe="-r2")  # r2: release ldflags (Kubernetes version)

# r2: also the PostgreSQL and Redis state stores and the Kubernetes secret store (the chart's components)
DAPRD = Component("daprd", DAPR_VERSION, "dapr", recipe="-r2")
PLACEMENT = Component("placement", DAPR_VERSION, "dapr")
SCHEDULER = Component("scheduler", DAPR_VERSION, "dapr")

CONTROL_PLANE = (ETCD, KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBECTL)
DAPR = (DAPRD, PLACEMENT, SCHEDULER)
ALL = (*CONTROL_PLANE, HELM, *DAPR)
BY_NAME = {c.name: c for c in ALL}

# Each main mirrors the upstream cmd/<name> main, so the binary behaves like the released one.
_KUBE_MAINS = {
    "kube-apiserver": """package main

import (
	"os"

	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
""",
    "kube-controller-manager": """package main

import (
	"os"

	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() { os.Exit(cli.Run(app.NewControllerManagerCommand())) }
""",
    "kubectl": """package main

import (
	"os"

	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	_, _ = logs.GlogSetter(cmd.GetLogVerbosity(os.Args))
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
""",
}

_ETCD_MAIN = """package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


def _log(message: str) -> None:
    print(f"[steadfast build] {message}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if not go:
        raise BuildError(
            "Go is not installed (no `go` on PATH): it is needed once to build the pinned "
            f"kube-apiserver/etcd binaries into {bin_dir()}. Install Go >= 1.24 and retry."
        )
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "local")
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env["CGO_ENABLED"] = "0"
    return env


def _run_go(args: list[str], cwd: Path, what: str) -> str:
    done = threading.Event()

    def progress() -> None:  # a cold build takes minutes: say it is still going
        started = time.monotonic()
        while not done.wait(30):
            _log(f"... {what}: {int(time.monotonic() - started) // 60}m{int(time.monotonic() - started) % 60:02d}s")

    ticker = threading.Thread(target=progress, daemon=True)
    ticker.start()
    try:
        proc = subprocess.run([_go(), *args], cwd=cwd, env=_go_env(), capture_output=True, text=True)
    finally:
        done.set()
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        hint = ""
        if re.search(r"proxy|dial tcp|no such host|i/o timeout|410 Gone|404 Not Found|connection", tail):
            hint = (
                f"\nThe Go module proxy could not serve a module (GOPROXY={_go_env().get('GOPROXY') or 'default'})."
                " It is needed once per pinned version."
            )
        raise BuildError(f"{what} failed (go {' '.join(args)}):\n{tail}{hint}")
    return proc.stdout


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time across processes: two tests or shells must not build the same thing twice."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _staging_modules(src: Path) -> list[str]:
    """The modules k8s.io/kubernetes replaces with local folders; each has a matching v0.x release."""
    info = json.loads(
        _run_go(
            ["mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"], src, "fetching k8s.io/kubernetes"
        )
    )
    gomod = Path(info["GoMod"]).read_text()
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", gomod, flags=re.M)))


def _prepare_kubernetes(src: Path) -> None:
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(
        f"module steadfast.local/kubernetes\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes {KUBERNETES_VERSION}\n"
    )
    staging_version = "v0." + KUBERNETES_VERSION.removeprefix("v1.")
    replaces = "\n".join(f"\t{m} => {m} {staging_version}" for m in _staging_modules(src))
    with open(src / "go.mod", "a") as handle:
        handle.write(f"\nreplace (\n{replaces}\n)\n")
    for name, main in _KUBE_MAINS.items():
        (src / "cmd" / name).mkdir(parents=True, exist_ok=True)
        (src / "cmd" / name / "main.go").write_text(main)
    _log(f"resolving Kubernetes {KUBERNETES_VERSION} modules (go mod tidy)")
    _run_go(["mod", "tidy"], src, "go mod tidy for the Kubernetes wrapper module")


def _prepare_etcd(src: Path) -> None:
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(
        f"module steadfast.local/etcd\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n"
    )
    (src / "cmd" / "etcd").mkdir(parents=True, exist_ok=True)
    (src / "cmd" / "etcd" / "main.go").write_text(_ETCD_MAIN)
    _log(f"resolving etcd {ETCD_VERSION} modules (go mod tidy)")
    _run_go(["mod", "tidy"], src, "go mod tidy for the etcd wrapper module")


def go_replaces() -> dict[str, Path]:
    """The modules `$STEADFAST_GO_REPLACE` points at local copies (tarballs unpacked into the cache once)."""
    result: dict[str, Path] = {}
    for item in filter(None, (part.strip() for part in os.environ.get(REPLACE_ENV, "").split(","))):
        module, sep, where = item.partition("=")
        if not sep or not module or not where:
            raise BuildError(f"{REPLACE_ENV}: expected module=path, got {item!r}")
        path = Path(where).expanduser().resolve()
        if not path.exists():
            raise BuildError(f"{REPLACE_ENV}: {path} (for {module}) does not exist")
        if path.is_file():
            path = _unpack(path)
        if not (path / "go.mod").is_file():
            raise BuildError(f"{REPLACE_ENV}: {path} (for {module}) has no go.mod")
        result[module] = path
    return result


def _unpack(tarball: Path) -> Path:
    """Unpack a source tarball into the cache (keyed by its name and size); return its one top folder."""
    target = cache_dir() / "src" / "replace" / f"{tarball.name}-{tarball.stat().st_size}"
    if not target.exists():
        tmp = Path(tempfile.mkdtemp(dir=target.parent if target.parent.exists() else _mkdir(target.parent)))
        with tarfile.open(tarball) as archive:
            archive.extractall(tmp, filter="data")
        os.replace(tmp, target)
    tops = [p for p in target.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise BuildError(f"{tarball} should hold exactly one top folder, found {[p.name for p in tops]}")
    return tops[0]


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# daprd registers its components in cmd/daprd/components, one file per component behind the build tags
# `allcomponents || stablecomponents`, and panics on purpose without them. Our copy of the module keeps, untagged,
# the state stores the tests run on (SQLite, in-memory, and the chart's PostgreSQL and Redis) and the Kubernetes
# secret store through which the chart's components read their connection secrets.
_DAPR_COMPONENTS = (
    "state_sqlite.go",
    "state_in-memory.go",
    "state_postgres.go",
    "state_redis.go",
    "secretstores_kubernetes.go",
)


def _prepare_dapr(src: Path) -> None:
    """A writable copy of github.com/dapr/dapr at the pinned version, trimmed to the components we use."""
    _mkdir(src.parent)
    info = json.loads(
        _run_go(
            ["mod", "download", "-json", f"github.com/dapr/dapr@{DAPR_VERSION}"],
            src.parent,
            "fetching github.com/dapr/dapr",
        )
    )
    tmp = Path(tempfile.mkdtemp(dir=src.parent, prefix=".dapr-"))
    copy = tmp / "dapr"
    shutil.copytree(info["Dir"], copy)
    for path in copy.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the module cache is read-only
    components = copy / "cmd" / "daprd" / "components"
    for path in components.glob("*.go"):
        if path.name in _DAPR_COMPONENTS:
            path.write_text(re.sub(r"^//go:build .*\n", "", path.read_text(), count=1))
        else:
            path.unlink()
    replaces = go_replaces()
    if replaces:
        with open(copy / "go.mod", "a") as handle:
            handle.writelines(f"\nreplace {module} => {path}\n" for module, path in replaces.items())
    shutil.rmtree(src, ignore_errors=True)
    os.replace(copy, src)
    shutil.rmtree(tmp, ignore_errors=True)


def _helm_ldflags() -> str:
    """What helm's own Makefile sets: without it `helm template` assumes Kubernetes v1.20."""
    info = json.loads(
        _run_go(
            ["mod", "download", "-json", f"helm.sh/helm/v3@{HELM_VERSION}"],
            _mkdir(cache_dir()),
            "fetching helm.sh/helm/v3",
        )
    )
    found = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", Path(info["GoMod"]).read_text(), flags=re.M)
    if not found:
        raise BuildError("helm's go.mod names no k8s.io/client-go version")
    flags = [
        "-s",
        "-w",
        f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
    ]
    for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {pkg}.k8sVersionMajor=1", f"-X {pkg}.k8sVersionMinor={found.group(1)}"]
    return " ".join(flags)


def _kube_ldflags() -> str:
    major, minor, _ = KUBERNETES_VERSION.removeprefix("v").split(".")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def _build(component: Component) -> None:
    # a dapr source copy is trimmed per recipe (the components it registers), so it is keyed by the recipe too
    recipe = component.recipe if component.group == "dapr" else ""
    src = cache_dir() / "src" / f"{component.group}-{component.version}{recipe}"
    bin_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=bin_dir(), prefix=f".{component.name}-"))
    out = tmp / component.name
    started = time.monotonic()
    try:
        if component.group == "helm":
            _log(f"building helm {component.version} (go install, ~2 min the first time)")
            env = _go_env() | {"GOBIN": str(tmp)}
            proc = subprocess.run(
                [
                    _go(),
                    "install",
                    "-trimpath",
                    f"-ldflags={_helm_ldflags()}",
                    f"helm.sh/helm/v3/cmd/helm@{component.version}",
                ],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise BuildError(f"building helm failed:\n{proc.stderr[-3000:]}")
        elif component.group == "dapr":
            if not (src / "go.mod").exists():
                _prepare_dapr(src)
            expected = {"daprd": "~3 min", "placement": "~2 min", "scheduler": "~1 min"}[component.name]
            _log(f"building {component.name} {component.version} ({expected} cold on 2 cores; fetches what it imports)")
            ldflags = f"-s -w -X github.com/dapr/dapr/pkg/buildinfo.version={component.version.removeprefix('v')}"
            _run_go(
                ["build", "-trimpath", f"-ldflags={ldflags}", "-o", str(out), f"./cmd/{component.name}"],
                src,
                f"building {component.name}",
            )
        else:
            mains = _KUBE_MAINS if component.group == "kubernetes" else {"etcd": _ETCD_MAIN}
            if not (src / "go.sum").exists():
                shutil.rmtree(src, ignore_errors=True)
                (_prepare_kubernetes if component.group == "kubernetes" else _prepare_etcd)(src)
            for name, main in mains.items():  # cheap to rewrite; a resolved module graph is kept
                (src / "cmd" / name).mkdir(parents=True, exist_ok=True)
                (src / "cmd" / name / "main.go").write_text(main)
            expected = {
                "kube-apiserver": "~5 min",
                "kube-controller-manager": "~4 min",
                "kubectl": "~2 min",
                "etcd": "~1.5 min",
            }.get(component.name, "a few minutes")
            _log(f"building {component.name} {component.version} ({expected} cold on 2 cores)")
            ldflags = _kube_ldflags() if component.group == "kubernetes" else "-s -w"
            _run_go(
                ["build", "-trimpath", f"-ldflags={ldflags}", "-o", str(out), f"./cmd/{component.name}"],
                src,
                f"building {component.name}",
            )
        out.chmod(0o755)
        os.replace(out, component.path)
        _log(f"built {component.path} in {time.monotonic() - started:.0f}s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure(*components: Component) -> dict[str, Path]:
    """Return paths of the requested binaries, building the missing ones one at a time."""
    wanted = components or CONTROL_PLANE
    with _build_lock():
        for component in wanted:
            if not os.access(component.path, os.X_OK):
                _build(component)
    return {c.name: c.path for c in wanted}


def main(argv: list[str] | None = None) -> int:
    names = argv if argv else [c.name for c in CONTROL_PLANE]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        print(f"unknown component(s) {unknown}; known: {sorted(BY_NAME)}", file=sys.stderr)
        return 2
    try:
        paths = ensure(*(BY_NAME[n] for n in names))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
