"""End to end on a real cluster: kind, Dapr installed by its Helm chart, the operator image, the chart, the samples.

`make e2e-kind` (or `pytest tests/e2e -m e2e`) on a machine with a Docker engine and `kind` on PATH:

1. creates a kind cluster (`STEADFAST_E2E_CLUSTER`, default steadfast-e2e; `STEADFAST_E2E_NODE_IMAGE` picks the
   node image);
2. installs Dapr with its chart (dapr/dapr from https://dapr.github.io/helm-charts/, `STEADFAST_E2E_DAPR_VERSION`
   pins a chart version, default the newest) and an in-memory actor state store for the operator's app ID;
3. builds the image with `docker build` and loads it with `kind load docker-image`;
4. `helm install`s charts/steadfast (one replica, the image just loaded) and waits for it;
5. runs the sample task service in the cluster (examples/task_service.py in the operator image) and applies
   config/samples with their URLs pointed at it, then waits for each: the saga that succeeds, the one that
   compensates, the monitor turning Healthy, the approval approved by alice (impersonated) and its action run;
6. reads the operator's metrics through the API server's service proxy.

The cluster is deleted afterwards unless `STEADFAST_E2E_KEEP=1` (which also reuses an existing one).
Without a Docker engine or kind every test here is skipped with the reason; the helm and kubectl binaries come
from the same cache as the local control plane's (built from the Go module proxy on first use).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from steadfast.api.kinds import KINDS, SCHEDULE_KINDS, TEMPLATES

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "steadfast"
SAMPLES = REPO / "config" / "samples"
CLUSTER = os.environ.get("STEADFAST_E2E_CLUSTER", "steadfast-e2e")
KEEP = os.environ.get("STEADFAST_E2E_KEEP", "") not in ("", "0", "false")
IMAGE = "steadfast:e2e"
DAPR_CHARTS = "https://dapr.github.io/helm-charts/"
RELEASE, NAMESPACE = "steadfast", "steadfast-system"
SAMPLES_NAMESPACE = "steadfast-samples"
# The samples call the task service on the developer's machine; in the cluster it is this Service.
LOCAL_TASK_SERVICE = "http://127.0.0.1:8089"
TASK_SERVICE = f"http://task-service.{SAMPLES_NAMESPACE}.svc:8089"
GROUP, VERSION = "steadfast.dev", "v1alpha1"


@functools.cache
def missing() -> str | None:
    """Why this machine cannot run the kind e2e (None: it can)."""
    if shutil.which("docker") is None:
        return "no `docker` CLI on PATH: the kind e2e needs a Docker engine (run `make e2e-kind` where Docker runs)"
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30s: no Docker engine reachable"
    if info.returncode != 0:
        detail = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`docker info` failed ({detail}): no Docker engine reachable"
    if shutil.which("kind") is None:
        return "`kind` is not on PATH: install it (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
    return None


@dataclass
class Kind:
    """The tools against one kind cluster; helm's repository cache and config stay in `home`."""

    kubeconfig: Path
    home: Path
    helm: Path
    kubectl: Path

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "helm-cache"),
            "HELM_CONFIG_HOME": str(self.home / "helm-config"),
            "HELM_DATA_HOME": str(self.home / "helm-data"),
        }

    def run(
        self, *args: str | Path, stdin: str | None = None, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [str(a) for a in args]
        if command[0] == "helm":
            command[0] = str(self.helm)
        elif command[0] == "kubectl":
            command[0] = str(self.kubectl)
        done = subprocess.run(command, capture_output=True, text=True, input=stdin, timeout=timeout, env=self.env())
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                f"{done.stderr[-3000:]}\n{self.diagnostics()}"
            )
        return done

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.run("kubectl", *args, "-o", "json").stdout)

    def diagnostics(self) -> str:
        """What a failure report needs: pods everywhere and the operator's and sidecar's last log lines."""
        parts = []
        for args in (
            ["get", "pods", "-A", "-o", "wide"],
            ["-n", NAMESPACE, "logs", f"deployment/{RELEASE}", "-c", "operator", "--tail=80"],
            ["-n", NAMESPACE, "logs", f"deployment/{RELEASE}", "-c", "daprd", "--tail=40"],
            ["-n", SAMPLES_NAMESPACE, "get", "steadfast", "-o", "wide"],
        ):
            try:
                done = subprocess.run(
                    [str(self.kubectl), *args], capture_output=True, text=True, timeout=30, env=self.env()
                )
                parts.append(f"$ kubectl {' '.join(args)}\n{done.stdout[-4000:]}{done.stderr[-1000:]}")
            except (OSError, subprocess.TimeoutExpired) as exc:
                parts.append(f"$ kubectl {' '.join(args)}: {exc}")
        return "\n".join(parts)


def wait_for(check: Callable[[], Any], what: str, kind: Kind, timeout: float = 300, interval: float = 2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{kind.diagnostics()}")


@pytest.fixture(scope="module")
def kind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kind]:
    reason = missing()
    if reason is not None:
        pytest.skip(f"kind e2e skipped: {reason}")
    from steadfast.dev.controlplane import binaries

    home = tmp_path_factory.mktemp("kind-e2e")
    tools = Kind(
        home / "kubeconfig", home, binaries.ensure(binaries.HELM)["helm"], binaries.ensure(binaries.KUBECTL)["kubectl"]
    )
    existing = tools.run("kind", "get", "clusters", timeout=60).stdout.split()
    created = False
    if CLUSTER in existing and KEEP:
        tools.run("kind", "export", "kubeconfig", "--name", CLUSTER, "--kubeconfig", tools.kubeconfig, timeout=60)
    else:
        if CLUSTER in existing:
            tools.run("kind", "delete", "cluster", "--name", CLUSTER, timeout=300)
        image = os.environ.get("STEADFAST_E2E_NODE_IMAGE")
        tools.run(
            "kind",
            "create",
            "cluster",
            "--name",
            CLUSTER,
            "--kubeconfig",
            tools.kubeconfig,
            "--wait",
            "180s",
            *(["--image", image] if image else []),
            timeout=600,
        )
        created = True
    try:
        yield tools
    finally:
        if created and not KEEP:
            tools.run("kind", "delete", "cluster", "--name", CLUSTER, timeout=300, check=False)


@pytest.fixture(scope="module")
def dapr(kind: Kind) -> None:
    """Dapr's control plane by its own chart, and the actor state store workflows need (in memory: one replica)."""
    version = os.environ.get("STEADFAST_E2E_DAPR_VERSION")
    kind.run(
        "helm",
        "upgrade",
        "--install",
        "dapr",
        "dapr",
        "--repo",
        DAPR_CHARTS,
        *(["--version", version] if version else []),
        "-n",
        "dapr-system",
        "--create-namespace",
        "--set",
        "global.ha.enabled=false",
        "--wait",
        "--timeout",
        "10m",
        timeout=900,
    )
    store = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "statestore", "namespace": NAMESPACE},
        "spec": {
            "type": "state.in-memory",
            "version": "v1",
            "metadata": [{"name": "actorStateStore", "value": "true"}],
        },
        "scopes": ["steadfast"],
    }
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    kind.run("kubectl", "apply", "-f", "-", stdin=yaml.safe_dump_all([namespace, store]))


@pytest.fixture(scope="module")
def image(kind: Kind) -> str:
    kind.run("docker", "build", "-t", IMAGE, REPO, timeout=1200)
    kind.run("kind", "load", "docker-image", IMAGE, "--name", CLUSTER, timeout=600)
    return IMAGE


@pytest.fixture(scope="module")
def installed(kind: Kind, dapr: None, image: str) -> str:
    repository, _, tag = image.partition(":")
    out = kind.run(
        "helm",
        "upgrade",
        "--install",
        RELEASE,
        CHART,
        "-n",
        NAMESPACE,
        "--create-namespace",
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "replicaCount=1",
        "--wait",
        "--timeout",
        "10m",
        timeout=900,
    ).stdout
    return out


def task_service_manifests(image: str) -> list[dict[str, Any]]:
    """examples/task_service.py (aiohttp, which the operator image has) as a Deployment and Service."""
    labels = {"app.kubernetes.io/name": "task-service"}
    script = (REPO / "examples" / "task_service.py").read_text()
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SAMPLES_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "task-service", "namespace": SAMPLES_NAMESPACE},
            "data": {"task_service.py": script},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "task-service", "namespace": SAMPLES_NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "task-service",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "command": ["python", "/app/task_service.py", "--host", "0.0.0.0", "--port", "8089"],
                                "ports": [{"name": "http", "containerPort": 8089}],
                                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2},
                                "volumeMounts": [{"name": "app", "mountPath": "/app"}],
                            }
                        ],
                        "volumes": [{"name": "app", "configMap": {"name": "task-service"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "task-service", "namespace": SAMPLES_NAMESPACE},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 8089, "targetPort": "http"}]},
        },
        # alice approves the sample request (kubectl --as alice): she needs the aggregated edit rights.
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "alice-edits", "namespace": SAMPLES_NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
        },
    ]


@pytest.fixture(scope="module")
def samples(kind: Kind, installed: str, image: str) -> dict[str, dict[str, Any]]:
    """config/samples applied, their task service URLs pointed at the in-cluster task service."""
    kind.run("kubectl", "apply", "-f", "-", stdin=yaml.safe_dump_all(task_service_manifests(image)))
    kind.run(
        "kubectl",
        "-n",
        SAMPLES_NAMESPACE,
        "rollout",
        "status",
        "deployment/task-service",
        "--timeout=180s",
        timeout=240,
    )
    applied: dict[str, dict[str, Any]] = {}
    for path in sorted(SAMPLES.glob("*.yaml")):
        text = path.read_text().replace(LOCAL_TASK_SERVICE, TASK_SERVICE)
        for doc in yaml.safe_load_all(text):
            if doc:
                applied[doc["metadata"]["name"]] = doc
    kind.run("kubectl", "-n", SAMPLES_NAMESPACE, "apply", "-f", "-", stdin=yaml.safe_dump_all(applied.values()))
    return applied


def phase_of(kind: Kind, resource: str, name: str) -> str | None:
    done = kind.run("kubectl", "-n", SAMPLES_NAMESPACE, "get", resource, name, "-o", "json", check=False)
    if done.returncode != 0:
        return None
    phase: str | None = (json.loads(done.stdout).get("status") or {}).get("phase")
    return phase


def wait_phase(kind: Kind, resource: str, name: str, *phases: str, timeout: float = 300) -> str:
    found: str = wait_for(
        lambda: (p := phase_of(kind, resource, name)) in phases and p,
        f"{resource}/{name} in {phases}",
        kind,
        timeout=timeout,
    )
    return found


def test_chart_installed_with_dapr_sidecar(kind: Kind, installed: str) -> None:
    assert "STATUS: deployed" in installed
    deployment = kind.kubectl_json("-n", NAMESPACE, "get", "deployment", RELEASE)
    assert deployment["status"].get("availableReplicas") == 1
    pods = kind.kubectl_json("-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE}")
    containers = {c["name"] for c in pods["items"][0]["spec"]["containers"]}
    assert {"operator", "daprd"} <= containers, f"the Dapr sidecar was not injected: {containers}"


def test_samples_reach_their_outcomes(kind: Kind, samples: dict[str, dict[str, Any]]) -> None:
    kinds = {doc["kind"] for doc in samples.values()}
    assert {k.kind for k in (*KINDS, *SCHEDULE_KINDS, *TEMPLATES)} <= kinds, kinds
    assert wait_phase(kind, "tasksagas", "onboard-42", "Succeeded", "Compensated", "Failed") == "Succeeded"
    for name in ("onboard-43-parallel", "onboard-44-from-template"):
        assert wait_phase(kind, "tasksagas", name, "Succeeded", "Compensated", "CompensationFailed", "Failed") == (
            "Succeeded"
        ), name
    assert (
        wait_phase(kind, "tasksagas", "onboard-43-fails", "Succeeded", "Compensated", "CompensationFailed", "Failed")
        == "Compensated"
    )
    assert wait_phase(kind, "healthmonitors", "task-service", "Healthy", "Unhealthy") == "Healthy"
    wait_for(
        lambda: (
            phase_of(kind, "approvalrequests", "deploy-prod-123") == "Pending"
            and kind.kubectl_json("-n", SAMPLES_NAMESPACE, "get", "approvalrequests", "deploy-prod-123")["status"].get(
                "expiresAt"
            )
        ),
        "the sample approval open",
        kind,
    )


def test_sample_approval_approved_by_alice(kind: Kind, samples: dict[str, dict[str, Any]]) -> None:
    wait_phase(kind, "approvalrequests", "deploy-prod-123", "Pending")
    patch = json.dumps({"spec": {"decision": {"approved": True, "reason": "kind e2e"}}})
    kind.run(
        "kubectl",
        "-n",
        SAMPLES_NAMESPACE,
        "--as",
        "alice",
        "patch",
        "approvalrequests",
        "deploy-prod-123",
        "--type",
        "merge",
        "-p",
        patch,
    )
    assert (
        wait_phase(kind, "approvalrequests", "deploy-prod-123", "Completed", "ActionFailed", "Rejected", "TimedOut")
        == "Completed"
    )
    status = kind.kubectl_json("-n", SAMPLES_NAMESPACE, "get", "approvalrequests", "deploy-prod-123")["status"]
    assert status["approver"] == "alice" and status["actionResult"]["succeeded"] is True


def test_metrics_served_through_the_service(kind: Kind, samples: dict[str, dict[str, Any]]) -> None:
    wait_phase(kind, "tasksagas", "onboard-42", "Succeeded")
    path = f"/api/v1/namespaces/{NAMESPACE}/services/{RELEASE}-metrics:metrics/proxy/metrics"
    text = wait_for(
        lambda: (
            (out := kind.run("kubectl", "get", "--raw", path, check=False)).returncode == 0
            and 'steadfast_sagas_total{outcome="succeeded"}' in out.stdout
            and out.stdout
        ),
        "the metrics Service to report a succeeded saga",
        kind,
        timeout=120,
    )
    assert "steadfast_status_writes_total" in text
