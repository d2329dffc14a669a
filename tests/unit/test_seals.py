"""Seals: the creator and decider stamps hold only on the resource, spec and moment admission saw (#23 class 3)."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from steadfast import identity, seals
from steadfast.api.kinds import DECISION_SEAL, REQUESTED_BY, REQUESTED_GROUPS, SEAL
from steadfast.approval.admission import approval_stamps
from steadfast.identity import User
from steadfast.records import Actor
from steadfast.seals import SEALER, Sealer, SealError
from steadfast.webhooks import monitor_stamps, saga_stamps

ALICE = User("alice", frozenset({"approvers", "team,with,commas"}))
MALLORY = User("mallory")


def stamp_time(offset: float = 0) -> str:
    """A creationTimestamp `offset` seconds from now (seals are checked against the time they were made)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


def saga(
    name: str = "s1", namespace: str = "team-a", spec: Any = None, stamps: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "kind": "TaskSaga",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "u-1",
            "generation": 1,
            "creationTimestamp": stamp_time(),
            "annotations": dict(stamps or {}),
        },
        "spec": spec if spec is not None else {"task": {"id": "1"}, "steps": [{"name": "a"}]},
    }


def stamped(body: dict[str, Any], user: User = ALICE) -> dict[str, Any]:
    out = copy.deepcopy(body)
    new = {"kind": out["kind"], "metadata": {"name": out["metadata"]["name"]}, "spec": out["spec"]}
    out["metadata"]["annotations"].update(saga_stamps("CREATE", user, new, namespace=out["metadata"]["namespace"]))
    return out


def test_a_sealed_creator_is_believed_and_groups_round_trip() -> None:
    body = stamped(saga())
    assert Actor.of(body) == Actor(user="alice", groups=["approvers", "team,with,commas"])
    assert body["metadata"]["annotations"][REQUESTED_GROUPS] == '["approvers","team,with,commas"]'


def test_typed_stamps_without_a_seal_are_not_believed() -> None:
    typed = saga(stamps={REQUESTED_BY: "cluster-admin", REQUESTED_GROUPS: '["system:masters"]'})
    actor, why = Actor.vouched(typed)
    assert actor is None and "no seal" in why


def test_a_seal_cannot_be_moved_to_another_resource_or_spec() -> None:
    seal = stamped(saga())["metadata"]["annotations"]
    for other in (
        saga(name="s2", stamps=seal),
        saga(namespace="team-b", stamps=seal),
        saga(spec={"task": {"id": "1"}, "steps": [{"name": "evil"}]}, stamps=seal),
        {**saga(stamps=seal), "kind": "HealthMonitor"},
    ):
        assert Actor.of(other) is None, other


def test_a_creation_seal_is_not_replayed_onto_a_resource_made_later() -> None:
    body = stamped(saga())
    later = copy.deepcopy(body)
    later["metadata"]["creationTimestamp"] = stamp_time(3600)
    assert Actor.of(later) is None


def test_a_seal_from_another_key_is_refused() -> None:
    body = stamped(saga())
    other = Sealer(b"another-cluster-key-of-32-bytes!")
    token = other.seal(
        seals.Sealed(role="creator", kind="TaskSaga", ns="team-a", name="s1", user="root", at=int(time.time()))
    )
    body["metadata"]["annotations"][SEAL] = token
    with pytest.raises(SealError, match="not made by this operator"):
        seals.verify_creator(body, token)


def test_a_monitor_restamp_is_bound_to_its_uid_and_generation() -> None:
    old: dict[str, Any] = {
        "kind": "HealthMonitor",
        "metadata": {
            "name": "m",
            "namespace": "team-a",
            "uid": "m-1",
            "generation": 3,
            "creationTimestamp": stamp_time(),
        },
        "spec": {"target": 1},
    }
    new = {**old, "spec": {"target": 2}}
    stamps = monitor_stamps("UPDATE", ALICE, old, new, namespace="team-a")
    assert stamps is not None
    after = copy.deepcopy(new)
    after["metadata"]["generation"] = 4
    after["metadata"]["annotations"] = stamps
    assert Actor.of(after) is not None
    # Mallory changes the target where admission does not run and puts alice's seal back: a later generation.
    replayed = copy.deepcopy(after)
    replayed["metadata"]["generation"] = 5
    replayed["spec"] = {"target": 3}
    assert Actor.of(replayed) is None
    same_spec_later = copy.deepcopy(after)
    same_spec_later["metadata"]["generation"] = 6
    assert Actor.of(same_spec_later) is None


def test_a_decision_seal_binds_the_decider_verdict_and_generation() -> None:
    old: dict[str, Any] = {
        "kind": "ApprovalRequest",
        "metadata": {
            "name": "r",
            "namespace": "team-a",
            "uid": "r-1",
            "generation": 1,
            "creationTimestamp": stamp_time(),
        },
        "spec": {"approvers": {"users": ["alice"]}},
    }
    new = copy.deepcopy(old)
    new["spec"]["decision"] = {"approved": False, "reason": "no"}
    stamps = approval_stamps("UPDATE", ALICE, old, new, operator="op", namespace="team-a")
    new["metadata"]["annotations"] = stamps
    new["metadata"]["generation"] = 2
    assert seals.verify_decision(new, stamps[DECISION_SEAL]).user == "alice"
    flipped = copy.deepcopy(new)
    flipped["spec"]["decision"]["approved"] = True
    with pytest.raises(SealError, match="decision"):
        seals.verify_decision(flipped, stamps[DECISION_SEAL])
    elsewhere = copy.deepcopy(new)
    elsewhere["metadata"]["uid"] = "r-2"
    with pytest.raises(SealError):
        seals.verify_decision(elsewhere, stamps[DECISION_SEAL])
    # A creator's seal is no decision.
    creator = approval_stamps("CREATE", ALICE, None, old, operator="op", namespace="team-a")
    with pytest.raises(SealError):
        seals.verify_decision(new, creator[SEAL])


def test_marks_differ_per_key_and_per_sealer() -> None:
    assert SEALER.mark("sf-1") != SEALER.mark("sf-2")
    assert Sealer(b"another-cluster-key-of-32-bytes!").mark("sf-1") != SEALER.mark("sf-1")


def test_stamp_edits_are_refused_at_update() -> None:
    body = stamped(saga())
    edited = copy.deepcopy(body)
    edited["metadata"]["annotations"][SEAL] = stamped(saga(), MALLORY)["metadata"]["annotations"][SEAL]
    assert identity.stamp_unchanged(SEAL, body, edited) is not None
