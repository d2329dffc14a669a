"""Attacks on where actions go, on how policies match and on what approvers read, by a namespace editor.

mallory may create TaskSagas in her namespace and nothing else. She writes URLs that aim at the control
plane (etcd, the API server, the controller manager), the workflow engine and the Dapr sidecar, the operator
itself, other namespaces' Services and cloud metadata, in every spelling an address has, and through redirects.
Each attempt must end with the step refused (its message says why) and nothing reached. The README's local
command and these tests' operator allow only the ports the tests' own servers use; one test runs the operator
with all of loopback allowed, as the README once did, to show that the control plane stays out of reach anyway.
"""

from __future__ import annotations

import http.server
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import (
    EGRESS_ALLOW,
    GROUP,
    TEST_SERVER_PORT,
    VERSION,
    Operator,
    Resources,
    TaskService,
    allow_users,
    eventually,
)
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from test_policy import _service

from steadfast.dev import engines
from steadfast.dev.controlplane import cluster, processes
from steadfast.endpoints import EXTENSION

pytestmark = [pytest.mark.controlplane, pytest.mark.adversarial]

REFUSED = ("which Steadfast never calls", "does not allow it", "not in the operator's egress allow-list")


@pytest.fixture
def mallory(control_plane: cluster.State, kube: client.ApiClient, namespace: str) -> client.CustomObjectsApi:
    """mallory's client; she may create sagas (and requests) in `namespace`, nothing more."""
    allow_users(kube, namespace, ("mallory",))
    return client.CustomObjectsApi(
        config.new_client_from_config(config_file=control_plane.kubeconfig, context="mallory")
    )


def attempt(api: client.CustomObjectsApi, namespace: str, urls: dict[str, str], method: str = "GET") -> dict[str, str]:
    """Create one saga per URL as the given user; the first step's message of each once it ended, by name."""
    for name, url in urls.items():
        step = {"name": "reach", "action": {"http": {"method": method, "url": url, "timeout": "2s"}}}
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskSaga",
            "metadata": {"name": name},
            "spec": {"task": {"id": name}, "steps": [step]},
        }
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, "tasksagas", body)
    sagas = Resources(api.api_client, namespace, "tasksagas", "TaskSaga")
    out: dict[str, str] = {}
    for name in urls:
        status = sagas.wait_phase(name, "Failed", "Succeeded", "Compensated", timeout=60)["status"]
        assert status["phase"] == "Failed", (name, status)
        out[name] = str(status["steps"][0].get("message") or "")
    return out


def assert_refused(messages: dict[str, str], expected: dict[str, str] | None = None) -> None:
    """Every message is a refusal before any request (no HTTP status, no connection attempt)."""
    for name, message in messages.items():
        assert any(r in message for r in REFUSED), (name, message)
        assert (expected or {}).get(name, "") in message, (name, message)


def published(kubeconfig: str) -> dict[str, int]:
    """The control plane's published endpoints, what -> port."""
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    extensions = doc["clusters"][0]["cluster"].get("extensions") or []
    found = next(e["extension"]["endpoints"] for e in extensions if e["name"] == EXTENSION)
    return {e["what"]: e["port"] for e in found}


def test_the_control_plane_engine_sidecar_and_operator_are_refused(
    operator: Operator,
    mallory: client.CustomObjectsApi,
    namespace: str,
    control_plane: cluster.State,
    engine: engines.Engine,
) -> None:
    ports = published(control_plane.kubeconfig)
    etcd, peer = ports["the control plane's etcd"], ports["the control plane's etcd (peer port)"]
    kcm = ports["the control plane's kube-controller-manager"]
    messages = attempt(
        mallory,
        namespace,
        {
            "apiserver": f"{control_plane.apiserver}/api/v1/namespaces/kube-system/secrets",
            "etcd": f"http://127.0.0.1:{etcd}/v3/kv/range",
            "etcd-peer": f"http://127.0.0.1:{peer}/members",
            "controller-manager": f"https://127.0.0.1:{kcm}/",
            "engine": f"http://{engine.address}/",
            "sidecar": "http://127.0.0.1:3500/v1.0/state/statestore/x",
            "metrics": operator.metrics_url,
        },
    )
    assert_refused(
        messages,
        {
            "apiserver": "the Kubernetes API server",
            "etcd": "the control plane's etcd",
            "engine": "engine",
            "sidecar": "the Dapr sidecar",
            "metrics": "the operator's metrics",
        },
    )


SPELLINGS = {
    # 127.0.0.1 (on etcd's port) and 169.254.169.254 as URLs may write them.
    "decimal": "http://2130706433:{etcd}/version",
    "octal": "http://0177.0.0.1:{etcd}/version",
    "hex": "http://0x7f.0.0.1:{etcd}/version",
    "short": "http://127.1:{etcd}/version",
    "other-loopback": "http://127.0.0.2:{etcd}/version",
    "localhost": "http://localhost:{etcd}/version",
    "mapped": "http://[::ffff:127.0.0.1]:{etcd}/version",
    "nat64": "http://[64:ff9b::7f00:1]:{etcd}/version",
    "sixtofour": "http://[2002:7f00:1::1]:{etcd}/version",
    "compatible": "http://[::127.0.0.1]:{etcd}/version",
    "teredo": "http://[2001:0:7f00:1::1]:{etcd}/version",
    "metadata-decimal": "http://2852039166/latest/meta-data/",
    "metadata-nat64": "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
    "metadata-mapped": "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
    "metadata-name": "http://metadata.google.internal/computeMetadata/v1/",
}


def test_every_spelling_of_a_refused_address_is_refused(
    operator: Operator, mallory: client.CustomObjectsApi, namespace: str, control_plane: cluster.State
) -> None:
    etcd = published(control_plane.kubeconfig)["the control plane's etcd"]
    urls = {name: url.format(etcd=etcd) for name, url in SPELLINGS.items()}
    accepted: dict[str, str] = {}
    for name, url in urls.items():
        try:
            accepted |= attempt(mallory, namespace, {name: url})
        except ApiException as exc:  # a spelling the URL schema refuses at admission is refused too
            assert exc.status in (400, 422), (name, exc.status)
    assert len(accepted) >= len(urls) - 4, sorted(accepted)  # most spellings are admitted, and refused by egress
    assert_refused(accepted)


class _Redirector(http.server.BaseHTTPRequestHandler):
    """Answers every request with a redirect to the URL its path names after /to/."""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.path.removeprefix("/to/"))
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def redirector() -> Iterator[str]:
    """A server of the test on the one extra port the operator allows, that redirects wherever it is told."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", TEST_SERVER_PORT), _Redirector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{TEST_SERVER_PORT}"
    finally:
        server.shutdown()
        server.server_close()


def test_redirects_are_not_followed(
    operator: Operator, mallory: client.CustomObjectsApi, namespace: str, task_service: TaskService, redirector: str
) -> None:
    marker = f"/records/redirected-{uuid.uuid4().hex[:8]}"
    messages = attempt(
        mallory,
        namespace,
        {
            "to-metadata": f"{redirector}/to/http://169.254.169.254/latest/",
            "to-task": f"{redirector}/to/{task_service.url}{marker}",
        },
    )
    for name, message in messages.items():
        assert "HTTP 302" in message, (name, message)
    assert not [d for d in task_service.stats()["deliveries"] if d["path"] == marker], "the redirect was followed"


def test_other_namespaces_services_are_refused_unless_a_rule_allows(
    operator: Operator, kube: client.ApiClient, mallory: client.CustomObjectsApi, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    core.patch_namespace(namespace, {"metadata": {"labels": {"steadfast-test-tier": namespace}}})
    other = f"{namespace}-other"
    core.create_namespace({"metadata": {"name": other, "labels": {"steadfast-test-shares": namespace}}})
    api = client.CustomObjectsApi(kube)
    try:
        own_ip, other_ip = _service(core, namespace, "own"), _service(core, other, "api")
        time.sleep(2)  # the operator learns Services from its watch; give the events a moment
        spelled = other_ip.split(".")
        nat64 = "64:ff9b::{:02x}{:02x}:{:02x}{:02x}".format(*map(int, spelled))
        messages = attempt(
            mallory,
            namespace,
            {"own": f"http://{own_ip}/", "other": f"http://{other_ip}/", "other-nat64": f"http://[{nat64}]/"},
        )
        # Its own Service passes the check: the request is made (nothing answers in this sandbox).
        assert messages.pop("own").startswith(f"GET http://{own_ip}/: "), messages
        refused_message = messages["other"]
        assert f"Service {other}/api, in another namespace than {namespace}" in refused_message
        assert "unless an egress rule of a SteadfastPolicy allows more" in refused_message
        # Spelled through NAT64: refused (here already by the allow-list, which does not list 64:ff9b::/96).
        assert any(r in messages["other-nat64"] for r in (*REFUSED, "in another namespace")), messages
        rule = {
            "name": "shared-api",
            "namespaceSelector": {"matchLabels": {"steadfast-test-tier": namespace}},
            "allow": [{"namespaces": {"matchLabels": {"steadfast-test-shares": namespace}}}],
        }
        policy = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SteadfastPolicy",
            "metadata": {"name": f"egress-{namespace}"},
            "spec": {"egress": [rule]},
        }
        api.create_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", policy)
        time.sleep(2)  # the policy reaches the operator through its watch
        opened = attempt(mallory, namespace, {"other-allowed": f"http://{other_ip}/"}, method="GET")["other-allowed"]
        assert opened.startswith(f"GET http://{other_ip}/: "), opened
    finally:
        try:
            api.delete_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", f"egress-{namespace}")
        except ApiException as exc:
            if exc.status != 404:
                raise
        core.delete_namespace(other)


@pytest.fixture
def wide_operator(
    operator: Operator, control_plane: cluster.State, engine: engines.Engine, tmp_path: Path
) -> Iterator[Operator]:
    """The operator as the README once started it: all of loopback allowed. The session's operator pauses."""
    operator.stop()
    wide = Operator(control_plane, engine, tmp_path / "wide.log", egress_allow=["127.0.0.0/8", *EGRESS_ALLOW[3:]])
    try:
        wide.start()
        yield wide
    finally:
        wide.stop()
        operator.start()


def test_the_control_plane_stays_refused_with_all_of_loopback_allowed(
    wide_operator: Operator,
    mallory: client.CustomObjectsApi,
    namespace: str,
    control_plane: cluster.State,
    engine: engines.Engine,
) -> None:
    ports = published(control_plane.kubeconfig)
    etcd, peer = ports["the control plane's etcd"], ports["the control plane's etcd (peer port)"]
    kcm = ports["the control plane's kube-controller-manager"]
    urls = {
        "etcd-read": f"http://127.0.0.1:{etcd}/v3/kv/range",
        "etcd-peer": f"http://127.0.0.1:{peer}/members",
        "apiserver": f"{control_plane.apiserver}/api/v1/secrets",
        "controller-manager": f"https://127.0.0.1:{kcm}/",
        "metrics": wide_operator.metrics_url,
    }
    urls |= {f"engine-{i}": f"http://{engine.host}:{port}/" for i, (port, _) in enumerate(engine.endpoints())}
    messages = attempt(mallory, namespace, urls, method="POST")
    assert_refused(messages, {"etcd-read": "etcd", "engine-0": "engine", "metrics": "the operator's metrics"})


def test_the_control_plane_refuses_requests_without_credentials(
    control_plane: cluster.State, engine: engines.Engine
) -> None:
    """The root fixes: etcd wants a client certificate, daprd its API token; a plain request gets nothing."""
    etcd = published(control_plane.kubeconfig)["the control plane's etcd"]
    assert not processes.http_ok(f"http://127.0.0.1:{etcd}/version")
    assert not processes.http_ok(f"https://127.0.0.1:{etcd}/version", insecure=True)
    if engine.name == "daprd":
        http_port = next(p for p, what in engine.endpoints() if what.endswith(" http port"))
        request = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1.0/metadata")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        assert caught.value.code == 401


def test_policy_matching_cannot_be_escaped_by_spelling(
    operator: Operator,
    kube: client.ApiClient,
    mallory: client.CustomObjectsApi,
    namespace: str,
    task_service: TaskService,
) -> None:
    core = client.CoreV1Api(kube)
    core.patch_namespace(namespace, {"metadata": {"labels": {"steadfast-test-tier": namespace}}})
    api = client.CustomObjectsApi(kube)
    name = f"org-{namespace}"
    rule = {
        "name": "high-needs-sre",
        "match": {"priorities": ["high"], "namespaceSelector": {"matchLabels": {"steadfast-test-tier": namespace}}},
        "approvers": {"groups": ["sre"], "required": 1},
    }
    policy = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SteadfastPolicy",
        "metadata": {"name": name},
        "spec": {"approvals": [rule]},
    }
    api.create_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", policy)
    try:
        step = {"name": "record", "action": {"http": {"method": "POST", "url": f"{task_service.url}/records"}}}

        def saga(name: str, priority: str, title: str = "") -> None:
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "TaskSaga",
                "metadata": {"name": name},
                "spec": {"task": {"id": name, "priority": priority, "title": title or name}, "steps": [step]},
            }
            mallory.create_namespaced_custom_object(GROUP, VERSION, namespace, "tasksagas", body)

        for bad in (" high", "high ", "\u04bbigh", "\uff48\uff49\uff47\uff48", "hi\u200bgh"):
            with pytest.raises(ApiException) as caught:
                saga(f"odd-{uuid.uuid4().hex[:6]}", bad)
            assert caught.value.status in (400, 422), bad
        saga("upper", "High", title="Pay \u202eyap.knab\u202c now")
        sagas = Resources(kube, namespace, "tasksagas", "TaskSaga")
        assert (
            sagas.wait_phase("upper", "AwaitingApproval", "Succeeded", "Failed")["status"]["phase"]
            == "AwaitingApproval"
        )
        requests = Resources(kube, namespace, "approvalrequests", "ApprovalRequest")
        title = eventually(lambda: requests.get("upper-approval"), what="the gate's request")["spec"]["subject"][
            "title"
        ]
        assert "\u202e" not in title and "Pay \\u202eyap.knab\\u202c now" in title
        # A rule that exempts sagas by a label their author writes is refused.
        exempt = {
            **rule,
            "name": "unless-exempt",
            "match": {"labelSelector": {"matchExpressions": [{"key": "exempt", "operator": "DoesNotExist"}]}},
        }
        escaping = {**policy, "metadata": {"name": f"{name}-exempt"}, "spec": {"approvals": [exempt]}}
        with pytest.raises(ApiException) as caught:
            api.create_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", escaping)
        assert caught.value.status in (400, 422)
    finally:
        api.delete_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", name)
