"""Kubernetes actions reach only what their names say: names checked as Kubernetes names, Secrets refused as a resource.

A placeholder kind that renders to `Secret`, an apiVersion with `..` segments, or a `..` name or namespace
would otherwise reach Secrets or a whole cluster's collection; see docs/security.md (class 5).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from pydantic import ValidationError

from steadfast.api import kube_names
from steadfast.api.object_action import ObjectAction
from steadfast.expressions.sandbox import Sandbox
from steadfast.objects import Answer, KubeRequests, ObjectError, Objects, Resource, Target
from steadfast.records import Actor
from steadfast.waits import Registration, _Collection

CORE = {
    "resources": [
        {"name": "configmaps", "kind": "ConfigMap", "namespaced": True},
        {"name": "secrets", "kind": "Secret", "namespaced": True},
        {"name": "pods/log", "kind": "Pod", "namespaced": True},
        {"name": "namespaces", "kind": "Namespace", "namespaced": False},
    ]
}


class Discovery(KubeRequests):
    """Discovery answers for the core group and apps/v1; records every path asked for."""

    def __init__(self) -> None:
        super().__init__(client.ApiClient(client.Configuration(host="http://127.0.0.1:1")))
        self.paths: list[str] = []

    def call(self, method: str, path: str, *, actor: Actor | None, **kw: Any) -> Answer:
        self.paths.append(path)
        if path == "/api/v1":
            return Answer(200, CORE)
        if path == "/apis/apps/v1":
            return Answer(200, {"resources": [{"name": "deployments", "kind": "Deployment", "namespaced": True}]})
        return Answer(404, {"message": "not found"})


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox(children=1)
    yield box
    box.close()


@pytest.fixture
def api() -> Discovery:
    return Discovery()


@pytest.fixture
def objects(api: Discovery, sandbox: Sandbox) -> Objects:
    return Objects(api, lambda: sandbox)


def task(v: Any = "", k: Any = "", n: Any = "", ns: Any = "") -> dict[str, Any]:
    """The task fields placeholders read: id, title, assignee and priority stand in for the four names."""
    return {"task": {"id": v, "title": k, "assignee": n, "priority": ns}}


def locate(objects: Objects, obj: dict[str, Any], **values: Any) -> Target:
    action = ObjectAction.model_validate({"object": obj})
    return objects.locate(action, namespace="team-a", variables=task(**values))[1]


def obj(api_version: str = "v1", kind: str = "ConfigMap", name: str = "c", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, **meta}}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("apiVersion", "v1/../.."),
        ("apiVersion", "../v1"),
        ("apiVersion", "apps/../v1"),
        ("apiVersion", "Apps/v1"),
        ("apiVersion", "apps/v1/"),
        ("kind", "Secret/x"),
        ("kind", "../Secret"),
        ("name", ".."),
        ("name", "."),
        ("name", "a/b"),
        ("name", "a%2Fb"),
        ("name", "a b"),
        ("namespace", ".."),
        ("namespace", "a/b"),
        ("namespace", "Team"),
    ],
)
def test_literal_names_that_are_not_kubernetes_names_are_refused_at_admission(field: str, value: str) -> None:
    bad = obj(**({field: value} if field in ("name", "namespace") else {}))
    if field in ("apiVersion", "kind"):
        bad[field] = value
    with pytest.raises(ValidationError) as caught:
        ObjectAction.model_validate({"object": bad})
    where = f"metadata.{field}" if field in ("name", "namespace") else field
    assert f"kubernetes.object.{where} {value!r}" in str(caught.value)


def test_kubernetes_names_pass() -> None:
    for good in (
        obj(),
        obj("apps/v1", "Deployment", "web", namespace="team-b"),
        obj("rbac.authorization.k8s.io/v1", "ClusterRole", "system:aggregate-to-edit"),
        obj("example.com/v1beta1", "My-Kind", "a.b-c_d"),
        obj(namespace=""),
    ):
        assert kube_names.problems(good, "o") == []
        ObjectAction.model_validate({"object": good})


def test_placeholders_are_checked_once_rendered(objects: Objects, api: Discovery) -> None:
    templated = {"object": obj("$(task.id)", "$(task.title)", "$(task.assignee)", namespace="$(task.priority)")}
    ObjectAction.model_validate(templated)  # admission cannot know the values yet
    cases: list[tuple[dict[str, Any], str]] = [
        ({"v": "v1/../..", "k": "ConfigMap", "n": "c", "ns": "team-a"}, "apiVersion 'v1/../..'"),
        ({"v": "v1", "k": "../Secret", "n": "c", "ns": "team-a"}, "kind '../Secret'"),
        ({"v": "v1", "k": "ConfigMap", "n": "..", "ns": "team-a"}, "metadata.name '..'"),
        ({"v": "v1", "k": "ConfigMap", "n": "c", "ns": ".."}, "metadata.namespace '..'"),
        ({"v": "v1", "k": "ConfigMap", "n": 7, "ns": "team-a"}, "metadata.name must be a string"),
    ]
    for values, field in cases:
        with pytest.raises(ObjectError, match=re.escape(f"rendered kubernetes.object.{field}")):
            objects.locate(ObjectAction.model_validate(templated), namespace="team-a", variables=task(**values))
    assert api.paths == []  # refused before any request, discovery included


@pytest.mark.parametrize("kind", ["$(task.title)", '$(task.title + "")', "Se$(task.priority)"])
def test_secrets_are_refused_as_the_resource_whatever_the_spelling(objects: Objects, kind: str) -> None:
    with pytest.raises(ObjectError, match="do not touch Secrets"):
        locate(objects, obj(kind=kind), k="Secret", ns="cret")


def test_a_kind_discovery_does_not_resolve_is_refused(objects: Objects) -> None:
    with pytest.raises(ObjectError, match="serves no kind secret in v1"):
        locate(objects, obj(kind="$(task.title)"), k="secret")
    with pytest.raises(ObjectError, match="serves no kind Pod in v1"):  # only a subresource ("pods/log") names it
        locate(objects, obj(kind="Pod"))
    with pytest.raises(ObjectError, match="serves no kind Secret in v2"):
        locate(objects, obj(api_version="$(task.id)", kind="Secret"), v="v2")


def test_resolved_targets_are_namespaced_to_a_valid_namespace(objects: Objects) -> None:
    target = locate(objects, obj("apps/v1", "Deployment", "web"))
    assert target.path == "/apis/apps/v1/namespaces/team-a/deployments/web"
    assert (
        locate(objects, obj(namespace="$(task.priority)"), ns="team-b").collection
        == "/api/v1/namespaces/team-b/configmaps"
    )
    assert locate(objects, obj(kind="Namespace", name="x", namespace="ignored")).path == "/api/v1/namespaces/x"
    configmaps = Resource("v1", "configmaps", True)
    for namespace in ("..", None, "", "a/b"):
        with pytest.raises(ObjectError, match=r"metadata\.namespace"):
            Target(configmaps, namespace, "c")
    with pytest.raises(ObjectError, match=r"metadata\.name"):
        Target(configmaps, "team-a", "..")
    assert Resource("v1", "secrets", True).is_secrets and not Resource("example.com/v1", "secrets", True).is_secrets


def test_a_wait_judges_only_its_own_namespace_and_name() -> None:
    configmaps = Resource("v1", "configmaps", True)
    action = ObjectAction.model_validate({"operation": "wait", "object": obj(), "successWhen": "true"})

    def waiting(namespace: str) -> Registration:
        return Registration(f"i-{namespace}", "e", action, Target(configmaps, namespace, "c"), {}, {}, "wait", 0.0)

    collection = _Collection("/api/v1/namespaces/team-a/configmaps")
    mine, other = waiting("team-a"), waiting("team-b")
    collection.waiting = {mine.key: mine, other.key: other}
    assert collection.for_object(("team-a", "c")) == [mine]
    assert collection.for_object(("team-c", "c")) == []
