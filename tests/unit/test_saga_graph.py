"""Steps with dependsOn: what admission refuses (naming the field), and the order compensations wait for."""

from __future__ import annotations

from typing import Any

from steadfast.api.kinds import TASK_SAGA
from steadfast.api.saga import TaskSagaSpec, ancestors, dependencies, output_readers
from steadfast.webhooks import check_spec


def _step(name: str, *deps: str, url: str | None = None, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "action": {"http": {"url": url or f"http://tasks/{name}"}}, **more}
    if deps:
        out["dependsOn"] = list(deps)
    return out


def _spec(*steps: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"task": {"id": "t-1"}, "steps": list(steps), **more}


def refused(*steps: dict[str, Any], **more: Any) -> str:
    return check_spec(TASK_SAGA, "CREATE", None, {"spec": _spec(*steps, **more)}) or ""


def test_a_valid_graph_is_admitted_and_a_step_may_depend_on_a_later_one() -> None:
    assert refused(_step("deploy", "db", "queue"), _step("db"), _step("queue"), parallelism=2) == ""


def test_unknown_names_self_dependency_and_cycles_are_refused_naming_the_field() -> None:
    assert "spec.steps[1].dependsOn[0]: no step is named dbb" in refused(_step("db"), _step("app", "dbb"))
    assert "spec.steps[0].dependsOn[0]: step db cannot depend on itself" in refused(_step("db", "db"))
    loop = refused(_step("a", "c"), _step("b", "a"), _step("c", "b"))
    assert "spec.steps[0].dependsOn[0]: c closes a cycle (a -> c -> b -> a)" in loop
    assert loop.count("closes a cycle") == 1, "one cycle is reported once"


def test_parallelism_is_at_least_one() -> None:
    assert "parallelism" in refused(_step("a", "b"), _step("b"), parallelism=0)


def test_outputs_must_come_from_an_ancestor_in_a_graph() -> None:
    made: dict[str, Any] = {"outputs": {"dbId": "response.body.id"}}
    sibling = refused(_step("db", **made), _step("queue", url="http://tasks/$(outputs.dbId)"), _step("x", "db"))
    assert "spec.steps[1].action: outputs.dbId is not an ancestor's (a step it depends on, directly or not)" in sibling
    through = _step("deploy", "app", url="http://tasks/$(outputs.dbId)")
    assert refused(_step("db", **made), _step("app", "db"), through) == ""  # an ancestor through app
    undo: dict[str, Any] = {"compensation": {"http": {"url": "http://tasks/undo/$(outputs.dbId)"}}}
    assert "spec.steps[1].compensation" in refused(_step("db", **made), _step("queue", "x", **undo), _step("x"))


def test_dependencies_in_order_and_in_a_graph() -> None:
    in_order = TaskSagaSpec.model_validate(_spec(_step("a"), _step("b"), _step("c")))
    assert not in_order.is_graph()
    assert dependencies(in_order) == {"a": (), "b": ("a",), "c": ("b",)}
    graph = TaskSagaSpec.model_validate(_spec(_step("a"), _step("b"), _step("c", "a", "b")))
    assert graph.is_graph()
    assert dependencies(graph) == {"a": (), "b": (), "c": ("a", "b")}
    assert ancestors(dependencies(graph), "c") == {"a", "b"}


def test_output_readers_follow_the_graph() -> None:
    """Skipping a step leaves its descendants without its outputs, not its siblings (repair Skip's check)."""
    made: dict[str, Any] = {"outputs": {"dbId": "response.body.id"}}
    graph = TaskSagaSpec.model_validate(
        _spec(
            _step("db", **made),
            _step("other"),
            _step("app", "db"),
            _step("deploy", "app", url="http://tasks/$(outputs.dbId)"),
        )
    )
    assert [(r.where, r.name) for r in output_readers(graph, "db")] == [("spec.steps[3].action", "dbId")]


def test_depends_on_is_a_set() -> None:
    assert "spec.steps[1].dependsOn[1]: a is listed twice" in refused(_step("a"), _step("b", "a", "a"))


def test_an_empty_depends_on_declares_a_root_and_makes_a_graph() -> None:
    fan = TaskSagaSpec.model_validate(_spec({**_step("a"), "dependsOn": []}, {**_step("b"), "dependsOn": []}))
    assert fan.is_graph()
    assert dependencies(fan) == {"a": (), "b": ()}
    assert fan.to_wire()["steps"][0]["dependsOn"] == []
