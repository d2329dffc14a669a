"""Attack class 2 (#23): reading a Secret one may not read, through a saga that sends it.

mallory may create TaskSagas in the namespace and nothing else (no Secrets). The namespace holds a referable
Secret. The sample task service's `/echo/{name}` is the careless service: it answers with the request's
headers in its body, in a response header and base64-encoded in its reason phrase, and follows `?to=` with a
redirect. Whatever mallory writes, the Secret's value must not come back in any encoding, and must not go
anywhere its writer did not allow.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService, allow_users
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from steadfast.dev.controlplane import cluster

pytestmark = [pytest.mark.controlplane, pytest.mark.adversarial]

TOKEN = "Bearer tok-2f9c41d7e8"
SEALED = "but the request carries a Secret (header Authorization from Secret notify)"


@pytest.fixture
def sagas(kube: client.ApiClient, namespace: str, operator: Operator) -> Resources:
    allow_users(kube, namespace, ("mallory",))
    return Resources(kube, namespace, "tasksagas", "TaskSaga")


def make_secret(kube: client.ApiClient, namespace: str, send_to: str | None) -> None:
    annotations = {"steadfast.dev/send-to": send_to} if send_to is not None else {}
    metadata = {"name": "notify", "labels": {"steadfast.dev/referable": "true"}, "annotations": annotations}
    client.CoreV1Api(kube).create_namespaced_secret(namespace, {"metadata": metadata, "stringData": {"token": TOKEN}})


def as_mallory(state: cluster.State, namespace: str, name: str, spec: dict[str, Any]) -> None:
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=state.kubeconfig, context="mallory"))
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TaskSaga", "metadata": {"name": name}, "spec": spec}
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "tasksagas", body)


def refused(action: Callable[[], Any]) -> str:
    with pytest.raises(ApiException) as caught:
        action()
    assert caught.value.status in (400, 403, 422), caught.value.body
    return str(caught.value.body)


def echo_step(url: str, **extra: Any) -> dict[str, Any]:
    header = {"name": "Authorization", "valueFrom": {"secretKeyRef": {"name": "notify", "key": "token"}}}
    return {"name": "send", "action": {"http": {"url": url, "headers": [header], **extra.pop("http", {})}}, **extra}


def saga(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"task": {"id": "t-leak"}, "steps": list(steps)}


def received(svc: TaskService, path: str) -> list[dict[str, Any]]:
    return [d for d in svc.stats()["deliveries"] if d["path"] == path]


def assert_never_shown(sagas: Resources, name: str) -> None:
    """Neither the value nor its base64 (with or without the scheme) is in the saga or its Events."""
    shown = str(sagas.get(name)) + str(sagas.events(name))
    for form in (TOKEN, "tok-2f9c41d7e8", base64.b64encode(TOKEN.encode()).decode()[:16]):
        assert form not in shown, form


def test_reading_the_secret_back_is_refused_at_apply_naming_the_field(
    control_plane: cluster.State, kube: client.ApiClient, sagas: Resources, task_service: TaskService
) -> None:
    ns = sagas.namespace
    make_secret(kube, ns, "127.0.0.1")
    url = f"{task_service.url}/echo/{ns}-apply"
    leaks = [
        "string(bytes(response.body.headers.Authorization))",
        'response.headers["x-echo-authorization"]',
        "response",
    ]
    oracles = [
        'response.body.headers.Authorization.matches("^Bearer t")',
        "size(response.body.headers.Authorization) > 20",
    ]
    attempts = [("outputs.leak", echo_step(url, outputs={"leak": leak})) for leak in leaks]
    attempts += [("action.http.successWhen", echo_step(url, http={"successWhen": test})) for test in oracles]
    for n, (field, step) in enumerate(attempts):
        message = refused(partial(as_mallory, control_plane, ns, f"leak-{n}", saga(step)))
        assert f"spec.steps[0].{field}: reads response" in message and SEALED in message, message
        assert "may be read only as response.status and response.durationMs" in message
        assert sagas.get(f"leak-{n}") is None
    # A compensation that sends the Secret is sealed too.
    undo = echo_step(url, http={"successWhen": "response.body.ok"})["action"]
    plain = {"name": "plain", "action": {"http": {"url": f"{task_service.url}/records", "method": "POST"}}}
    message = refused(lambda: as_mallory(control_plane, ns, "leak-undo", saga({**plain, "compensation": undo})))
    assert "spec.steps[0].compensation.http.successWhen: reads response.body" in message
    # And so is a HealthMonitor's condition (created by the admin: the rule holds for everyone).
    monitor = {
        "target": echo_step(url)["action"],
        "conditions": ['response.body.headers.Authorization.startsWith("Bearer t")'],
    }
    message = refused(lambda: Resources(kube, ns, "healthmonitors", "HealthMonitor").create("oracle", monitor))
    assert f"spec.conditions[0]: reads response.body, {SEALED}" in message
    assert received(task_service, f"/echo/{ns}-apply") == []


def test_without_send_to_the_secret_is_not_sent_outside_its_namespace(
    control_plane: cluster.State, kube: client.ApiClient, sagas: Resources, task_service: TaskService
) -> None:
    ns = sagas.namespace
    make_secret(kube, ns, None)
    path = f"/echo/{ns}-out"
    as_mallory(control_plane, ns, "out", saga(echo_step(task_service.url + path)))
    done = sagas.wait_phase("out", "Failed", "Succeeded", "Compensated")["status"]
    assert done["phase"] == "Failed"
    message = done["steps"][0]["message"]
    assert f"Secret {ns}/notify may not be sent to http://127.0.0.1:" in message, message
    assert f"goes only to Services of its own namespace ({ns})" in message
    assert received(task_service, path) == []  # never sent
    assert_never_shown(sagas, "out")


def test_a_name_that_looks_like_the_namespace_does_not_pass_send_to(
    control_plane: cluster.State, kube: client.ApiClient, sagas: Resources, task_service: TaskService
) -> None:
    ns = sagas.namespace
    make_secret(kube, ns, f"*.{ns}.svc, *.{ns}.svc.cluster.local")
    path = f"/echo/{ns}-lookalike"
    as_mallory(control_plane, ns, "lookalike", saga(echo_step(task_service.url + path)))
    done = sagas.wait_phase("lookalike", "Failed", "Succeeded", "Compensated")["status"]
    assert "its steadfast.dev/send-to annotation allows only" in done["steps"][0]["message"]
    assert received(task_service, path) == []


def test_an_allowed_host_gets_the_secret_and_only_the_status_comes_back(
    control_plane: cluster.State, kube: client.ApiClient, sagas: Resources, task_service: TaskService
) -> None:
    ns = sagas.namespace
    port = task_service.url.rsplit(":", 1)[1]
    make_secret(kube, ns, f"hooks.example.com, http://127.0.0.1:{port}")
    path = f"/echo/{ns}-ok"
    step = echo_step(
        task_service.url + path,
        http={"successWhen": "response.status == 200 && response.durationMs < 60000"},
        outputs={"code": "response.status"},
    )
    as_mallory(control_plane, ns, "ok", saga(step))
    done = sagas.wait_phase("ok", "Succeeded", "Failed", "Compensated")["status"]
    assert done["phase"] == "Succeeded", done
    assert done["steps"][0]["outputs"] == {"code": 200}
    assert done["steps"][0]["message"].endswith(": HTTP 200")  # the reason phrase (the echo) is not shown
    assert [d["headers"].get("Authorization") for d in received(task_service, path)] == [TOKEN]
    assert_never_shown(sagas, "ok")


def test_a_redirect_does_not_carry_the_secret_elsewhere(
    control_plane: cluster.State, kube: client.ApiClient, sagas: Resources, task_service: TaskService
) -> None:
    ns = sagas.namespace
    make_secret(kube, ns, "127.0.0.1")
    stolen = f"/echo/{ns}-stolen"
    path = f"/echo/{ns}-redirect"
    as_mallory(control_plane, ns, "redirect", saga(echo_step(f"{task_service.url}{path}?to={stolen}")))
    done = sagas.wait_phase("redirect", "Failed", "Succeeded", "Compensated")["status"]
    assert done["phase"] == "Failed" and done["steps"][0]["message"].endswith(": HTTP 302")
    assert len(received(task_service, path)) == 1
    assert received(task_service, stolen) == []
