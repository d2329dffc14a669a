"""Concurrency limits end to end: sagas on one key never exceed its limit at a slow idempotent receiver, start
in creation order, free only the slots they held when deleted (queued or running), lose or double no slot when
the operator is SIGKILLed with a full line, and take their limit from an admins' SteadfastPolicy.

What is in flight is judged from the receiver's delivery times, as tests/integration/test_attack_fairness.py
does: each call takes DELAY seconds, so calls of different sagas that arrive within less than DELAY of one
another ran at once. The session operator's keepers check their holders every 2 s (e2e_support.Operator).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_support import GROUP, VERSION, Operator, Resources, TaskService, eventually
from kubernetes import client

pytestmark = pytest.mark.controlplane

ROUTE = "DELETE /notices/{id}"  # slowed for these tests; each saga calls a path of its own under it
DELAY = 2.0


@pytest.fixture
def slow(task_service: TaskService) -> Iterator[TaskService]:
    task_service.fault(ROUTE, fail=0, delay=DELAY)  # answers, after DELAY seconds
    yield task_service
    task_service.clear_faults()


@pytest.fixture
def sagas(kube: client.ApiClient, namespace: str) -> Resources:
    return Resources(kube, namespace, "tasksagas", "TaskSaga")


def spec(svc: TaskService, namespace: str, name: str, concurrency: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "task": {"id": name, **extra.pop("task", {})},
        "steps": [
            {"name": "call", "action": {"http": {"method": "DELETE", "url": f"{svc.url}/notices/{namespace}-{name}"}}}
        ],
        "concurrency": concurrency,
        **extra,
    }


def arrivals(svc: TaskService, namespace: str) -> list[tuple[float, str]]:
    """(time, saga name) of every call of this test's sagas, in arrival order (a redelivery counts again)."""
    prefix = f"/notices/{namespace}-"
    found = [
        (d["at"], d["path"].removeprefix(prefix)) for d in svc.stats()["deliveries"] if d["path"].startswith(prefix)
    ]
    return sorted(found)


def most_sagas_at_once(calls: list[tuple[float, str]], within: float) -> int:
    """The most distinct sagas whose calls arrived within `within` seconds of one another (a saga's own
    redelivery after a crash is still one saga holding one slot)."""
    return max((len({n for b, n in calls if a <= b < a + within}) for a, _ in calls), default=0)


def test_a_key_limits_sagas_in_flight_and_the_line_keeps_creation_order(
    operator: Operator, slow: TaskService, sagas: Resources, namespace: str
) -> None:
    names = [f"q{i}" for i in range(6)]
    for name in names:
        sagas.create(name, spec(slow, namespace, name, {"key": "payments", "limit": 2}))
    waiting = sagas.wait_status(names[-1], lambda s: s.get("phase") == "Queued", "q5 Queued")
    assert waiting["queue"]["key"] == "payments" and waiting["queue"]["limit"] == 2
    assert "waiting for a slot of concurrency key 'payments' (limit 2)" in next(
        c["message"] for c in waiting["conditions"] if c["type"] == "Ready"
    )
    for name in names:
        done = sagas.wait_phase(name, "Succeeded", timeout=60)
        assert "queue" not in done["status"] or done["status"]["queue"] is None
    calls = arrivals(slow, namespace)
    assert sorted(n for _, n in calls) == names, "each saga called once"
    assert most_sagas_at_once(calls, within=DELAY - 0.5) == 2, f"not 2 at once: {calls}"
    # The first two took free slots in whatever order the operator started them; the line after them is FIFO.
    queued = [n for _, n in calls][2:]
    assert queued == sorted(queued), f"the queued sagas did not start in creation order: {calls}"


def test_deleting_a_queued_saga_frees_nothing_and_deleting_a_running_one_frees_its_slot(
    operator: Operator, slow: TaskService, sagas: Resources, namespace: str
) -> None:
    key = {"key": "one-at-a-time", "limit": 1}
    # The holder's call hangs for 60 s; it is abandoned (terminated) on deletion, and the keeper's check frees it.
    slow.fault(f"DELETE /notices/{namespace}-holder", fail=0, delay=60)
    sagas.create("holder", spec(slow, namespace, "holder", key, onDelete="Abandon"))
    eventually(lambda: arrivals(slow, namespace), timeout=30, what="the holder's call")
    sagas.create("next", spec(slow, namespace, "next", key))
    sagas.create("withdrawn", spec(slow, namespace, "withdrawn", key))
    sagas.wait_status("withdrawn", lambda s: (s.get("queue") or {}).get("position") == 2, "withdrawn 2nd in line")
    sagas.delete("withdrawn")
    sagas.wait_gone("withdrawn", timeout=30)
    time.sleep(DELAY)
    assert [n for _, n in arrivals(slow, namespace)] == ["holder"], "a queued saga's deletion freed a slot"
    assert sagas.status("next")["phase"] == "Queued"
    deleted = time.time()
    sagas.delete("holder")
    sagas.wait_phase("next", "Succeeded", timeout=30)
    started = next(at for at, n in arrivals(slow, namespace) if n == "next")
    assert started - deleted < 15, "the deleted holder's slot was not freed promptly"
    assert "withdrawn" not in [n for _, n in arrivals(slow, namespace)]


def test_a_sigkilled_operator_with_a_full_line_leaks_and_doubles_no_slot(
    operator: Operator, slow: TaskService, sagas: Resources, namespace: str
) -> None:
    names = [f"k{i}" for i in range(6)]
    for name in names:
        sagas.create(name, spec(slow, namespace, name, {"key": "crash", "limit": 2}))
    sagas.wait_status(names[-1], lambda s: s.get("phase") == "Queued", "k5 Queued")
    eventually(lambda: len(arrivals(slow, namespace)) >= 2, timeout=30, what="two calls in flight")
    operator.kill()
    operator.start()
    for name in names:
        sagas.wait_phase(name, "Succeeded", timeout=90)
    calls = arrivals(slow, namespace)
    assert {n for _, n in calls} == set(names)
    assert most_sagas_at_once(calls, within=DELAY - 0.5) <= 2, f"a slot was given twice: {calls}"
    # No slot leaked: a new saga on the key starts at once.
    sagas.create("after", spec(slow, namespace, "after", {"key": "crash", "limit": 2}))
    sagas.wait_phase("after", "Succeeded", timeout=30)


def test_an_admins_policy_sets_a_lower_limit(
    operator: Operator, kube: client.ApiClient, slow: TaskService, sagas: Resources, namespace: str
) -> None:
    label = {"steadfast-test-concurrency": namespace}
    client.CoreV1Api(kube).patch_namespace(namespace, {"metadata": {"labels": label}})
    policies = client.CustomObjectsApi(kube)
    name = f"concurrency-{namespace}"
    rule = {"name": "payments-one", "namespaceSelector": {"matchLabels": label}, "key": "pay-*", "limit": 1}
    policies.create_cluster_custom_object(
        GROUP,
        VERSION,
        "steadfastpolicies",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SteadfastPolicy",
            "metadata": {"name": name},
            "spec": {"concurrency": [rule]},
        },
    )
    try:
        names = ["p0", "p1", "p2"]
        for saga in names:  # their own limit is 5, the policy's 1 wins; the key renders from the assignee
            sagas.create(
                saga, spec(slow, namespace, saga, {"key": "pay-$(task.assignee)", "limit": 5}, task={"assignee": "ada"})
            )
        waiting = sagas.wait_status("p2", lambda s: s.get("phase") == "Queued", "p2 Queued")
        assert waiting["queue"] == {**waiting["queue"], "key": "pay-ada", "limit": 1, "policy": f"{name}/payments-one"}
        for saga in names:
            sagas.wait_phase(saga, "Succeeded", timeout=60)
        assert most_sagas_at_once(arrivals(slow, namespace), within=DELAY - 0.5) == 1
    finally:
        policies.delete_cluster_custom_object(GROUP, VERSION, "steadfastpolicies", name)
