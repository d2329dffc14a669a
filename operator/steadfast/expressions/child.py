"""The sandbox process: evaluates batches of expressions read as JSON lines on stdin, answers on stdout.

It runs under an address-space limit and, per batch, a CPU-time limit whose signal (SIGVTALRM) is left at
its default action: a runaway expression ends this process, never the operator. The parent starts another.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import resource
import signal
import sys
from typing import Any

from cel_expr_python import cel

from steadfast.expressions.language import ExpressionError, compile_expression

MAX_RESULT = 64 * 1024


def plain(value: Any) -> Any:
    """A CEL result as JSON data: bytes as base64, timestamps as RFC 3339, durations as seconds ("1.5s")."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.timedelta):
        return f"{value.total_seconds():g}s"
    return value


def evaluate(source: str, scope: frozenset[str], data: dict[str, Any]) -> dict[str, Any]:
    try:
        program = compile_expression(source, scope)
    except ExpressionError as exc:
        return {"error": str(exc)}
    try:
        result = program.eval(data=data)
        if result.type() == cel.Type.ERROR:
            return {"error": _reason(str(result.value()))}
        value = plain(result.plain_value())
        size = len(json.dumps(value))
    except RuntimeError as exc:
        return {"error": _reason(str(exc))}
    except MemoryError:
        return {"error": "the expression needs more memory than it may use"}
    if size > MAX_RESULT:
        return {"error": f"the result is {size} bytes of JSON, more than the {MAX_RESULT} an expression may produce"}
    return {"value": value}


def _reason(text: str) -> str:
    # The runtime's messages carry a status-code prefix and suffix: "INTERNAL: Iteration budget exceeded [INTERNAL]".
    text = text.split(" [", 1)[0]
    head, sep, tail = text.partition(": ")
    return tail if sep and head.isupper() else text


def main() -> None:
    memory = int(sys.argv[1])
    cpu = float(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # In a pod under a memory limit, the kernel's OOM killer should pick this process, never the operator.
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as handle:
        handle.write("1000")
    signal.signal(signal.SIGVTALRM, signal.SIG_DFL)
    out = sys.stdout
    for line in sys.stdin:
        batch = json.loads(line)
        data = batch["data"]
        signal.setitimer(signal.ITIMER_VIRTUAL, cpu)
        results = [evaluate(source, frozenset(scope), data) for source, scope in batch["items"]]
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        out.write(json.dumps(results) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
