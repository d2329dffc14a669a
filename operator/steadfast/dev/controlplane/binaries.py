"""Pinned Kubernetes, etcd and Helm binaries built from the Go module proxy.

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
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.13"
HELM_VERSION = "v3.22.0"


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

    @property
    def path(self) -> Path:
        return bin_dir() / f"{self.name}-{self.version}"


KUBE_APISERVER = Component("kube-apiserver", KUBERNETES_VERSION, "kubernetes")
KUBE_CONTROLLER_MANAGER = Component("kube-controller-manager", KUBERNETES_VERSION, "kubernetes")
KUBECTL = Component("kubectl", KUBERNETES_VERSION, "kubernetes")
ETCD = Component("etcd", ETCD_VERSION, "etcd")
HELM = Component("helm", HELM_VERSION, "helm")

CONTROL_PLANE = (ETCD, KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBECTL)
ALL = (*CONTROL_PLANE, HELM)
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
    info = json.loads(_run_go(["mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"], src,
                              "fetching k8s.io/kubernetes"))
    gomod = Path(info["GoMod"]).read_text()
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", gomod, flags=re.M)))


def _prepare_kubernetes(src: Path) -> None:
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(f"module steadfast.local/kubernetes\n\ngo 1.24.0\n\n"
                                f"require k8s.io/kubernetes {KUBERNETES_VERSION}\n")
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
    (src / "go.mod").write_text(f"module steadfast.local/etcd\n\ngo 1.24.0\n\n"
                                f"require go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n")
    (src / "cmd" / "etcd").mkdir(parents=True, exist_ok=True)
    (src / "cmd" / "etcd" / "main.go").write_text(_ETCD_MAIN)
    _log(f"resolving etcd {ETCD_VERSION} modules (go mod tidy)")
    _run_go(["mod", "tidy"], src, "go mod tidy for the etcd wrapper module")


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
    src = cache_dir() / "src" / f"{component.group}-{component.version}"
    bin_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=bin_dir(), prefix=f".{component.name}-"))
    out = tmp / component.name
    started = time.monotonic()
    try:
        if component.group == "helm":
            _log(f"building helm {component.version} (go install, ~2 min the first time)")
            env = _go_env() | {"GOBIN": str(tmp)}
            proc = subprocess.run([_go(), "install", "-trimpath", "-ldflags=-s -w",
                                   f"helm.sh/helm/v3/cmd/helm@{component.version}"],
                                  cwd=tmp, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise BuildError(f"building helm failed:\n{proc.stderr[-3000:]}")
        else:
            mains = _KUBE_MAINS if component.group == "kubernetes" else {"etcd": _ETCD_MAIN}
            if not (src / "go.sum").exists():
                shutil.rmtree(src, ignore_errors=True)
                (_prepare_kubernetes if component.group == "kubernetes" else _prepare_etcd)(src)
            for name, main in mains.items():  # cheap to rewrite; a resolved module graph is kept
                (src / "cmd" / name).mkdir(parents=True, exist_ok=True)
                (src / "cmd" / name / "main.go").write_text(main)
            expected = {"kube-apiserver": "~5 min", "kube-controller-manager": "~4 min",
                        "kubectl": "~2 min", "etcd": "~1.5 min"}.get(component.name, "a few minutes")
            _log(f"building {component.name} {component.version} ({expected} cold on 2 cores)")
            ldflags = _kube_ldflags() if component.group == "kubernetes" else "-s -w"
            _run_go(["build", "-trimpath", f"-ldflags={ldflags}", "-o", str(out), f"./cmd/{component.name}"],
                    src, f"building {component.name}")
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
