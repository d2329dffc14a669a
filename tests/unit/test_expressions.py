"""Expressions: compiling at admission, placeholders, the sandbox's limits against hostile expressions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from steadfast.expressions.language import (
    MONITOR,
    TASK,
    ExpressionError,
    check_template,
    compile_expression,
    left_operand,
    placeholders,
    responding,
)
from steadfast.expressions.sandbox import Sandbox
from steadfast.expressions.templates import map_strings, render, strings_in

RESPONSE = frozenset({"response"})


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox(children=1, deadline=10.0)
    yield box
    box.close()


def test_unknown_variable_names_position_and_what_is_known() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("outputz.id", TASK)
    assert "undeclared reference to 'outputz" in str(caught.value)
    assert "(variables here: outputs, params, saga, task)" in str(caught.value)
    assert str(caught.value).startswith("1:")


def test_syntax_error_names_line_and_column() -> None:
    with pytest.raises(ExpressionError, match=r"^1:19: Syntax error"):
        compile_expression("response.body.id +", RESPONSE)


def test_unknown_fields_of_known_variables_are_refused_with_position() -> None:
    with pytest.raises(ExpressionError, match=r"^1:10: response has no field 'bdy' \(it has: body, durationMs"):
        compile_expression('response.bdy.status == "UP"', RESPONSE)
    compile_expression('response.body.x == "response.bdy"', RESPONSE)  # inside a string it is text


def test_response_is_only_known_where_a_response_exists() -> None:
    compile_expression('response.body.status == "UP"', responding(MONITOR))
    with pytest.raises(ExpressionError, match="undeclared reference to 'response"):
        compile_expression('response.body.status == "UP"', MONITOR)


def test_overlong_and_empty_expressions_are_refused() -> None:
    with pytest.raises(ExpressionError, match="more than the 1024 allowed"):
        compile_expression("1 + " * 300 + "1", RESPONSE)
    with pytest.raises(ExpressionError, match="empty"):
        compile_expression("  ", RESPONSE)


def test_placeholders_respect_quotes_nesting_and_escapes() -> None:
    found = list(placeholders('a $(task.id) b $(saga["name"] + ")") c $$(literal) d'))
    assert [p.source for p in found] == ["task.id", 'saga["name"] + ")"']
    assert found[0].offset == 2
    with pytest.raises(ExpressionError, match="not closed"):
        list(placeholders("http://x/$(task.id"))
    with pytest.raises(ExpressionError, match=r"\$\(task.nope \+\) at offset 3: 1:"):
        check_template("id=$(task.nope +)", TASK)


def test_left_operand_of_a_single_comparison() -> None:
    assert left_operand('response.body.status == "UP"') == "response.body.status"
    assert left_operand("response.durationMs < 300") == "response.durationMs"
    assert left_operand('response.body.a == "x" && response.status == 200') is None
    assert left_operand('response.body.s == "a==b"') == "response.body.s"
    assert left_operand("response.body.ok") is None


def test_render_keeps_types_for_whole_placeholders_and_escapes_urls(sandbox: Sandbox) -> None:
    variables = {"task": {"id": "a/b c"}, "outputs": {"ok": True, "n": 3}}
    url, whole, mixed, literal = render(
        [
            ("http://svc/records/$(task.id)?n=$(outputs.n)", lambda v: v.replace("/", "%2F").replace(" ", "%20")),
            ("$(outputs.n)", None),
            ("n=$(outputs.n), ok=$(outputs.ok)", None),
            ("$$(kept)", None),
        ],
        variables,
        sandbox,
    )
    assert url == "http://svc/records/a%2Fb%20c?n=3"
    assert whole == 3
    assert mixed == "n=3, ok=true"
    assert literal == "$(kept)"


def test_render_names_the_failing_placeholder(sandbox: Sandbox) -> None:
    with pytest.raises(ExpressionError, match=r"\$\(outputs.missing\): .*missing"):
        render([("$(outputs.missing)", None)], {"outputs": {}}, sandbox)


def test_map_strings_visits_keys_and_values_in_order() -> None:
    body = {"$(k)": ["a", {"b": "c"}], "n": 1}
    assert strings_in(body) == ["$(k)", "a", "b", "c", "n"]
    assert map_strings(body, str.upper) == {"$(K)": ["A", {"B": "C"}], "N": 1}


# ---- hostile expressions: each costs a child process at most, and the next call still works ----------


def test_memory_bomb_is_stopped(sandbox: Sandbox) -> None:
    s = "response.body.s"
    bomb = f"[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, {s}+{s}+{s})))"
    [result] = sandbox.evaluate([(bomb, RESPONSE)], {"response": {"body": {"s": "x" * 60000}}})
    assert result.error is not None and ("memory" in result.error or "limit" in result.error)
    [after] = sandbox.evaluate([("response.status", RESPONSE)], {"response": {"status": 204}})
    assert after.value == 204


def test_runaway_iteration_is_stopped(sandbox: Sandbox) -> None:
    nested = "response.body.l.all(a, response.body.l.all(b, response.body.l.all(c, a + b + c >= 0)))"
    [result] = sandbox.evaluate([(nested, RESPONSE)], {"response": {"body": {"l": list(range(300))}}})
    assert result.error is not None
    assert "budget" in result.error or "limit" in result.error


def test_a_child_that_misses_its_deadline_is_killed_and_replaced() -> None:
    box = Sandbox(children=1, deadline=0.001)  # no child answers that fast, not even its start-up
    try:
        [late] = box.evaluate([("1 + 1", RESPONSE)], {})
        box.deadline = 10.0
        [after] = box.evaluate([("1 + 1", RESPONSE)], {})
    finally:
        box.close()
    assert late.error is not None and "exceeded their time or memory limit" in late.error
    assert after.value == 2


def test_huge_results_are_refused(sandbox: Sandbox) -> None:
    [result] = sandbox.evaluate(
        [("response.body.s + response.body.s", RESPONSE)], {"response": {"body": {"s": "y" * 40000}}}
    )
    assert result.error is not None and "more than the 65536" in result.error


def test_runtime_errors_come_back_per_expression(sandbox: Sandbox) -> None:
    ok, missing, bad = sandbox.evaluate(
        [("response.body.id", RESPONSE), ("response.body.nope", RESPONSE), ("1 / 0", RESPONSE)],
        {"response": {"body": {"id": "p-1"}}},
    )
    assert ok.value == "p-1"
    assert missing.error is not None and "nope" in missing.error
    assert bad.error is not None and "divide by zero" in bad.error
