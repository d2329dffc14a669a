"""Evaluation of expressions in child processes, so a hostile one costs a child, never the operator.

CEL's runtime bounds iterations, not memory: `[1,2,3].map(a, s + s + s)` over a large response grows
without limit. Each child runs under an address-space limit and a CPU-time limit per batch (see `child`);
the parent adds a wall-clock deadline, kills a child that misses it and starts a fresh one for the next
batch. Children are reused (starting one costs ~100 ms), one caller at a time each.

The children are shared fairly between namespaces (`steadfast.shares`): a namespace uses at most
`per_namespace` of them at once (default 1 of 2), so expressions that burn their whole CPU limit in one
namespace leave a child free for the others; its further batches wait for its own child, not theirs.
"""

from __future__ import annotations

import json
import os
import queue
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from steadfast.shares import Observe, Shares, current

MEMORY = 256 * 1024 * 1024  # address space of one child (the Python runtime and CEL take ~40 MiB of it)
CPU_SECONDS = 1.0  # per batch
DEADLINE = 5.0  # wall clock per batch, start-up of a fresh child included
CHILDREN = 2
PER_NAMESPACE = 1  # children one namespace may use at once


@dataclass(frozen=True)
class Result:
    """One expression's value (JSON data) or why it has none."""

    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Child:
    def __init__(self, memory: int, cpu: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "steadfast.expressions.child", str(memory), str(cpu)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self.buffer = b""

    def ask(self, line: bytes, deadline: float) -> bytes | None:
        """The answer line, or None when the child died or missed the deadline (it is then killed)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(line)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.kill()
            return None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.kill()
                    return None
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self.kill()
                    return None
                self.buffer += chunk
        answer, _, self.buffer = self.buffer.partition(b"\n")
        return answer

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class Sandbox:
    """A small pool of evaluator children; `evaluate` is safe to call from many threads."""

    def __init__(
        self,
        *,
        children: int = CHILDREN,
        memory: int = MEMORY,
        cpu: float = CPU_SECONDS,
        deadline: float = DEADLINE,
        per_namespace: int = PER_NAMESPACE,
        observe: Observe | None = None,
    ) -> None:
        self.memory = memory
        self.cpu = cpu
        self.deadline = deadline
        self._idle: queue.Queue[_Child | None] = queue.Queue()
        for _ in range(children):
            self._idle.put(None)  # a slot; its child starts on first use
        self._all: list[_Child] = []
        self._lock = threading.Lock()
        # One place per child: whoever is admitted finds an idle slot at once.
        self.shares = Shares("expressions", children, per_namespace, observe=observe)

    def evaluate(self, items: Iterable[tuple[str, frozenset[str]]], data: Mapping[str, Any]) -> list[Result]:
        """Each expression's result over `data`, in order; a batch that breaks a limit fails as a whole.

        The batch is charged to the namespace of `shares.on_behalf_of` and waits for that namespace's share.
        """
        batch = [[source, sorted(scope)] for source, scope in items]
        if not batch:
            return []
        line = (json.dumps({"items": batch, "data": data}, default=str) + "\n").encode()
        with self.shares.hold(current()):
            slot = self._idle.get()
            child = slot if slot is not None and slot.alive else self._start()
            try:
                answer = child.ask(line, time.monotonic() + self.deadline)
            finally:
                self._idle.put(child if child.alive else None)
        if answer is None:
            reason = (
                "the expressions exceeded their time or memory limit "
                f"({self.cpu:g}s CPU, {self.deadline:g}s in all, {self.memory // 2**20} MiB)"
            )
            return [Result(error=reason) for _ in batch]
        return [Result(value=r.get("value"), error=r.get("error")) for r in json.loads(answer)]

    def _start(self) -> _Child:
        child = _Child(self.memory, self.cpu)
        with self._lock:
            self._all = [c for c in self._all if c.alive] + [child]
        return child

    def close(self) -> None:
        with self._lock:
            for child in self._all:
                child.kill()
            self._all = []


_shared: Sandbox | None = None
_shared_lock = threading.Lock()


def shared() -> Sandbox:
    """The process's sandbox, started on first use (most operators never evaluate an expression)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Sandbox()
        return _shared
