"""The local control plane is a real Kubernetes API: CRDs, RBAC, garbage collection, namespaces, kopf."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from e2e_support import eventually
from kopf.testing import KopfRunner
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from steadfast.dev.controlplane import cluster

pytestmark = pytest.mark.controlplane

GROUP = "widgets.example.test"
PLURAL = "widgets"


def api(state: cluster.State, user: str = "admin") -> client.ApiClient:
    return config.new_client_from_config(config_file=state.kubeconfig, context=user)


@pytest.fixture(scope="module")
def widget_crd(control_plane: cluster.State) -> Iterator[None]:
    ext = client.ApiextensionsV1Api(api(control_plane))
    body = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget", "shortNames": ["wdg"]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1}}},
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}, "seen": {"type": "integer"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    ext.create_custom_resource_definition(body)

    def established() -> bool:
        crd = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))

    eventually(established, what="CRD Established")
    yield
    ext.delete_custom_resource_definition(f"{PLURAL}.{GROUP}")


def widget(name: str, size: int = 1) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": size}}


def test_crd_resource_and_status_with_python_client(control_plane: cluster.State, widget_crd: None) -> None:
    objects = client.CustomObjectsApi(api(control_plane))
    objects.create_namespaced_custom_object(GROUP, "v1", "default", PLURAL, widget("py-one", 3))
    objects.patch_namespaced_custom_object_status(
        GROUP, "v1", "default", PLURAL, "py-one", {"status": {"phase": "Ready"}}
    )
    got = objects.get_namespaced_custom_object(GROUP, "v1", "default", PLURAL, "py-one")
    assert got["spec"] == {"size": 3}
    assert got["status"] == {"phase": "Ready"}
    # The schema is enforced by the server, not by us.
    with pytest.raises(ApiException) as refused:
        objects.create_namespaced_custom_object(GROUP, "v1", "default", PLURAL, widget("py-bad", 0))
    assert refused.value.status == 422
    assert "spec.size" in refused.value.body


def test_crd_resource_and_status_with_built_kubectl(
    control_plane: cluster.State, widget_crd: None, kubectl_path: Path
) -> None:
    env = {**os.environ, "KUBECONFIG": control_plane.kubeconfig}

    def kubectl(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run([str(kubectl_path), *args], env=env, input=stdin, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    version = json.loads(kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == "v1.34.4"
    assert version["clientVersion"]["gitVersion"] == "v1.34.4"
    kubectl("apply", "-f", "-", stdin=json.dumps(widget("cli-one", 2)))
    kubectl("patch", "wdg", "cli-one", "--subresource=status", "--type=merge", "-p", '{"status":{"seen":7}}')
    got = json.loads(kubectl("get", "widget", "cli-one", "-o", "json"))
    assert got["status"]["seen"] == 7
    assert got["spec"]["size"] == 2


def test_identities_and_rbac_are_enforced(control_plane: cluster.State, widget_crd: None) -> None:
    auth = client.AuthenticationV1Api(api(control_plane, "alice"))
    review = auth.create_self_subject_review({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert review.status.user_info.username == "alice"
    assert "approvers" in review.status.user_info.groups

    objects = client.CustomObjectsApi(api(control_plane, "mallory"))
    with pytest.raises(ApiException) as refused:
        objects.list_namespaced_custom_object(GROUP, "v1", "default", PLURAL)
    assert refused.value.status == 403

    # Granting a Role makes the same call succeed: the refusal came from RBAC, not from a broken login.
    rbac = client.RbacAuthorizationV1Api(api(control_plane))
    rbac.create_namespaced_role(
        "default",
        {
            "metadata": {"name": "widget-reader"},
            "rules": [{"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        "default",
        {
            "metadata": {"name": "mallory-widget-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "widget-reader"},
            "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )

    def granted() -> bool:
        try:  # the authorizer sees a new binding after its informer does: a 403 until then
            return objects.list_namespaced_custom_object(GROUP, "v1", "default", PLURAL) is not None
        except ApiException as exc:
            if exc.status != 403:
                raise
            return False

    eventually(granted, what="RBAC grant visible")


def test_owner_references_are_garbage_collected(control_plane: cluster.State) -> None:
    core = client.CoreV1Api(api(control_plane))
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": "gc-owner"}})
    core.create_namespaced_config_map(
        "default",
        {
            "metadata": {
                "name": "gc-child",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "gc-owner", "uid": owner.metadata.uid}
                ],
            }
        },
    )
    core.delete_namespaced_config_map("gc-owner", "default")

    def child_gone() -> bool:
        try:
            core.read_namespaced_config_map("gc-child", "default")
        except ApiException as exc:
            return bool(exc.status == 404)  # the client has no type hints: exc.status is Any
        return False

    eventually(child_gone, timeout=60, what="owned ConfigMap garbage-collected")


def test_namespace_deletion_removes_its_content(control_plane: cluster.State) -> None:
    core = client.CoreV1Api(api(control_plane))
    name = f"ns-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "inside"}})
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            return bool(exc.status == 404)  # the client has no type hints: exc.status is Any
        return False

    eventually(gone, timeout=60, what="namespace finalized by the namespace controller")


def test_kopf_operator_reacts_and_patches_status(
    control_plane: cluster.State, widget_crd: None, tmp_path: Path
) -> None:
    operator_file = tmp_path / "widget_operator.py"
    operator_file.write_text(
        "import kopf\n"
        "@kopf.on.login()\n"
        "def login(**kwargs):\n"
        "    return kopf.login_with_kubeconfig(**kwargs)\n"
        f"@kopf.on.create('{GROUP}', 'v1', '{PLURAL}')\n"
        "def created(spec, patch, **_):\n"
        "    patch.status['phase'] = 'Seen'\n"
        "    patch.status['seen'] = spec['size'] * 10\n"
    )
    objects = client.CustomObjectsApi(api(control_plane))
    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 10
    with KopfRunner(["run", "--standalone", "--namespace=default", str(operator_file)], settings=settings, timeout=60):
        objects.create_namespaced_custom_object(GROUP, "v1", "default", PLURAL, widget("kopf-one", 4))

        def patched() -> dict[str, Any] | None:
            obj = objects.get_namespaced_custom_object(GROUP, "v1", "default", PLURAL, "kopf-one")
            status: dict[str, Any] | None = obj.get("status")
            return status if status and status.get("phase") == "Seen" else None

        status = eventually(patched, what="kopf handler patched status")
    assert status["seen"] == 40
