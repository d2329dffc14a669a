"""CEL, the Kubernetes API's expression language, as resources use it: conditions and `$(...)` placeholders.

Expressions are compiled (parsed and type-checked against the variables a field may use) when a resource is
admitted, so a typo or an unknown variable is refused at `kubectl apply`, naming the field and the position.
Evaluation happens elsewhere, in a sandboxed process (`steadfast.expressions.sandbox`): CEL bounds
iterations but not memory, and a hostile expression must not take the operator down.

The implementation is Google's cel-expr-python (the C++ CEL runtime): full fidelity to the CEL spec the
API server implements, and about 16 µs per evaluation.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext import ext_optional

MAX_LENGTH = 1024  # characters of one expression; the runtime bounds iterations, this bounds the rest
OPEN = "$("

# What each place an expression may appear can see. Requests are rendered before they are sent; conditions
# and outputs see the response as well.
TASK = frozenset({"task", "saga", "outputs", "params"})  # params: a templated saga's parameters
MONITOR = frozenset({"monitor"})
ALERT = frozenset({"monitor", "alert"})
REQUEST = frozenset({"request"})
VARIABLES = TASK | MONITOR | ALERT | REQUEST | {"response", "object"}

# The fields of each variable (maps to CEL, so a misspelt field would only fail at run time): checked when an
# expression compiles. `outputs` holds what the saga declares; that is checked by the saga's spec.
FIELDS: dict[str, frozenset[str]] = {
    "response": frozenset({"status", "headers", "body", "durationMs"}),
    "task": frozenset({"id", "title", "assignee", "priority"}),
    "saga": frozenset({"name", "namespace", "uid"}),
    "monitor": frozenset({"name", "namespace", "checkCount", "healthy", "consecutiveFailures"}),
    "alert": frozenset({"state", "severity", "lastError"}),
    "request": frozenset({"name", "namespace", "subject", "requestedBy", "approvedBy"}),
}
_FIELD_USE = re.compile(r"(?<![\w.])(" + "|".join(FIELDS) + r")\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
_TRIPLE = '"' * 3
_STRING = re.compile(
    "|".join(
        [
            re.escape(_TRIPLE) + r"[\s\S]*?" + re.escape(_TRIPLE),
            re.escape("'" * 3) + r"[\s\S]*?" + re.escape("'" * 3),
            r'"(?:\\.|[^"\\])*"',
            r"'(?:\\.|[^'\\])*'",
        ]
    )
)

_ERROR = re.compile(r"ERROR: <input>:(-?\d+):(-?\d+): ([^\n]*)")


class ExpressionError(ValueError):
    """An expression that does not compile; `message` names the position (line:column) and the problem."""


@dataclass(frozen=True)
class Placeholder:
    """One `$(...)` in a string: the expression and where it starts in the string (0-based)."""

    source: str
    offset: int


def responding(scope: frozenset[str], answer: str = "response") -> frozenset[str]:
    """The scope of a condition or an output: the request's, plus its answer (`response`, or a Kubernetes `object`)."""
    return scope | {answer}


@functools.cache
def _environment(scope: frozenset[str]) -> cel.Env:
    kinds = {name: cel.Type.Map(cel.Type.STRING, cel.Type.DYN) for name in sorted(scope)}
    return cel.NewEnv(variables=kinds, extensions=[ext_optional.ExtOptional()])


@functools.lru_cache(maxsize=4096)
def compile_expression(source: str, scope: frozenset[str]) -> cel.Expression:
    """The checked program of `source`, or ExpressionError naming line:column and what is wrong."""
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(source)} characters long, more than the {MAX_LENGTH} allowed")
    if not source.strip():
        raise ExpressionError("expression is empty")
    try:
        program = _environment(scope).compile(source)
    except RuntimeError as exc:
        problems = [f"{line}:{column}: {_tidy(what)}" for line, column, what in _ERROR.findall(str(exc))]
        text = "; ".join(problems) or str(exc).splitlines()[0]
        if "undeclared reference" in text:
            text += f" (variables here: {', '.join(sorted(scope))})"
        raise ExpressionError(text) from None
    _check_fields(source, scope)
    return program


def _check_fields(source: str, scope: frozenset[str]) -> None:
    blanked = _STRING.sub(lambda m: " " * len(m.group()), source)  # keeps offsets, hides string contents
    for match in _FIELD_USE.finditer(blanked):
        variable, name = match.groups()
        if variable in scope and name not in FIELDS[variable]:
            line = source.count("\n", 0, match.start(2)) + 1
            column = match.start(2) - (source.rfind("\n", 0, match.start(2)) + 1) + 1
            known = ", ".join(sorted(FIELDS[variable]))
            raise ExpressionError(f"{line}:{column}: {variable} has no field {name!r} (it has: {known})")


def _tidy(what: str) -> str:
    what = what.replace(" (in container '')", "")
    return what.split(" expecting {", 1)[0]


def placeholders(text: str) -> Iterator[Placeholder]:
    """The `$(...)` placeholders of `text`; `$$(` is a literal `$(`. Unbalanced ones raise ExpressionError.

    The closing parenthesis is found by CEL's own lexical rules (nested brackets, quoted strings), so a
    placeholder may hold `)` inside a string literal.
    """
    i = 0
    while (start := text.find(OPEN, i)) >= 0:
        if start > 0 and text[start - 1] == "$":
            i = start + len(OPEN)
            continue
        end = _closing(text, start + len(OPEN))
        if end < 0:
            raise ExpressionError(f"placeholder at offset {start} is not closed: add the ')'")
        yield Placeholder(text[start + len(OPEN) : end], start)
        i = end + 1


def _code(text: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """(position, character, bracket depth) of every character of `text` outside CEL string literals."""
    depth = 0
    quote = ""
    i = start
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif text.startswith(quote, i):
                i += len(quote) - 1
                quote = ""
        elif char in "\"'":
            quote = char * 3 if text.startswith(char * 3, i) else char
            i += len(quote) - 1
        else:
            depth -= char in ")]}"
            yield i, char, depth
            depth += char in "([{"
        i += 1


def _closing(text: str, start: int) -> int:
    """Where the `)` that closes a placeholder opened just before `start` is, or -1."""
    for i, char, depth in _code(text, start):
        if depth < 0:
            return i if char == ")" else -1
    return -1


def check_template(text: str, scope: frozenset[str]) -> None:
    """Compile every placeholder of `text` in `scope`; the error names the placeholder's offset."""
    for found in placeholders(text):
        try:
            compile_expression(found.source, scope)
        except ExpressionError as exc:
            raise ExpressionError(f"$({found.source}) at offset {found.offset}: {exc}") from None


def problems_in(
    templates: list[tuple[str, str]], conditions: list[tuple[str, str | None]], scope: frozenset[str]
) -> list[str]:
    """What does not compile, by field: placeholders of `templates` in `scope`, `conditions` as given."""
    problems: list[str] = []
    for field, text in templates:
        try:
            check_template(text, scope)
        except ExpressionError as exc:
            problems.append(f"{field}: {exc}")
    for field, condition in conditions:
        if condition is not None:
            try:
                compile_expression(condition, scope)
            except ExpressionError as exc:
                problems.append(f"{field}: {exc}")
    return problems


def sources_in(templates: list[tuple[str, str]], conditions: list[str | None]) -> list[str]:
    """Every expression's source: the placeholders of `templates` that parse, then the set `conditions`."""
    sources: list[str] = []
    for _, text in templates:
        with contextlib.suppress(ExpressionError):  # reported by problems_in
            sources += [found.source for found in placeholders(text)]
    return sources + [c for c in conditions if c is not None]


def strings_of(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in JSON data with its path (`.a[0].b`), keys included: placeholders may sit in either."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            for key, child in item.items():
                yield f"{where}.{key}", str(key)
                stack.append((child, f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{n}]") for n, child in enumerate(item))


_COMPARISON = re.compile(r"==|!=|<=|>=|<|>")


def left_operand(source: str) -> str | None:
    """The left side of a condition that is one comparison (`response.body.status == "UP"`), else None.

    A failed condition is shown with the value its left side had, which is what the user wants to see.
    """
    for i, char, depth in _code(source):
        if depth != 0:
            continue
        if source.startswith(("&&", "||"), i) or char == "?":
            return None
        match = _COMPARISON.match(source, i)
        if match:
            rest = source[match.end() :]
            if _COMPARISON.search(_unquoted(rest)) or "&&" in rest or "||" in rest:
                return None
            return source[:i].strip() or None
    return None


def _unquoted(text: str) -> str:
    return re.sub(r"\"(\\.|[^\"\\])*\"|'(\\.|[^'\\])*'", "", text)
