"""The `kubernetes` action without a server: its schema, undo records, impersonation headers and judging."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from pydantic import ValidationError

from steadfast.api.action import Action
from steadfast.api.monitor import HealthMonitorSpec
from steadfast.api.object_action import ObjectAction
from steadfast.api.saga import TaskSagaSpec
from steadfast.expressions.sandbox import Sandbox
from steadfast.identity import User
from steadfast.objects import Answer, KubeRequests, Objects, Resource, restore_patch
from steadfast.records import Actor
from steadfast.seals import SEALER
from steadfast.webhooks import check_depth, monitor_stamps


def cm(**meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", **meta}}


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        ObjectAction.model_validate(data)
    return str(caught.value)


def test_an_object_is_named_in_full() -> None:
    assert "metadata.name is required" in refused({"object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}})
    assert "generateName is not supported" in refused(
        {"object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "c-"}}}
    )
    assert "needs apiVersion, kind" in refused({"object": {"kind": "ConfigMap", "metadata": {"name": "c"}}})


def test_secrets_waits_and_deletes_are_refused_where_they_make_no_sense() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
    assert "do not touch Secrets" in refused({"object": secret})
    assert "wait needs successWhen" in refused({"operation": "wait", "object": cm()})
    assert "names an object only" in refused({"operation": "delete", "object": {**cm(), "data": {"a": "b"}}})
    assert "names an object only" in refused({"operation": "delete", "object": cm(labels={"a": "b"})})
    assert ObjectAction.model_validate({"operation": "delete", "object": cm(namespace="other")}).name == "c"


def test_expressions_are_checked_with_the_object_in_scope() -> None:
    action = Action.model_validate(
        {"kubernetes": {"object": cm(labels={"task": "$(task.id)"}), "successWhen": "object.status.ready"}}
    )
    assert action.answer == "object"
    assert action.expression_problems(frozenset({"task", "saga", "outputs"}), "spec.steps[0].action") == []
    bad = Action.model_validate({"kubernetes": {"object": cm(labels={"x": "$(nope.id)"}), "failureWhen": "response"}})
    problems = bad.expression_problems(frozenset({"task"}), "a")
    assert any(p.startswith("a.kubernetes.object.metadata.labels.x") for p in problems), problems
    assert any(p.startswith("a.kubernetes.failureWhen") for p in problems), problems
    with pytest.raises(ValidationError, match="exactly one of: http, kubernetes"):
        Action.model_validate({"http": {"url": "http://a.b/"}, "kubernetes": {"object": cm()}})


def test_step_outputs_read_object_not_response() -> None:
    def spec(output: str) -> dict[str, Any]:
        step = {"name": "s", "action": {"kubernetes": {"object": cm()}}, "outputs": {"uid": output}}
        return {"task": {"id": "t"}, "steps": [step]}

    assert TaskSagaSpec.model_validate(spec("object.metadata.uid")).steps[0].outputs == {"uid": "object.metadata.uid"}
    with pytest.raises(ValidationError, match="response"):
        TaskSagaSpec.model_validate(spec("response.body.id"))


def test_a_monitor_only_reads_its_target() -> None:
    wait = {"operation": "wait", "object": cm(), "successWhen": 'object.data.state == "ok"'}
    assert HealthMonitorSpec.model_validate({"target": {"kubernetes": wait}}).target.kubernetes is not None
    with pytest.raises(ValidationError, match="a monitor only reads its target"):
        HealthMonitorSpec.model_validate({"target": {"kubernetes": {"object": cm()}}})


def test_restore_patch_puts_back_each_value_the_manifest_set() -> None:
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "a", "labels": {"tier": "x", "new": "y"}},
        "spec": {"replicas": 0, "paused": True, "template": {"spec": {"containers": [{"name": "c"}]}}},
    }
    live = {
        "metadata": {"name": "web", "labels": {"tier": "web", "other": "kept"}},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "old"}]}}},
    }
    assert restore_patch(manifest, live) == {
        "metadata": {"labels": {"tier": "web", "new": None}},
        "spec": {"replicas": 3, "paused": None, "template": {"spec": {"containers": [{"name": "old"}]}}},
    }


def test_impersonation_sends_one_header_per_group() -> None:
    config = client.Configuration(host="https://127.0.0.1:6443", api_key={"authorization": "tok"})
    config.api_key_prefix["authorization"] = "Bearer"
    requests = KubeRequests(client.ApiClient(config))
    headers = requests.headers(Actor(user="alice", groups=["approvers", "system:authenticated"]))
    assert headers["Impersonate-User"] == "alice"
    assert headers.getlist("Impersonate-Group") == ["approvers", "system:authenticated"]
    assert headers["authorization"] == "Bearer tok"
    assert "Impersonate-User" not in requests.headers(None)  # discovery and the shared watches: the operator


def test_actor_comes_from_the_sealed_stamps_only() -> None:
    new: dict[str, Any] = {"kind": "TaskSaga", "metadata": {"name": "s", "namespace": "n"}, "spec": {"x": 1}}
    stamps = monitor_stamps("CREATE", User("bob", frozenset({"a", "b"})), None, new, namespace="n")
    assert stamps is not None
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = {
        **new,
        "metadata": {**new["metadata"], "generation": 1, "creationTimestamp": created, "annotations": stamps},
    }
    assert Actor.of(body) == Actor(user="bob", groups=["a", "b"])
    typed = {**body, "metadata": {**body["metadata"], "annotations": {"steadfast.dev/requested-by": "bob"}}}
    assert Actor.of(typed) is None
    assert Actor.of({"metadata": {}}) is None


def test_a_monitor_acts_as_whoever_last_changed_its_spec() -> None:
    carol = User("carol", frozenset({"sre"}))
    old = {"kind": "HealthMonitor", "spec": {"target": 1}, "metadata": {"name": "m", "uid": "u", "generation": 1}}
    stamps = monitor_stamps("CREATE", carol, None, old, namespace="n")
    assert stamps is not None
    assert (stamps["steadfast.dev/requested-by"], stamps["steadfast.dev/requested-by-groups"]) == ("carol", '["sre"]')
    assert monitor_stamps("UPDATE", carol, old, {**old, "spec": {"target": 2}}, namespace="n") is not None
    assert monitor_stamps("UPDATE", carol, old, old, namespace="n") is None  # metadata-only: stamps stay


@pytest.fixture(scope="module")
def objects() -> Iterator[Objects]:
    sandbox = Sandbox(children=1)
    yield Objects(KubeRequests(client.ApiClient(client.Configuration(host="http://127.0.0.1:1"))), lambda: sandbox)
    sandbox.close()


def test_judging_waits_while_a_field_is_missing_and_fails_on_failure_when(objects: Objects) -> None:
    action = ObjectAction.model_validate(
        {
            "object": cm(),
            "successWhen": "object.status.succeeded >= 1",
            "failureWhen": 'object.status.?phase.orValue("") == "Failed"',
        }
    )

    def judge(obj: Any) -> Any:
        return objects.judge(action, obj, said="apply", variables={}, outputs={"name": "object.metadata.name"})

    assert judge({"metadata": {"name": "c"}}) is None  # no status yet: pending, not failed
    assert judge({"metadata": {"name": "c"}, "status": {"succeeded": 0}}) is None
    failed = judge({"metadata": {"name": "c"}, "status": {"phase": "Failed"}})
    assert failed is not None and not failed.ok and "failureWhen holds" in failed.message
    done = judge({"metadata": {"name": "c"}, "status": {"succeeded": 1}})
    assert done is not None and done.ok and done.outputs == {"name": "c"}
    shown = objects.not_yet(action, {"status": {"succeeded": 0}}, {}, "wait")
    assert shown.failed_condition == "object.status.succeeded >= 1 (was 0)"


def test_admission_refuses_objects_nested_too_deep() -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(40):
        deep = {"x": deep}
    spec = {"task": {"id": "t"}, "steps": [{"name": "s", "action": {"kubernetes": {"object": {**cm(), "data": deep}}}}]}
    assert check_depth({"spec": spec}) == "spec.steps[0].action.kubernetes.object is nested more than 32 levels deep"
    with pytest.raises(ValidationError, match="nested more than 32 levels"):
        TaskSagaSpec.model_validate(spec)


class ScriptedApi(KubeRequests):
    """The API server as a dict of objects by path: enough to see what perform() sends and records."""

    def __init__(self) -> None:
        super().__init__(client.ApiClient(client.Configuration(host="http://127.0.0.1:1")))
        self.store: dict[str, dict[str, Any]] = {}
        self.sent: list[tuple[str, str, str | None]] = []

    def resource(self, api_version: str, kind: str) -> Resource:
        return Resource(api_version, kind.lower() + "s", True)

    def call(self, method: str, path: str, *, actor: Actor | None, body: Any = None, **kw: Any) -> Answer:
        self.sent.append((method, path, actor.user if actor else None))
        found = self.store.get(path)
        if method == "GET":
            return Answer(200, found) if found else Answer(404, {"message": "not found"})
        if method == "PATCH":
            merged = {**(found or {}), **body, "metadata": {**(found or {}).get("metadata", {}), **body["metadata"]}}
            merged["metadata"].setdefault("uid", f"uid-{len(self.store)}")
            self.store[path] = merged
            return Answer(200, merged)
        raise AssertionError(method)


def test_a_repeated_apply_still_knows_it_created_the_object() -> None:
    api = ScriptedApi()
    objects = Objects(api, lambda: Sandbox(children=1))
    action = ObjectAction.model_validate({"object": cm(labels={"a": "b"})})
    bob = Actor(user="bob", groups=["team"])
    obj, target = objects.locate(action, namespace="team-a", variables={})
    first, undo = objects.perform(action, obj, target, actor=bob, key="sf-key")
    assert first.ok and undo is not None and undo.created and undo.uid == "uid-0"
    assert first.body["metadata"]["annotations"] == {"steadfast.dev/created-by": SEALER.mark("sf-key")}
    _, undo_again = objects.perform(action, obj, target, actor=bob, key="sf-key")  # at-least-once delivery
    assert undo_again == undo  # still "created": a compensation deletes it, by the same UID
    assert {who for _, _, who in api.sent} == {"bob"}  # every request impersonates the creator
    _, undo_other = objects.perform(action, obj, target, actor=bob, key="sf-another-step")
    assert undo_other is not None and not undo_other.created  # another step found it: it restores instead
    mark = "steadfast.dev/undo-another-step"
    assert undo_other.restore == {"metadata": {"labels": {"a": "b"}, "annotations": {mark: None}}}


def test_a_repeated_patch_still_restores_the_values_from_before_the_first() -> None:
    api = ScriptedApi()
    objects = Objects(api, lambda: Sandbox(children=1))
    api.store["/api/v1/namespaces/team-a/configmaps/c"] = {**cm(uid="u-1"), "data": {"level": "1", "keep": "x"}}
    action = ObjectAction.model_validate({"operation": "patch", "object": {**cm(), "data": {"level": "9"}}})
    obj, target = objects.locate(action, namespace="team-a", variables={})
    bob = Actor(user="bob")
    _, first = objects.perform(action, obj, target, actor=bob, key="sf-0123456789abcdef0123456789")
    _, again = objects.perform(action, obj, target, actor=bob, key="sf-0123456789abcdef0123456789")
    assert api.store[target.path]["data"] == {"level": "9"}  # (the fake replaces data; the server would merge)
    mark = "steadfast.dev/undo-0123456789abcdef0123"
    expected = {"data": {"level": "1"}, "metadata": {"annotations": {mark: None}}}
    assert first is not None and again is not None and first.restore == again.restore == expected


def test_planted_marks_do_not_turn_an_undo_into_a_delete_or_a_chosen_restore() -> None:
    """#23 class 4: the step's key is computable from the saga's UID; marks planted with it are not believed."""
    api = ScriptedApi()
    objects = Objects(api, lambda: Sandbox(children=1))
    key = "sf-0123456789abcdef0123456789"
    mark = "steadfast.dev/undo-0123456789abcdef0123"
    planted_restore = json.dumps({"data": {"level": "evil"}})
    api.store["/api/v1/namespaces/team-a/configmaps/c"] = {
        **cm(uid="u-1"),
        "data": {"level": "1"},
        "metadata": {
            **cm(uid="u-1")["metadata"],
            "annotations": {"steadfast.dev/created-by": key, mark: planted_restore},
        },
    }
    action = ObjectAction.model_validate({"operation": "patch", "object": {**cm(), "data": {"level": "9"}}})
    obj, target = objects.locate(action, namespace="team-a", variables={})
    _, undo = objects.perform(action, obj, target, actor=Actor(user="bob"), key=key)
    assert undo is not None and not undo.created  # restored, never deleted
    assert undo.restore == {"data": {"level": "1"}, "metadata": {"annotations": {mark: None}}}
