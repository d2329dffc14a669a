"""Helpers for end-to-end tests: waiting, the task service client, the operator process, resources."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from steadfast.dev.controlplane import cluster, processes
from steadfast.dev.engines import Engine
from steadfast.endpoints import EXTENSION, Endpoint, extension

GROUP, VERSION = "steadfast.dev", "v1alpha1"

# The loopback ports tests may call: the operator allows exactly these of its own host (as the README's local
# command allows only the sample task service's port), so the control plane and the engine beside them stay refused.
TASK_SERVICE_PORT = processes.free_port()
TEST_SERVER_PORT = processes.free_port()  # for a test's own server (one that redirects, echoes, ...)
CLOSED_PORT = 1  # nothing listens there: a step that calls it fails to connect
EGRESS_ALLOW = (
    f"127.0.0.1:{TASK_SERVICE_PORT}",
    f"127.0.0.1:{TEST_SERVER_PORT}",
    f"127.0.0.1:{CLOSED_PORT}",
    # The control plane's Service network (cluster.py): the namespace layer of egress decides there.
    "10.96.0.0/16",
)


def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition", interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


class TaskService:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_stats")
        return result

    def fault(self, route: str, fail: int = -1, status: int = 500, delay: float = 0.0, body: Any = None) -> None:
        """Arm a fault for `route`; `body` replaces the answer (a 200 with a bad body is a fault too)."""
        self._call("POST", "/_faults", {"route": route, "fail": fail, "status": status, "delay": delay, "body": body})

    def clear_faults(self) -> None:
        self._call("DELETE", "/_faults")

    def reset(self) -> None:
        self._call("POST", "/_reset", {})

    def applied(self, path_prefix: str = "") -> list[str]:
        """Applied effects as 'METHOD path', in order."""
        return [
            f"{a['route'].split()[0]} {a['path']}" for a in self.stats()["applied"] if a["path"].startswith(path_prefix)
        ]


def publishing(kubeconfig: str, engine: Engine, path: Path) -> str:
    """A copy of `kubeconfig` whose clusters also publish the engine's ports (as `steadfast dev up` publishes what
    it started): the operator refuses them as action destinations. Returns the copy's path."""
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    mine = [Endpoint(host=engine.host, port=port, what=what) for port, what in engine.endpoints()]
    for entry in doc.get("clusters") or []:
        extensions = entry["cluster"].setdefault("extensions", [])
        found = next((e for e in extensions if e.get("name") == EXTENSION), None)
        if found is None:
            extensions.append(extension(mine))
        else:
            found["extension"]["endpoints"] += [e.model_dump() for e in mine]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return str(path)


class Operator:
    """`steadfast run` as a separate process, as in production; restartable and killable."""

    def __init__(
        self,
        state: cluster.State,
        engine: Engine,
        log: Path,
        *,
        kubeconfig: str | None = None,
        extra_args: Sequence[str] = (),
        egress_allow: Sequence[str] = EGRESS_ALLOW,
    ) -> None:
        """`kubeconfig` replaces the admin one (e.g. a ServiceAccount token's); `extra_args` go to `steadfast run`."""
        self.env = {
            **os.environ,
            "KUBECONFIG": publishing(kubeconfig or state.kubeconfig, engine, log.with_name(f"{log.stem}.kubeconfig")),
            "DAPR_GRPC_ENDPOINT": engine.address,
            "PYTHONUNBUFFERED": "1",
            # Chaos tests leave daprd without this app's actor types now and then (see steadfast.worker):
            # probe more often than production's 15 s so that the next test does not wait for recovery.
            "STEADFAST_WORKER_PROBE_INTERVAL": "3",
            # Schedule tests run every 2-3 s (production's shortest interval: 60 s); every second stays refused.
            "STEADFAST_MIN_SCHEDULE_INTERVAL": "2s",
            # Retention tests wait for removals: sweep every second (production: 30 s; a few list calls each).
            "STEADFAST_RETENTION_SWEEP_INTERVAL": "1",
            # Concurrency tests wait for an abandoned saga's slot: keepers check their holders every 2 s (30 s).
            "STEADFAST_CONCURRENCY_CHECK_INTERVAL": "2",
        }
        self.log = log
        self.extra_args = list(extra_args)
        self.egress_allow = list(egress_allow)
        self.pid: int | None = None
        self.metrics_url = f"http://127.0.0.1:{processes.free_port()}/metrics"

    def start(self) -> None:
        before = self.log.read_text() if self.log.exists() else ""
        metrics_address = self.metrics_url.removeprefix("http://").removesuffix("/metrics")
        proc = processes.launch(
            [
                sys.executable,
                "-m",
                "steadfast.cli",
                "run",
                "-A",
                *(f"--egress-allow={a}" for a in self.egress_allow),
                "--metrics",
                metrics_address,
                *self.extra_args,
            ],
            self.log,
            detach=False,
            env=self.env,
        )
        self.pid = proc.pid
        self._proc = proc

        webhooks = "--no-webhooks" not in self.extra_args

        def ready() -> bool:
            # Creates fail closed until the admission webhooks point at this process: wait for that too.
            text = self.log.read_text()[len(before) :]
            return "workflow worker connected" in text and (
                not webhooks or "Reconfiguring the validating webhook" in text
            )

        processes.wait_until(ready, what="operator", timeout=60, pid=proc.pid, log=self.log)

    def metrics(self) -> dict[str, float]:
        """The operator's Prometheus samples, `name{labels}` -> value."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def kill(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, 9)
            self._proc.wait(timeout=10)
            self.pid = None

    def stop(self) -> None:
        if self.pid is not None:
            processes.stop(self.pid)
            self.pid = None


class Resources:
    """Custom objects of one kind in one namespace, with waits on status."""

    def __init__(self, kube: client.ApiClient, namespace: str, plural: str, kind: str) -> None:
        self.api = client.CustomObjectsApi(kube)
        self.namespace, self.plural, self.kind = namespace, plural, kind

    def create(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": self.kind, "metadata": {"name": name}, "spec": spec}
        created: dict[str, Any] = self.api.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, self.plural, body
        )
        return created

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, self.plural, name
            )
            return obj
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, name)

    def wait_phase(self, name: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.get(name)
            return obj if obj and (obj.get("status") or {}).get("phase") in phases else None

        try:
            result: dict[str, Any] = eventually(check, timeout=timeout, what=f"{name} in {phases}")
        except AssertionError:
            obj = self.get(name)
            raise AssertionError(
                f"{name} never reached {phases}; status: {json.dumps((obj or {}).get('status'))}"
            ) from None
        return result

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, name, {"spec": spec})

    def patch_metadata(self, name: str, metadata: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, self.plural, name, {"metadata": metadata}
        )

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.get(name) or {}).get("status") or {})

    def wait_status(
        self, name: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30
    ) -> dict[str, Any]:
        try:
            result: dict[str, Any] = eventually(
                lambda: (lambda s: s if check(s) else None)(self.status(name)), timeout=timeout, what=what
            )
        except AssertionError:
            raise AssertionError(f"{name}: {what} not reached; status: {json.dumps(self.status(name))}") from None
        return result

    def wait_gone(self, name: str, timeout: float = 60) -> None:
        eventually(lambda: self.get(name) is None, timeout=timeout, what=f"{name} deleted")

    def events(self, name: str) -> list[dict[str, Any]]:
        items = (
            client.CoreV1Api(self.api.api_client)
            .list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}")
            .items
        )
        return [{"reason": e.reason, "type": e.type, "message": e.message} for e in items]

    def wait_event(self, name: str, reason: str, containing: str = "", timeout: float = 20) -> dict[str, Any]:
        """The first Event of `reason` (with `containing` in its message) about `name`, once it is there: Events
        are posted after the status write that goes with them, so a test that saw the status may look too soon."""
        found: dict[str, Any] = eventually(
            lambda: next(
                (e for e in self.events(name) if e["reason"] == reason and containing in (e["message"] or "")), None
            ),
            timeout=timeout,
            what=f"a {reason} Event about {name}",
        )
        return found


def allow_users(kube: client.ApiClient, namespace: str, users: tuple[str, ...]) -> None:
    """Let `users` create and patch approval requests and sagas in `namespace`: only the webhooks decide."""
    rbac = client.RbacAuthorizationV1Api(kube)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "steadfast-user"},
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "resources": ["approvalrequests", "tasksagas"],
                    "verbs": ["get", "list", "watch", "create", "patch", "update"],
                }
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "steadfast-users"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "steadfast-user"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u} for u in users],
        },
    )


def activities(op: Operator, kind: str = "") -> int:
    """Action attempts this operator process ran as workflow activities (all kinds, or one resource kind)."""
    prefix = "steadfast_action_duration_seconds_count{"
    return int(sum(v for k, v in op.metrics().items() if k.startswith(prefix) and (not kind or f'kind="{kind}"' in k)))


def peering(kube: client.ApiClient, kubectl: Path, kubeconfig: str, name: str) -> None:
    """kopf's ClusterKopfPeering CRD (from the chart) and the object `name`, as the chart installs them, and no
    admission webhooks of a stopped operator left behind (they fail closed: every create would be refused)."""
    repo = Path(__file__).resolve().parents[2]
    admission = client.AdmissionregistrationV1Api(kube)
    for delete in (admission.delete_validating_webhook_configuration, admission.delete_mutating_webhook_configuration):
        with contextlib.suppress(ApiException):
            delete("steadfast.dev")
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    crd = repo / "charts/steadfast/crds/clusterkopfpeerings.kopf.dev.yaml"
    subprocess.run([str(kubectl), "apply", "--server-side", "-f", str(crd)], env=env, check=True)
    wait = [str(kubectl), "wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev"]
    subprocess.run(wait, env=env, check=True)
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    with contextlib.suppress(ApiException):
        client.CustomObjectsApi(kube).create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)


def free_crd(kube: client.ApiClient, group: str, kind: str, plural: str) -> str:
    """A namespaced test CRD (v1) with a status subresource and no schema beyond "an object": no operator acts
    on it, only the test writes it. Created once (a second call finds it), returned when Established."""
    ext = client.ApiextensionsV1Api(kube)
    name = f"{plural}.{group}"
    version = {
        "name": "v1",
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    }
    body = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [version],
        },
    }
    try:
        ext.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        found = ext.read_custom_resource_definition(name)
        return any(c.type == "Established" and c.status == "True" for c in found.status.conditions or [])

    eventually(established, timeout=30, what=f"{kind} CRD established")
    return name


FORGED = "forged-by-probe"  # a creator typed into the annotation that admission replaces where it runs


def admission_stamps(api: client.CustomObjectsApi, namespace: str) -> bool | None:
    """Whether the API server calls the operator's webhooks for this namespace: a dry-run create carrying a typed
    creator comes back with the real one (True) or with the typed one (False); None while the server refuses it."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ApprovalRequest",
        "metadata": {"name": "probe", "annotations": {"steadfast.dev/requested-by": FORGED}},
        "spec": {"subject": {"title": "probe"}, "approvers": {"users": ["alice"]}},
    }
    try:
        obj = api.create_namespaced_custom_object(GROUP, VERSION, namespace, "approvalrequests", body, dry_run="All")
    except ApiException:
        return None
    return bool((obj["metadata"].get("annotations") or {}).get("steadfast.dev/requested-by") != FORGED)


def wait_webhooks(api: client.CustomObjectsApi, namespace: str) -> None:
    """Until the API server calls the running operator's webhooks (a dry-run create comes back stamped)."""
    eventually(lambda: admission_stamps(api, namespace), timeout=60, what="admission webhooks served", interval=0.25)
