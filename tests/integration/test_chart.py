"""The Helm chart against a real API server: lint, render, server-side dry-run, `helm install`, and the operator
running under the chart's own ServiceAccount token.

RBAC proof: the operator talks to the API server through a recording proxy (plain HTTP on loopback, TLS to the
API server), authenticated only by a token of the chart's ServiceAccount. While it handles all three kinds,
every request is classified as (API group, resource, verb). The test then requires that no request was
forbidden (the rules are enough) and that the set of granted (group, resource, verb) equals the set used (the
rules grant nothing unused) — so a rule can neither be missing nor be left over after the code stops needing it.

This module starts its own control plane and engine: the chart installs fail-closed admission webhooks and
cluster-scoped objects that must not touch the shared fixture's tests, and a second operator on the shared
engine would take workflow work items meant for another cluster.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from e2e_support import Operator, Resources, TaskService, eventually
from kubernetes import client, config

from steadfast.dev.controlplane import binaries, cluster
from steadfast_engine.process import EngineProcess, start_engine

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "steadfast"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
RELEASE, NAMESPACE = "steadfast", "steadfast-system"
KUBE_VERSION = "1.34.4"
# Kinds whose CRDs belong to other projects (cert-manager, Dapr) and are not installed on the local control plane.
FOREIGN_KINDS = {"Certificate", "Issuer", "Component", "Resiliency", "ServiceMonitor"}
# Requests every authenticated user may make through the built-in system:basic-user role (not the chart's).
BUILT_IN = {("authentication.k8s.io", "selfsubjectreviews", "create")}
# What only the admission webhooks use: the SubjectAccessReview of a repair decision (steadfast.repair.admission).
WEBHOOK_ONLY = {("authorization.k8s.io", "subjectaccessreviews", "create")}


# ---- tools ---------------------------------------------------------------------------------------


@dataclass
class Tools:
    helm: Path
    kubectl: Path
    kubeconfig: str

    def run(
        self, tool: str, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        binary = self.helm if tool == "helm" else self.kubectl
        done = subprocess.run(
            [str(binary), *args],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=120,
            env={"KUBECONFIG": self.kubeconfig, "HOME": str(Path(self.kubeconfig).parent), "PATH": "/usr/bin:/bin"},
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def render(self, *args: str) -> list[dict[str, Any]]:
        out = self.run(
            "helm", "template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_VERSION, *args
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.State]:
    directory = tmp_path_factory.mktemp("chart-plane") / "dev"
    control = cluster.ControlPlane(directory, engine=False, detach=False, log=lambda _: None)
    try:
        yield control.up()
    finally:
        control.down()


@pytest.fixture(scope="module")
def own_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    directory = tmp_path_factory.mktemp("chart-engine")
    proc = start_engine(directory / "engine.db", log_file=directory / "engine.log", synchronous="NORMAL")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def tools(plane: cluster.State) -> Tools:
    return Tools(binaries.ensure(binaries.HELM)["helm"], binaries.ensure(binaries.KUBECTL)["kubectl"], plane.kubeconfig)


@pytest.fixture(scope="module")
def admin(plane: cluster.State) -> client.ApiClient:
    return config.new_client_from_config(config_file=plane.kubeconfig, context="admin")


def of_kind(docs: list[dict[str, Any]], kind: str, *, console: bool = False) -> list[dict[str, Any]]:
    """The rendered objects of `kind`: the operator's, or with `console` the web console's."""
    return [d for d in docs if d["kind"] == kind and _is_console(d) == console]


def _is_console(doc: dict[str, Any]) -> bool:
    return bool((doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "console")


# ---- lint and render -----------------------------------------------------------------------------


def test_lint_default_and_full_values(tools: Tools) -> None:
    for extra in ([], ["-f", str(FULL_VALUES)]):
        out = tools.run("helm", "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, *extra).stdout
        assert "0 chart(s) failed" in out


def test_built_helm_knows_its_kubernetes_version(tools: Tools) -> None:
    """The helm we build carries a released helm's version flags: no `--kube-version` is needed to render."""
    assert "v3.22.0" in tools.run("helm", "version", "--short").stdout
    out = tools.run("helm", "template", RELEASE, str(CHART), "-n", NAMESPACE).stdout
    assert any(d and d["kind"] == "Deployment" for d in yaml.safe_load_all(out))


def test_schema_refuses_unknown_and_invalid_values(tools: Tools) -> None:
    for bad in (
        "replicaCount=0",
        "webhook.failurePolicy=Maybe",
        "typo=1",
        "dapr.components.stateStore.type=mysql",
        "operator.retention.succeeded=1 day",
        "operator.retention.sweepInterval=0",
    ):
        done = tools.run("helm", "template", str(CHART), "--kube-version", KUBE_VERSION, "--set", bad, check=False)
        assert done.returncode != 0 and "schema" in done.stderr, bad
    done = tools.run(
        "helm",
        "template",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "replicaCount=2",
        "--set",
        "peering.enabled=false",
        check=False,
    )
    assert "needs peering.enabled" in done.stderr


def test_crd_templates_are_the_generated_crds(tools: Tools) -> None:
    """One source: the chart renders crds/ unchanged but for its labels and the keep annotation."""
    rendered = {d["metadata"]["name"]: d for d in of_kind(tools.render(), "CustomResourceDefinition")}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        source = yaml.safe_load(path.read_text())
        crd = rendered.pop(source["metadata"]["name"])
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert source["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert {**crd, "metadata": source["metadata"]} == source
    assert rendered == {}
    assert of_kind(tools.render("--set", "crds.install=false"), "CustomResourceDefinition") == []
    kept = of_kind(tools.render("--set", "crds.keep=false"), "CustomResourceDefinition")
    assert all("helm.sh/resource-policy" not in (c["metadata"].get("annotations") or {}) for c in kept)


def test_default_render(tools: Tools) -> None:
    docs = tools.render()
    deployment = of_kind(docs, "Deployment")[0]
    pod = deployment["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["dapr.io/enabled"] == "true" and annotations["dapr.io/app-id"] == "steadfast"
    assert "dapr.io/app-port" not in annotations  # the app serves nothing to the sidecar
    assert deployment["spec"]["replicas"] == 2
    container = pod["spec"]["containers"][0]
    assert f"--peering={RELEASE}" in container["args"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    # Retention: nothing removed unless asked (spec.retention, a policy rule, or these values).
    assert not [a for a in container["args"] if a.startswith("--retain-")]
    assert "--retention-sweep-interval=30" in container["args"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] and pod["spec"]["securityContext"]["runAsUser"] == 65532
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert of_kind(docs, "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 1
    assert of_kind(docs, "ClusterKopfPeering")[0]["metadata"]["name"] == RELEASE
    secret = of_kind(docs, "Secret")[0]
    bundles = {
        w["clientConfig"]["caBundle"]
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
        for w in of_kind(docs, kind)[0]["webhooks"]
    }
    assert bundles == {secret["data"]["ca.crt"]}  # one CA per render, the one that signed the served certificate
    assert of_kind(docs, "Component") == [] and of_kind(docs, "Resiliency") == []
    assert of_kind(tools.render("--set", "replicaCount=1"), "PodDisruptionBudget") == []


def test_webhook_paths_are_the_operators_handlers(tools: Tools) -> None:
    """kopf serves each admission handler at /<handler id>: the chart's configurations must name exactly those."""
    import kopf

    from steadfast import webhooks

    registry = kopf.OperatorRegistry()
    webhooks.register(registry, operator="system:serviceaccount:x:y", may_repair=lambda *_: False)
    handlers = registry._webhooks.get_all_handlers()
    expected = {(str(h.reason.value), str(h.id)) for h in handlers}
    operations = {str(h.id): sorted(h.operations or []) for h in handlers}
    docs = tools.render()
    found = set()
    for kind, reason in (
        ("MutatingWebhookConfiguration", "mutating"),
        ("ValidatingWebhookConfiguration", "validating"),
    ):
        for hook in of_kind(docs, kind)[0]["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            found.add((reason, path.lstrip("/")))
            assert sorted(hook["rules"][0]["operations"]) == operations[path.lstrip("/")]
            assert hook["failurePolicy"] == "Fail"
    assert found == expected


def test_full_values_render(tools: Tools) -> None:
    docs = tools.render("-f", str(FULL_VALUES))
    pod = of_kind(docs, "Deployment")[0]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["image"].startswith("registry.example.com/steadfast@sha256:")
    assert {"--egress-allow=10.0.0.0/8", "--egress-deny=10.99.0.0/16", "--verbose"} <= set(container["args"])
    assert {"--retain-succeeded=1h", "--retain-failed=168h", "--retention-sweep-interval=60"} <= set(container["args"])
    certificate = of_kind(docs, "Certificate")[0]
    assert certificate["spec"]["issuerRef"]["kind"] == "ClusterIssuer"
    assert of_kind(docs, "Issuer") == [] and of_kind(docs, "Secret") == []
    hook = of_kind(docs, "ValidatingWebhookConfiguration")[0]
    assert hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].endswith("/steadfast-full-webhook-tls")
    assert "caBundle" not in hook["webhooks"][0]["clientConfig"]
    store = of_kind(docs, "Component")[0]
    assert store["spec"]["type"] == "state.postgresql" and store["scopes"] == ["steadfast"]
    assert {"name": "actorStateStore", "value": "true"} in store["spec"]["metadata"]
    rules = of_kind(docs, "ClusterRole")[0]["rules"]
    assert not any("secrets" in r["resources"] for r in rules)  # rbac.secrets=false
    assert of_kind(docs, "Resiliency")[0]["spec"]["targets"]["components"] == {
        "statestore": {"outbound": {"timeout": "statestore", "retry": "statestore", "circuitBreaker": "statestore"}}
    }


def test_metrics_render(tools: Tools) -> None:
    """The metrics endpoint, its Service, and (rendered only: no monitoring CRDs here) ServiceMonitor and dashboard."""
    docs = tools.render()
    container = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics=0.0.0.0:9090" in container["args"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    service = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"] == f"{RELEASE}-metrics")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
    assert of_kind(docs, "ServiceMonitor") == [] and of_kind(docs, "ConfigMap") == []  # both off by default

    off = tools.render("--set", "metrics.enabled=false")
    container = of_kind(off, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert not any(a.startswith("--metrics") for a in container["args"])
    assert "metrics" not in {p["name"] for p in container["ports"]}
    assert [s["metadata"]["name"] for s in of_kind(off, "Service")] == [f"{RELEASE}-webhook"]

    docs = tools.render(
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.dashboard.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=prom",
    )
    monitor = of_kind(docs, "ServiceMonitor")[0]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE and monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    service = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"] == f"{RELEASE}-metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()  # it selects the metrics Service...
    webhook = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"] == f"{RELEASE}-webhook")
    assert not selector.items() <= webhook["metadata"]["labels"].items()  # ...and not the webhook Service
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    dashboard = of_kind(docs, "ConfigMap")[0]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["steadfast.json"]) == json.loads(
        (CHART / "files" / "grafana-dashboard.json").read_text()
    )

    full = tools.render("-f", str(FULL_VALUES))
    monitor = of_kind(full, "ServiceMonitor")[0]
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "5s")
    assert endpoint["relabelings"] and endpoint["metricRelabelings"]
    container = of_kind(full, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics=0.0.0.0:9191" in container["args"]
    dashboard = of_kind(full, "ConfigMap")[0]
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Operators"}

    for bad, message in (
        (["--set", "metrics.port=8080"], "already used"),
        (["--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true"], "needs metrics.enabled"),
        (["--set", "metrics.serviceMonitor.interval=soon"], "schema"),
    ):
        done = tools.run("helm", "template", str(CHART), "--kube-version", KUBE_VERSION, *bad, check=False)
        assert done.returncode != 0 and message in done.stderr, bad


def test_components_match_the_reference_files(tools: Tools) -> None:
    """The chart templates components/ with values; the essentials must agree with the reference files."""
    for kind in ("redis", "postgresql"):
        reference = yaml.safe_load((REPO / "components" / f"statestore-{kind}.yaml").read_text())
        docs = tools.render(
            "--set",
            "dapr.components.stateStore.enabled=true",
            "--set",
            f"dapr.components.stateStore.type={kind}",
            "--set",
            "dapr.components.stateStore.redis.passwordSecret.name=steadfast-redis",
        )
        store = of_kind(docs, "Component")[0]
        for key in ("type", "version"):
            assert store["spec"][key] == reference["spec"][key]
        names = {m["name"] for m in store["spec"]["metadata"]}
        assert {m["name"] for m in reference["spec"]["metadata"]} <= names
        assert store["auth"] == reference["auth"] and store["scopes"] == reference["scopes"]
    reference = yaml.safe_load((REPO / "components" / "resiliency.yaml").read_text())
    rendered = of_kind(tools.render("--set", "dapr.components.resiliency.enabled=true"), "Resiliency")[0]
    assert rendered["spec"] == reference["spec"]


# ---- the API server accepts it -------------------------------------------------------------------


def test_server_side_dry_run(tools: Tools) -> None:
    """Every rendered object is valid for the API server (CRD schemas, RBAC, webhooks, PDB...)."""
    tools.run("kubectl", "create", "namespace", NAMESPACE, "--dry-run=client", "-o", "yaml")
    for extra in ([], ["-f", str(FULL_VALUES)]):
        docs = tools.render("--include-crds", *extra)
        ours = [d for d in docs if d["kind"] not in FOREIGN_KINDS | {"ClusterKopfPeering"}]
        manifest = yaml.safe_dump_all(
            [
                {**d, "metadata": {**d["metadata"], "namespace": "default"}} if d["metadata"].get("namespace") else d
                for d in ours
            ]
        )
        done = tools.run(
            "kubectl", "apply", "--server-side", "--dry-run=server", "--force-conflicts", "-f", "-", stdin=manifest
        )
        assert "(server dry run)" in done.stdout


@pytest.fixture(scope="module")
def installed(tools: Tools, admin: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `helm install` of the default chart; the webhooks apply only to namespaces labelled for them."""

    # The control plane pre-installs crds/ for development; the chart must own them, so start without.
    # Waited for here rather than by `kubectl --wait` within one 120 s command: on a loaded machine the API
    # server's CRD cleanup once took longer than that (CI flake, all three CRDs already marked deleted).
    # A CRD deleted while its storage still initializes keeps its cleanup finalizer for minutes (the API server's
    # finalizer backs off): wait until every kind lists before deleting.
    def listable(resource: str) -> bool:
        return tools.run("kubectl", "get", resource, "-A", check=False).returncode == 0

    for path in sorted((REPO / "crds").glob("*.yaml")):
        resource = path.name.removesuffix(".yaml")
        eventually(lambda: listable(resource), timeout=60, what=f"{resource} listable")  # noqa: B023
    tools.run("kubectl", "delete", "-f", str(REPO / "crds"), "--wait=false")
    extensions = client.ApiextensionsV1Api(admin)
    deadline = time.monotonic() + 300
    while any(c.spec.group == "steadfast.dev" for c in extensions.list_custom_resource_definition().items):
        assert time.monotonic() < deadline, "the pre-installed CRDs were not removed within 300 s"
        time.sleep(1)
    values = tmp_path_factory.mktemp("values") / "values.yaml"
    values.write_text(
        yaml.safe_dump({"webhook": {"namespaceSelector": {"matchLabels": {"steadfast.dev/chart-test": "webhooks"}}}})
    )
    out = tools.run(
        "helm", "install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace", "-f", str(values)
    ).stdout
    yield out
    tools.run("helm", "uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False)


def test_helm_install(installed: str, tools: Tools, admin: client.ApiClient) -> None:
    assert "STATUS: deployed" in installed
    assert "kubectl get steadfast -A" in installed  # NOTES.txt
    status = json.loads(tools.run("helm", "status", RELEASE, "-n", NAMESPACE, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    tools.run(
        "kubectl",
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd",
        "tasksagas.steadfast.dev",
        "healthmonitors.steadfast.dev",
        "approvalrequests.steadfast.dev",
        "sagaschedules.steadfast.dev",
        "sagatemplates.steadfast.dev",
        "clustersagatemplates.steadfast.dev",
        "clusterkopfpeerings.kopf.dev",
    )
    deployment = client.AppsV1Api(admin).read_namespaced_deployment(RELEASE, NAMESPACE)
    assert deployment.spec.template.spec.service_account_name == RELEASE
    assert client.PolicyV1Api(admin).read_namespaced_pod_disruption_budget(RELEASE, NAMESPACE)
    registry = client.AdmissionregistrationV1Api(admin)
    hooks = registry.read_validating_webhook_configuration(RELEASE)
    assert {w.name for w in hooks.webhooks} == {
        "approval-rules.steadfast.dev",
        "saga-rules.steadfast.dev",
        "sagatemplate-rules.steadfast.dev",
        "clustersagatemplate-rules.steadfast.dev",
    }
    scopes = {w.name: w.rules[0].scope for w in hooks.webhooks}
    assert scopes["clustersagatemplate-rules.steadfast.dev"] == "Cluster"
    assert scopes["sagatemplate-rules.steadfast.dev"] == "Namespaced"
    mutating = registry.read_mutating_webhook_configuration(RELEASE)
    assert {w.name for w in mutating.webhooks} == {
        "approval-identity.steadfast.dev",
        "saga-identity.steadfast.dev",
        "monitor-rules.steadfast.dev",
        "schedule-rules.steadfast.dev",
    }


# ---- the operator under the chart's ServiceAccount -----------------------------------------------


def classify(method: str, path: str, query: dict[str, str]) -> tuple[str, str, str, str] | None:
    """(group, resource[/subresource], verb, name) of an API request; None for discovery and health paths."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    watch = query.get("watch", "").lower() in ("true", "1")  # the Python client sends watch=True
    verb = {
        "GET": "watch" if watch else ("get" if name else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }[method]
    return group, resource, verb, name


@dataclass
class RecordingProxy:
    """Plain HTTP on loopback in front of the API server; records every request with its response status."""

    upstream: str
    ca_pem: bytes
    seen: list[tuple[str, str, str, str, int]] = field(default_factory=list)

    def start(self) -> str:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        address: list[str] = []

        async def serve() -> None:
            context = ssl.create_default_context(cadata=self.ca_pem.decode())
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context), timeout=aiohttp.ClientTimeout(total=None)
            )
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._forward)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = self._runner.addresses[0][1]
            address.append(f"http://127.0.0.1:{port}")
            ready.set()

        def run() -> None:
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        threading.Thread(target=run, name="recording-proxy", daemon=True).start()
        assert ready.wait(10)
        return address[0]

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        body = await request.read()
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body or None
        ) as upstream:
            found = classify(request.method, request.path, dict(request.query))
            if found:
                self.seen.append((*found, upstream.status))
            response = web.StreamResponse(
                status=upstream.status,
                headers={
                    k: v
                    for k, v in upstream.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")
                },
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (aiohttp.ClientError, ConnectionError):
                pass  # a watch cut by either side (the operator stopping, the proxy closing)
            return response

    def stop(self) -> None:
        async def close() -> None:
            await self._session.close()
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:  # open watch streams: end them, so the server stops at once
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            await self._runner.cleanup()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(asyncio.wait_for(close(), 5), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


def granted(role: dict[str, Any]) -> dict[tuple[str, str, str], set[str]]:
    """(group, resource, verb) -> resourceNames (empty: any name) of a ClusterRole."""
    out: dict[tuple[str, str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.setdefault((group, resource, verb), set()).update(rule.get("resourceNames") or [])
    return out


def operator_rules(tools: Tools, *args: str) -> dict[tuple[str, str, str], set[str]]:
    """The operator's grants: its ClusterRole and its Role in the release namespace (the seal key)."""
    rendered = tools.render(*args)
    roles = [r for r in of_kind(rendered, "ClusterRole") if r["metadata"]["name"] == RELEASE]
    roles += [r for r in of_kind(rendered, "Role") if r["metadata"]["name"] == f"{RELEASE}-seal-key"]
    out: dict[tuple[str, str, str], set[str]] = {}
    for role in roles:
        for rule, names in granted(role).items():
            # One grant for any name wins over a grant limited to names.
            out[rule] = set() if (rule in out and not out[rule]) or not names else out.get(rule, set()) | names
    return out


def test_kubernetes_actions_rules(installed: str, tools: Tools) -> None:
    """What kubernetesActions adds: impersonation (no uids or userextras), and list/watch of the wait resources only."""
    added = set(operator_rules(tools)) - set(operator_rules(tools, "--set", "kubernetesActions.enabled=false"))
    impersonate = {("", r, "impersonate") for r in ("users", "groups", "serviceaccounts")}
    assert impersonate <= added
    watched = added - impersonate
    assert watched and {verb for _, _, verb in watched} == {"list", "watch"}
    assert ("batch", "jobs", "watch") in watched and not any(r == "secrets" for _, r, _ in watched)
    off = of_kind(tools.render("--set", "kubernetesActions.enabled=false"), "Deployment")[0]
    assert "--no-kubernetes-actions" in off["spec"]["template"]["spec"]["containers"][0]["args"]
    account = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
    for question, expected in (
        (("impersonate", "users"), "yes"),
        (("impersonate", "groups"), "yes"),
        (("impersonate", "userextras.authentication.k8s.io"), "no"),
        (("watch", "jobs.batch"), "yes"),
        (("create", "jobs.batch"), "no"),  # creating is the impersonated user's right, never the operator's
        (("list", "secrets"), "no"),
    ):
        answer = tools.run("kubectl", "auth", "can-i", *question, "--all-namespaces", f"--as={account}", check=False)
        assert answer.stdout.strip() == expected, (question, answer.stdout, answer.stderr)


def sa_kubeconfig(tools: Tools, server: str, directory: Path) -> str:
    token = tools.run("kubectl", "create", "token", RELEASE, "-n", NAMESPACE, "--duration=1h").stdout.strip()
    path = directory / "kubeconfig-sa"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [{"name": "proxy", "cluster": {"server": server}}],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "proxy", "user": "sa"}}],
            }
        )
    )
    path.chmod(0o600)
    return str(path)


def test_operator_under_chart_service_account(
    installed: str,
    tools: Tools,
    plane: cluster.State,
    admin: client.ApiClient,
    own_engine: EngineProcess,
    task_service: TaskService,
    tmp_path: Path,
) -> None:
    ca = base64.b64decode(
        yaml.safe_load(Path(plane.kubeconfig).read_text())["clusters"][0]["cluster"]["certificate-authority-data"]
    )
    proxy = RecordingProxy(plane.apiserver, ca)
    server = proxy.start()
    # The operator runs without webhooks here, so it refuses kubernetes actions and never impersonates: its
    # rules are proved without kubernetesActions' (test_kubernetes_actions_rules covers those).
    rules = operator_rules(tools, "--set", "kubernetesActions.enabled=false")
    operator = Operator(
        plane,
        own_engine,
        tmp_path / "operator.log",
        kubeconfig=sa_kubeconfig(tools, server, tmp_path),
        # The chart's configurations point at an in-cluster Service the API server cannot reach
        # here, and the operator cannot yet serve them unmanaged (see the report): no webhooks.
        extra_args=["--peering", RELEASE, "--no-webhooks", "--seal-key-secret", f"{NAMESPACE}/{RELEASE}-seal-key"],
    )
    namespace = f"chart-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": namespace}})
    # The values keep the unreachable webhooks to labelled namespaces; a cluster-scoped kind has no namespace, so
    # the ClusterSagaTemplate webhook would refuse every create here: let it fail open for this test.
    registry = client.AdmissionregistrationV1Api(admin)
    hooks = registry.read_validating_webhook_configuration(RELEASE)
    for hook in hooks.webhooks:
        if hook.name == "clustersagatemplate-rules.steadfast.dev":
            hook.failure_policy = "Ignore"
    registry.replace_validating_webhook_configuration(RELEASE, hooks)
    operator.start()
    try:
        exercise_all_kinds(admin, namespace, task_service)
        objects = client.CustomObjectsApi(admin)
        peering = objects.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", RELEASE)
        assert peering.get("status"), "the operator did not announce itself in the chart's peering object"
        core.delete_namespace(namespace)
        eventually(
            lambda: not core.list_namespace(field_selector=f"metadata.name={namespace}").items,
            timeout=60,
            what=f"namespace {namespace} gone (finalizers removed by the operator)",
        )
    finally:
        operator.stop()
        proxy.stop()
    log = (tmp_path / "operator.log").read_text()
    forbidden = sorted({s[:3] for s in proxy.seen if s[4] == 403})
    assert not forbidden, f"the chart's RBAC refused {forbidden}:\n{log[-3000:]}"
    used = {s[:3] for s in proxy.seen} - BUILT_IN
    assert used <= set(rules), f"used but not granted: {sorted(used - set(rules))}"
    # Without webhooks the repair check never runs: its one rule is proved by asking with the chart's token.
    assert set(rules) - WEBHOOK_ONLY == used, f"granted but never used: {sorted(set(rules) - WEBHOOK_ONLY - used)}"
    account = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
    answer = tools.run(
        "kubectl", "auth", "can-i", "create", "subjectaccessreviews.authorization.k8s.io", f"--as={account}"
    )
    assert answer.stdout.strip() == "yes"
    for (group, resource, verb), names in rules.items():
        if names:
            assert {s[3] for s in proxy.seen if s[:3] == (group, resource, verb)} <= names


def exercise_all_kinds(admin: client.ApiClient, namespace: str, svc: TaskService) -> None:
    """Every code path behind an RBAC rule: the three kinds, a Secret header, an approval gate and its conflict,
    sagas made from templates."""
    core = client.CoreV1Api(admin)
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {
                "name": "notify",
                "labels": {"steadfast.dev/referable": "true"},
                "annotations": {"steadfast.dev/send-to": "127.0.0.1"},  # the task service's address
            },
            "stringData": {"token": "s3cret"},
        },
    )
    sagas = Resources(admin, namespace, "tasksagas", "TaskSaga")
    monitors = Resources(admin, namespace, "healthmonitors", "HealthMonitor")
    approvals = Resources(admin, namespace, "approvalrequests", "ApprovalRequest")
    secret_header = [{"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "notify", "key": "token"}}}]
    sagas.create(
        "plain",
        {
            "task": {"id": "chart-1"},
            "steps": [
                {
                    "name": "record",
                    "action": {
                        "http": {
                            "method": "POST",
                            "url": f"{svc.url}/records",
                            "body": {"id": "chart-1"},
                            "headers": secret_header,
                        }
                    },
                }
            ],
        },
    )
    gate = {"required": True, "approvers": {"users": ["alice"]}, "timeout": "2s"}
    sagas.create(
        "gated",
        {
            "task": {"id": "chart-2"},
            "approval": gate,
            "steps": [{"name": "record", "action": {"http": {"method": "POST", "url": f"{svc.url}/records"}}}],
        },
    )
    # A request already holding the gate's name: the operator reads it (get) and refuses to adopt it.
    approvals.create(
        "squatted-approval", {"subject": {"title": "not the saga's"}, "approvers": {"users": ["bob"]}, "timeout": "1h"}
    )
    sagas.create(
        "squatted",
        {
            "task": {"id": "chart-3"},
            "approval": gate,
            "steps": [{"name": "record", "action": {"http": {"method": "POST", "url": f"{svc.url}/records"}}}],
        },
    )
    monitors.create("up", {"target": {"http": {"method": "GET", "url": f"{svc.url}/healthz"}}, "healthyInterval": "1s"})
    # A schedule: watched, its finalizer and status written (without webhooks no creator is sealed: no runs).
    schedules = Resources(admin, namespace, "sagaschedules", "SagaSchedule")
    plain_saga = {"steps": [{"name": "record", "action": {"http": {"method": "POST", "url": f"{svc.url}/records"}}}]}
    schedules.create("every-second", {"schedule": "* * * * * *", "sagaTemplate": {"spec": plain_saga}})
    approvals.create(
        "standalone", {"subject": {"title": "times out"}, "approvers": {"users": ["alice"]}, "timeout": "2s"}
    )
    # Retention: the operator deletes these once finished (the chart's delete rule), then purges their instances.
    approvals.create(
        "short-lived",
        {
            "subject": {"title": "gone"},
            "approvers": {"users": ["alice"]},
            "timeout": "1s",
            "retention": {"failed": "0s"},
        },
    )
    sagas.create(
        "short-lived",
        {
            "task": {"id": "chart-4"},
            "retention": {"succeeded": "0s"},
            "steps": [{"name": "record", "action": {"http": {"method": "POST", "url": f"{svc.url}/records"}}}],
        },
    )

    # Templates: read (get) when a saga made from one starts, a namespace's and the cluster's.
    record = [{"name": "record", "action": {"http": {"method": "POST", "url": f"{svc.url}/records"}}}]
    Resources(admin, namespace, "sagatemplates", "SagaTemplate").create("local", {"steps": record})
    objects = client.CustomObjectsApi(admin)
    cluster_template = f"chart-{namespace}"
    objects.create_cluster_custom_object(
        "steadfast.dev",
        "v1alpha1",
        "clustersagatemplates",
        {
            "apiVersion": "steadfast.dev/v1alpha1",
            "kind": "ClusterSagaTemplate",
            "metadata": {"name": cluster_template},
            "spec": {"steps": record},
        },
    )
    sagas.create("templated", {"task": {"id": "chart-5"}, "template": {"name": "local"}})
    sagas.create(
        "cluster-templated",
        {"task": {"id": "chart-6"}, "template": {"kind": "ClusterSagaTemplate", "name": cluster_template}},
    )

    done = sagas.wait_phase("plain", "Succeeded", "Compensated", "Failed", timeout=60)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert_kstatus_current(done)
    assert sagas.wait_phase("gated", "Rejected", "Succeeded", timeout=60)["status"]["phase"] == "Rejected"
    assert approvals.get("gated-approval") is not None  # created by the operator under the chart's RBAC
    assert sagas.wait_phase("squatted", "Rejected", "Succeeded", timeout=60)["status"]["phase"] == "Rejected"
    monitor = monitors.wait_phase("up", "Healthy", timeout=60)
    assert_kstatus_current(monitor)
    timed_out = approvals.wait_phase("standalone", "TimedOut", timeout=60)
    assert_kstatus_stalled(timed_out)
    eventually(lambda: sagas.events("plain"), timeout=20, what="an Event recorded under the chart's RBAC")
    schedules.wait_status("every-second", lambda s: s.get("lastProblem") is not None, "a due run refused")
    schedules.delete("every-second")  # before the namespace goes: Events cannot be made in a terminating one
    schedules.wait_gone("every-second")
    sagas.wait_gone("short-lived")
    approvals.wait_gone("short-lived")
    for name in ("templated", "cluster-templated"):
        assert sagas.wait_phase(name, "Succeeded", "Failed", timeout=60)["status"]["template"]["generation"] == 1
    objects.delete_cluster_custom_object("steadfast.dev", "v1alpha1", "clustersagatemplates", cluster_template)
    for name in ("plain", "gated", "squatted", "templated", "cluster-templated"):
        sagas.delete(name)
        sagas.wait_gone(name)


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    return {c["type"]: c for c in status["conditions"]}


def assert_kstatus_current(obj: dict[str, Any]) -> None:
    """kstatus 'Current': status observed for this generation, Ready True, not Reconciling, not Stalled."""
    conditions = _conditions(obj)
    assert (conditions["Ready"]["status"], conditions["Reconciling"]["status"], conditions["Stalled"]["status"]) == (
        "True",
        "False",
        "False",
    )


def assert_kstatus_stalled(obj: dict[str, Any]) -> None:
    """kstatus 'Failed': Stalled True, Reconciling False."""
    conditions = _conditions(obj)
    assert (conditions["Stalled"]["status"], conditions["Reconciling"]["status"]) == ("True", "False")


def test_uninstall_keeps_crds(installed: str, tools: Tools, admin: client.ApiClient) -> None:
    tools.run("helm", "uninstall", RELEASE, "-n", NAMESPACE, "--wait")
    crds = {c.metadata.name for c in client.ApiextensionsV1Api(admin).list_custom_resource_definition().items}
    assert {"tasksagas.steadfast.dev", "healthmonitors.steadfast.dev", "approvalrequests.steadfast.dev"} <= crds
    roles = {r.metadata.name for r in client.RbacAuthorizationV1Api(admin).list_cluster_role().items}
    assert RELEASE not in roles


# ---- the web console -----------------------------------------------------------------------------


def test_console_is_off_by_default_and_holds_no_rights_in_token_mode(tools: Tools) -> None:
    assert [d for d in tools.render() if _is_console(d)] == []
    docs = tools.render("--set", "console.enabled=true")
    console = [d for d in docs if _is_console(d)]
    assert sorted(d["kind"] for d in console) == ["Deployment", "Service"]  # no ServiceAccount, no RBAC
    pod = of_kind(docs, "Deployment", console=True)[0]["spec"]["template"]
    assert pod["spec"]["automountServiceAccountToken"] is False and "serviceAccountName" not in pod["spec"]
    container = pod["spec"]["containers"][0]
    assert container["args"] == [
        "console",
        "--auth=token",
        "--listen=0.0.0.0:8090",
        "--ca-file=/etc/steadfast/kube-ca/ca.crt",
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "console"}
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert {"name": "kube-ca", "configMap": {"name": "kube-root-ca.crt"}} in pod["spec"]["volumes"]
    # the operator's Services and PodDisruptionBudget never select a console pod
    labels = pod["metadata"]["labels"]
    for doc in [*of_kind(docs, "Service"), *of_kind(docs, "PodDisruptionBudget")]:
        selector = doc["spec"].get("selector") or {}
        selector = selector.get("matchLabels", selector)
        assert not all(labels.get(k) == v for k, v in selector.items()), doc["metadata"]["name"]
    service = of_kind(docs, "Service", console=True)[0]
    assert service["spec"]["selector"] == {k: labels[k] for k in service["spec"]["selector"]}


def test_console_proxy_mode_listens_on_loopback_behind_the_proxy(tools: Tools) -> None:
    docs = tools.render("-f", str(FULL_VALUES))
    pod = of_kind(docs, "Deployment", console=True)[0]["spec"]["template"]
    console, proxy = pod["spec"]["containers"]
    assert "--listen=127.0.0.1:8091" in console["args"] and "--auth=proxy" in console["args"]
    assert "ports" not in console and proxy["name"] == "oauth2-proxy"
    assert of_kind(docs, "Service", console=True)[0]["spec"]["ports"][0]["targetPort"] == 4180
    assert pod["spec"]["automountServiceAccountToken"] is True
    assert pod["spec"]["serviceAccountName"] == of_kind(docs, "ServiceAccount", console=True)[0]["metadata"]["name"]
    role = of_kind(docs, "ClusterRole", console=True)[0]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}]
    done = tools.run(
        "helm", "template", str(CHART), "--kube-version", KUBE_VERSION,
        "--set", "console.enabled=true", "--set", "console.auth=proxy", check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "console.proxy.sidecars" in done.stderr
