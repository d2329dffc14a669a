"""Fair shares of a bounded capacity (action threads, sandbox children) between namespaces.

One namespace's slow or heavy work must not hold what the others need. A `Shares` admits work of a
namespace while (1) the namespace holds fewer than its limit, (2) the capacity has room, and (3) for a
namespace that already holds something, more than `reserve` places stay free: the last places are kept for
namespaces that hold nothing, so a namespace with nothing in flight starts at once even while others are
saturated. When several wait, the namespace holding the fewest goes first (oldest first among equals).

A waiter holds nothing while it waits: a thread that calls `hold` sleeps on its own event, a coroutine
that awaits `ahold` on a future. The work is given a place only when admitted.

`on_behalf_of` names the namespace whose work the current thread or task does, so that lower layers (the
expression sandbox) can charge it without every call passing it along.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

_ON_BEHALF: ContextVar[str] = ContextVar("steadfast_namespace", default="")

Observe = Callable[[str, float], None]  # (namespace, seconds waited), once per admission


@contextlib.contextmanager
def on_behalf_of(namespace: str) -> Iterator[None]:
    """Work done in this block is charged to `namespace`."""
    token = _ON_BEHALF.set(namespace)
    try:
        yield
    finally:
        _ON_BEHALF.reset(token)


def current() -> str:
    """The namespace whose work this is ("" when nobody said)."""
    return _ON_BEHALF.get()


@dataclass(eq=False)
class _Waiter:
    namespace: str
    seq: int
    wake: Callable[[], bool]  # False: nobody is there to take the place any more
    granted: bool = False
    since: float = field(default_factory=time.monotonic)


class Shares:
    """Places of one capacity, admitted per namespace (see the module's docstring); thread-safe."""

    def __init__(
        self,
        name: str,
        capacity: int,
        per_namespace: int | Callable[[str], int],
        *,
        reserve: int = 0,
        observe: Observe | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"{name}: the capacity must be at least 1")
        self.name = name
        self.capacity = capacity
        self.reserve = max(0, min(reserve, capacity - 1))
        self._limit = per_namespace if callable(per_namespace) else (lambda _ns, n=per_namespace: n)
        self._observe = observe
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._total = 0
        self._waiting: dict[str, deque[_Waiter]] = {}
        self._seq = itertools.count()

    def limit(self, namespace: str) -> int:
        return max(1, min(self._limit(namespace), self.capacity))

    def held(self, namespace: str) -> int:
        with self._lock:
            return self._held.get(namespace, 0)

    @property
    def in_use(self) -> int:
        with self._lock:
            return self._total

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._waiting.values())

    # -- admission (all under the lock) ----------------------------------------------------------------------

    def _admissible(self, namespace: str) -> bool:
        held = self._held.get(namespace, 0)
        if held >= self.limit(namespace) or self._total >= self.capacity:
            return False
        return held == 0 or self.capacity - self._total > self.reserve

    def _dispatch(self) -> None:
        while True:
            ready = [q[0] for ns, q in self._waiting.items() if q and self._admissible(ns)]
            if not ready:
                return
            first = min(ready, key=lambda w: (self._held.get(w.namespace, 0), w.seq))
            queue = self._waiting[first.namespace]
            queue.popleft()
            if not queue:
                del self._waiting[first.namespace]
            self._held[first.namespace] = self._held.get(first.namespace, 0) + 1
            self._total += 1
            first.granted = True
            if not first.wake():
                self._give_back(first.namespace)

    def _give_back(self, namespace: str) -> None:
        left = self._held.get(namespace, 0) - 1
        if left > 0:
            self._held[namespace] = left
        else:
            self._held.pop(namespace, None)
        self._total -= 1

    def _enter(self, waiter: _Waiter) -> None:
        with self._lock:
            self._waiting.setdefault(waiter.namespace, deque()).append(waiter)
            self._dispatch()

    def _leave(self, namespace: str) -> None:
        with self._lock:
            self._give_back(namespace)
            self._dispatch()

    def _withdraw(self, waiter: _Waiter) -> None:
        """A waiter gave up (its task was cancelled): drop it, or give back the place it was just granted."""
        with self._lock:
            if waiter.granted:
                self._give_back(waiter.namespace)
                self._dispatch()
                return
            queue = self._waiting.get(waiter.namespace)
            if queue is not None and waiter in queue:
                queue.remove(waiter)
                if not queue:
                    del self._waiting[waiter.namespace]

    def _observed(self, waiter: _Waiter) -> None:
        if self._observe is not None:
            self._observe(waiter.namespace, time.monotonic() - waiter.since)

    # -- the two ways in ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def hold(self, namespace: str) -> Iterator[None]:
        """A place for `namespace` for the block; the calling thread sleeps until one is admitted."""
        event = threading.Event()

        def wake() -> bool:
            event.set()
            return True

        waiter = _Waiter(namespace, next(self._seq), wake)
        self._enter(waiter)
        event.wait()
        self._observed(waiter)
        try:
            yield
        finally:
            self._leave(namespace)

    @contextlib.asynccontextmanager
    async def ahold(self, namespace: str) -> AsyncIterator[None]:
        """A place for `namespace` for the block; the task awaits without holding a thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not future.done():
                future.set_result(None)

        def wake() -> bool:
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # the loop is closed: the worker that asked is gone
                return False
            return True

        waiter = _Waiter(namespace, next(self._seq), wake)
        self._enter(waiter)
        try:
            await future
        except BaseException:
            self._withdraw(waiter)
            raise
        self._observed(waiter)
        try:
            yield
        finally:
            self._leave(namespace)
