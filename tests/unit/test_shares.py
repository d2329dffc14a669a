"""Fair shares between namespaces: limits, the reserve for newcomers, the order of waiters, async waits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from steadfast.expressions.sandbox import Sandbox
from steadfast.shares import Shares, current, on_behalf_of

RESPONSE = frozenset({"response"})


def holding(shares: Shares, namespace: str, count: int, stack: ExitStack) -> None:
    for _ in range(count):
        stack.enter_context(shares.hold(namespace))


def start_waiting(shares: Shares, namespace: str, admitted: list[str], release: threading.Event) -> threading.Thread:
    def work() -> None:
        with shares.hold(namespace):
            admitted.append(namespace)
            release.wait(5)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def settle(shares: Shares, waiting: int) -> None:
    deadline = time.monotonic() + 5
    while shares.waiting != waiting:
        assert time.monotonic() < deadline, f"expected {waiting} waiters, have {shares.waiting}"
        time.sleep(0.005)


def test_a_namespace_holds_at_most_its_limit_and_others_start_at_once() -> None:
    shares = Shares("t", capacity=10, per_namespace=3)
    admitted: list[str] = []
    release = threading.Event()
    with ExitStack() as stack:
        holding(shares, "greedy", 3, stack)
        extra = start_waiting(shares, "greedy", admitted, release)
        settle(shares, 1)  # the fourth waits, though seven places are free
        assert admitted == [] and shares.held("greedy") == 3
        with shares.hold("other"):  # admitted at once
            assert shares.held("other") == 1
    extra.join(5)
    assert admitted == ["greedy"]
    release.set()


def test_places_are_kept_for_namespaces_that_hold_nothing() -> None:
    """With the capacity nearly full, a namespace holding something waits; one holding nothing starts."""
    shares = Shares("t", capacity=6, per_namespace=4, reserve=2)
    admitted: list[str] = []
    release = threading.Event()
    with ExitStack() as stack:
        holding(shares, "a", 4, stack)  # 2 free, all reserved
        extra = start_waiting(shares, "b", admitted, release)  # b holds nothing: takes a reserved place
        deadline = time.monotonic() + 5
        while admitted != ["b"]:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        second = start_waiting(shares, "b", admitted, release)  # b now holds one: no more reserved places for it
        settle(shares, 1)
        with shares.hold("c"):  # c holds nothing: the last place
            assert shares.in_use == 6
        release.set()
    for thread in (extra, second):
        thread.join(5)
    assert admitted == ["b", "b"]


def test_the_namespace_holding_least_goes_first() -> None:
    shares = Shares("t", capacity=3, per_namespace=3)
    admitted: list[str] = []
    release = threading.Event()
    threads = []
    with ExitStack() as stack:
        holding(shares, "heavy", 2, stack)
        with shares.hold("light"):
            threads.append(start_waiting(shares, "heavy", admitted, release))
            settle(shares, 1)
            threads.append(start_waiting(shares, "light2", admitted, release))
            settle(shares, 2)
        # "light" gave its place back: light2 (holding nothing) goes before heavy (holding two), though later.
        deadline = time.monotonic() + 5
        while not admitted:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert admitted == ["light2"]
    release.set()
    for thread in threads:
        thread.join(5)
    assert admitted == ["light2", "heavy"]


def test_a_limit_per_namespace_can_come_from_a_function() -> None:
    shares = Shares("t", capacity=8, per_namespace=lambda ns: 1 if ns == "small" else 4)
    assert shares.limit("small") == 1 and shares.limit("big") == 4
    assert Shares("t", capacity=2, per_namespace=10).limit("x") == 2  # never more than the capacity


def test_async_waiters_hold_no_thread_and_a_cancelled_one_gives_its_place_back() -> None:
    shares = Shares("t", capacity=2, per_namespace=1)

    async def scenario() -> list[str]:
        order: list[str] = []
        gate = asyncio.Event()

        async def work(namespace: str, tag: str) -> None:
            async with shares.ahold(namespace):
                order.append(tag)
                await gate.wait()

        # 200 waiters of one namespace on one event loop thread: no thread is held by any of them.
        greedy = [asyncio.create_task(work("greedy", f"g{i}")) for i in range(200)]
        await asyncio.sleep(0.05)
        assert order == ["g0"] and shares.waiting == 199
        await asyncio.wait_for(work_once(shares, "other", order), 1)
        for task in greedy[1:]:
            task.cancel()
        await asyncio.gather(*greedy[1:], return_exceptions=True)
        assert shares.waiting == 0 and shares.held("greedy") == 1
        gate.set()
        await asyncio.gather(greedy[0])
        return order

    async def work_once(shares: Shares, namespace: str, order: list[str]) -> None:
        async with shares.ahold(namespace):
            order.append(namespace)

    assert asyncio.run(scenario()) == ["g0", "other"]
    assert shares.in_use == 0


def test_on_behalf_of_names_the_namespace_for_lower_layers() -> None:
    assert current() == ""
    with on_behalf_of("team-a"):
        assert current() == "team-a"
    assert current() == ""


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox(children=2, deadline=10.0)
    yield box
    box.close()


def test_cpu_heavy_expressions_of_one_namespace_leave_a_child_for_others(sandbox: Sandbox) -> None:
    """Three threads of one namespace evaluating expressions that burn their whole CPU limit use one child; another
    namespace's expression is answered without waiting for them."""
    bomb = "response.body.l.all(a, response.body.s.matches('(x|xx)*y') == false)"
    data = {"response": {"body": {"s": "x" * 100_000, "l": list(range(20_000))}}}
    sandbox.evaluate([("1", RESPONSE)], {})  # start-up of a child is not what is measured

    def burn() -> None:
        with on_behalf_of("bomber"):
            for _ in range(2):
                [result] = sandbox.evaluate([(bomb, RESPONSE)], data)
                assert result.error is not None

    burners = [threading.Thread(target=burn, daemon=True) for _ in range(3)]
    for thread in burners:
        thread.start()
    time.sleep(0.3)
    assert sandbox.shares.held("bomber") == 1
    started = time.monotonic()
    with on_behalf_of("victim"):
        [answer] = sandbox.evaluate([("response.status == 200", RESPONSE)], {"response": {"status": 200}})
    took = time.monotonic() - started
    for thread in burners:
        thread.join(30)
    assert answer.value is True
    # Without the shares it would queue behind the bombs (six of 1 s CPU each on two children: about 3 s).
    assert took < 1.5, f"the other namespace's expression took {took:.2f}s"
