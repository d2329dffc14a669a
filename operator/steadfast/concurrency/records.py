"""What crosses the engine between a saga, its key's keeper and their activities: names and records."""

from __future__ import annotations

from typing import Any, Literal

from steadfast.records import Record

KEEPER = "steadfast.semaphore"  # the keeper's workflow name
KEEPER_EVENT = "steadfast.concurrency"  # a KeeperMessage, raised on the keeper
SLOT_EVENT = "steadfast.slot"  # raised on a saga: it holds a slot
POSITION_EVENT = "steadfast.queue-position"  # raised on a saga: {"position": n}, its place in line
# Activities.
ACQUIRE = "steadfast.concurrency.acquire"
RELEASE = "steadfast.concurrency.release"
NOTIFY = "steadfast.concurrency.notify"
CHECK = "steadfast.concurrency.check"


class SagaConcurrency(Record):
    """A saga's concurrency, resolved when it starts and recorded in its input: the same on every replay."""

    key: str  # rendered
    limit: int  # the lowest of its own and the matching policy rules
    keeper: str  # the keeper's instance ID (rules.keeper_id)
    created: str  # the saga's creationTimestamp: its place in line
    rules: list[str] = []  # policy/rule that set the limit, if any


class Ticket(Record):
    """One saga in a keeper's holders or line."""

    instance: str
    created: str
    name: str
    limit: int

    def order(self) -> tuple[str, str, str]:
        return (self.created, self.name, self.instance)


class KeeperMessage(Record):
    """An event on the keeper: take a place in line (acquire), or leave, holding or not (release)."""

    op: Literal["acquire", "release"]
    instance: str
    ticket: Ticket | None = None


class SlotRequest(Record):
    """The ACQUIRE and RELEASE activities' input: which keeper, and the message for it."""

    keeper: str
    namespace: str
    key: str
    message: KeeperMessage


class Notice(Record):
    """An event the keeper has raised on a saga (through NOTIFY)."""

    instance: str
    event: str
    data: dict[str, Any]
