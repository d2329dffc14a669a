"""Concurrency limits, the pure parts: key rendering, the limit that applies, and the keeper's line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from steadfast.api.concurrency import Concurrency
from steadfast.api.policy import SteadfastPolicySpec
from steadfast.api.saga import Task
from steadfast.concurrency.keeper import apply
from steadfast.concurrency.queue import TELL_FIRST, Semaphore
from steadfast.concurrency.records import POSITION_EVENT, SLOT_EVENT, KeeperMessage, Notice, Ticket
from steadfast.concurrency.rules import keeper_id, render_key, resolve

TASK = Task(id="t-1", assignee="alice", priority="high")


def policy(*rules: dict[str, object]) -> tuple[str, SteadfastPolicySpec]:
    return ("admins", SteadfastPolicySpec.model_validate({"concurrency": list(rules)}))


def test_key_renders_task_fields_and_unset_ones_empty() -> None:
    assert render_key("payments-$(task.assignee)-$(task.priority)", TASK) == "payments-alice-high"
    assert render_key("payments-$(task.title)", TASK) == "payments-"
    assert render_key("payments", TASK) == "payments"


@pytest.mark.parametrize("key", ["p-$(task.owner)", "p-$(saga.name)", "p-$(task.id"])
def test_key_refuses_other_placeholders(key: str) -> None:
    with pytest.raises(ValidationError, match=r"concurrency\.key"):
        Concurrency(key=key, limit=1)


def test_keeper_id_is_per_namespace_and_key_and_stable() -> None:
    assert keeper_id("a", "k") == keeper_id("a", "k")
    assert len({keeper_id("a", "k"), keeper_id("b", "k"), keeper_id("a", "k2")}) == 3
    assert keeper_id("a", "weird key/with:chars").replace("-", "").isalnum()


def test_limit_is_the_lowest_of_own_and_matching_rules() -> None:
    rules = [
        policy(
            {"name": "payments", "key": "payments-*", "limit": 3},
            {"name": "loose", "key": "*", "limit": 10},
            {"name": "other-ns", "key": "*", "limit": 1, "namespaceSelector": {"matchLabels": {"team": "b"}}},
        )
    ]
    found = resolve(
        Concurrency(key="payments-$(task.assignee)", limit=5), TASK, "ns", "2026-01-01T00:00:00Z", {}, rules
    )
    assert found is not None
    assert (found.key, found.limit, found.rules) == ("payments-alice", 3, ["admins/payments"])
    assert found.keeper == keeper_id("ns", "payments-alice")
    own = resolve(Concurrency(key="payments", limit=2), TASK, "ns", "t", {}, rules)
    assert own is not None and (own.limit, own.rules) == (2, [])  # its own is stricter: no rule named
    team_b = resolve(Concurrency(key="x"), TASK, "ns", "t", {"team": "b"}, rules)
    assert team_b is not None and team_b.limit == 1


def test_no_key_or_no_limit_anywhere_means_unlimited() -> None:
    rules = [policy({"name": "all", "key": "*", "limit": 2})]
    assert resolve(None, TASK, "ns", "t", {}, rules) is None  # rules apply only to sagas that name a key
    assert resolve(Concurrency(key="k"), TASK, "ns", "t", {}, []) is None


def ticket(name: str, created: str = "2026-01-01T00:00:00Z", limit: int = 2) -> Ticket:
    return Ticket(instance=f"i-{name}", created=created, name=name, limit=limit)


def slots(notices: list[Notice]) -> list[str]:
    return [n.instance for n in notices if n.event == SLOT_EVENT]


def test_grants_up_to_the_limit_then_queues_in_creation_order() -> None:
    sem = Semaphore(namespace="ns", key="k")
    assert slots(sem.acquire(ticket("a"))) == ["i-a"]
    assert slots(sem.acquire(ticket("b"))) == ["i-b"]
    sem.acquire(ticket("d", "2026-01-01T00:00:02Z"))
    sem.acquire(ticket("c", "2026-01-01T00:00:01Z"))  # asked later, created earlier: goes first
    assert [t.name for t in sem.waiting] == ["c", "d"]
    assert slots(sem.release("i-a")) == ["i-c"]
    assert slots(sem.release("i-b")) == ["i-d"]
    assert not sem.waiting


def test_messages_twice_never_give_a_slot_twice() -> None:
    sem = Semaphore(namespace="ns", key="k")
    for name in "abc":
        sem.acquire(ticket(name))
    assert slots(sem.acquire(ticket("a"))) == ["i-a"]  # a holder asking again is told again, nothing more
    assert sem.acquire(ticket("c")) == []  # a waiter asking again keeps its place
    assert [t.name for t in sem.holders] == ["a", "b"] and [t.name for t in sem.waiting] == ["c"]
    assert slots(sem.release("i-a")) == ["i-c"]
    assert sem.release("i-a") == []  # released twice: frees nothing more
    assert len(sem.holders) == 2


def test_withdrawing_a_waiter_frees_nothing_it_did_not_hold() -> None:
    sem = Semaphore(namespace="ns", key="k")
    for name in "abcd":
        sem.acquire(ticket(name))
    assert slots(sem.release("i-c")) == []
    assert [t.name for t in sem.holders] == ["a", "b"] and [t.name for t in sem.waiting] == ["d"]


def test_check_drops_ended_holders_and_waiters() -> None:
    sem = Semaphore(namespace="ns", key="k")
    for name in "abcd":
        sem.acquire(ticket(name))
    assert slots(sem.drop({"i-a", "i-c"})) == ["i-d"]
    assert [t.name for t in sem.holders] == ["b", "d"]


def test_the_head_is_never_passed() -> None:
    """A waiter with a lower limit at the head waits until the holders fall below it; nobody passes it."""
    sem = Semaphore(namespace="ns", key="k")
    sem.acquire(ticket("a", limit=3))
    sem.acquire(ticket("b", limit=3))
    sem.acquire(ticket("c", "2026-01-01T00:00:01Z", limit=1))
    sem.acquire(ticket("d", "2026-01-01T00:00:02Z", limit=3))
    assert [t.name for t in sem.waiting] == ["c", "d"]
    sem.release("i-a")
    assert [t.name for t in sem.waiting] == ["c", "d"]
    assert slots(sem.release("i-b")) == ["i-c", "i-d"]  # c once nobody holds, then d joins it (1 < 3)
    assert slots(sem.acquire(ticket("e", "2026-01-01T00:00:03Z", limit=3))) == ["i-e"]  # 2 held, 2 < 3
    assert [t.name for t in sem.holders] == ["c", "d", "e"]


def test_positions_told_on_queueing_and_to_the_first_few_as_they_move() -> None:
    sem = Semaphore(namespace="ns", key="k")
    for n in range(2 + TELL_FIRST + 2):
        sem.acquire(ticket(f"s{n:02}"))
    assert sem.told == {t.instance: i + 1 for i, t in enumerate(sem.waiting)}
    moved = sem.release("i-s00")
    told = {n.instance: n.data["position"] for n in moved if n.event == POSITION_EVENT}
    assert told == {f"i-s{n:02}": n - 2 for n in range(3, 3 + TELL_FIRST)}  # further back: not told again


def test_keeper_applies_messages_and_survives_continue_as_new() -> None:
    sem = Semaphore(namespace="ns", key="k")
    apply(sem, KeeperMessage(op="acquire", instance="i-a", ticket=ticket("a", limit=1)))
    apply(sem, KeeperMessage(op="acquire", instance="i-b", ticket=ticket("b", limit=1)))
    carried = Semaphore.model_validate(sem.wire())
    assert slots(apply(carried, KeeperMessage(op="release", instance="i-a"))) == ["i-b"]


def test_a_check_looks_at_holders_and_the_head_of_a_long_line_only() -> None:
    sem = Semaphore(namespace="ns", key="k")
    for n in range(50):
        sem.acquire(ticket(f"s{n:02}"))
    assert sem.to_check() == [f"i-s{n:02}" for n in range(2 + TELL_FIRST)]
