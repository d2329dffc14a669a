"""Which parts of a variable an expression reads, from its checked syntax tree (not from its text).

An action whose request carries a Secret may let its conditions and outputs read only the response's
status and duration: a body or a header could echo the Secret back in any encoding (`bytes(...)`, a
`matches` oracle). A text search for `response.body` is easy to dodge (`.response`, a comment between
`response` and `.body`, `response["body"]`, a comprehension over `response`), so the rule is checked on the
tree CEL's own parser and checker built. The tree comes out of the compiled program as a serialized
`cel.expr.CheckedExpr` (a protobuf); the few fields needed are read here with a minimal wire decoder.

Every identifier spelt like the variable counts as a read of it, even a comprehension's local variable of
that name: refusing a harmless shadowing is the price of never missing a real read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from steadfast.expressions.language import compile_expression

# cel.expr protobuf field numbers (cel/expr/syntax.proto and checked.proto).
_ANY_VALUE = 2
_CHECKED_EXPR = 4
_EXPR_IDENT, _EXPR_SELECT, _EXPR_CALL, _EXPR_LIST, _EXPR_STRUCT, _EXPR_COMPREHENSION = 4, 5, 6, 7, 8, 9
_NAME = 1  # Ident.name
_SELECT_OPERAND, _SELECT_FIELD = 1, 2
_CALL_TARGET, _CALL_ARGS = 1, 3
_LIST_ELEMENTS = 1
_STRUCT_ENTRIES, _ENTRY_MAP_KEY, _ENTRY_VALUE = 2, 3, 4
_COMPREHENSION_EXPRS = frozenset({2, 4, 5, 6, 7})  # iter_range, accu_init, loop_condition, loop_step, result
_COMPREHENSION_VARS = frozenset({1, 3, 8})  # iter_var, accu_var, iter_var2


@dataclass(frozen=True)
class Read:
    """One use of the variable: `field` when it is `variable.field` (or `has(variable.field)`), else None."""

    field: str | None

    def describe(self, variable: str) -> str:
        return f"{variable}.{self.field}" if self.field is not None else f"{variable} other than by a field"


def reads(source: str, scope: frozenset[str], variable: str) -> list[Read]:
    """Every use of `variable` in `source` (compiled in `scope`), in tree order. Raises ExpressionError."""
    checked = _field(_field(compile_expression(source, scope).serialize(), _ANY_VALUE), _CHECKED_EXPR)
    found: list[Read] = []
    stack: list[tuple[bytes, str | None]] = [(checked, None)]  # (Expr, the field a Select takes of it)
    while stack:
        expr, selected = stack.pop()
        for number, value in _fields(expr):
            if not isinstance(value, bytes):
                continue
            if number == _EXPR_IDENT and _text(value, _NAME) == variable:
                found.append(Read(selected))
            elif number == _EXPR_SELECT:
                operand = _field(value, _SELECT_OPERAND)
                stack.append((operand, _text(value, _SELECT_FIELD)))
            elif number in (_EXPR_CALL, _EXPR_LIST, _EXPR_COMPREHENSION):
                stack += [(child, None) for child in _children(number, value)]
                if number == _EXPR_COMPREHENSION and any(
                    n in _COMPREHENSION_VARS and v == variable.encode() for n, v in _fields(value)
                ):
                    found.append(Read(None))  # a local of that name: counted as a read of the whole
            elif number == _EXPR_STRUCT:
                for n, entry in _fields(value):
                    if n == _STRUCT_ENTRIES and isinstance(entry, bytes):
                        stack += [
                            (v, None)
                            for k, v in _fields(entry)
                            if k in (_ENTRY_MAP_KEY, _ENTRY_VALUE) and isinstance(v, bytes)
                        ]
    return found


def _children(kind: int, value: bytes) -> Iterator[bytes]:
    wanted = {
        _EXPR_CALL: {_CALL_TARGET, _CALL_ARGS},
        _EXPR_LIST: {_LIST_ELEMENTS},
        _EXPR_COMPREHENSION: _COMPREHENSION_EXPRS,
    }[kind]
    for number, child in _fields(value):
        if number in wanted and isinstance(child, bytes):
            yield child


# ---- protobuf wire format: just what the tree needs ------------------------------------------------------------


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field of a message: an int (varint) or bytes (length-delimited, fixed)."""
    at = 0
    while at < len(data):
        tag, at = _varint(data, at)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, at = _varint(data, at)
            yield number, value
        elif wire == 2:
            size, at = _varint(data, at)
            yield number, data[at : at + size]
            at += size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield number, data[at : at + size]
            at += size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")


def _field(data: bytes, number: int) -> bytes:
    return next((v for n, v in _fields(data) if n == number and isinstance(v, bytes)), b"")


def _text(data: bytes, number: int) -> str:
    return _field(data, number).decode()
