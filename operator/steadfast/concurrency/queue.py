"""Pure: a keeper's state (holders and the line) and what each message changes; the keeper workflow applies it.

Every operation is idempotent, because messages may come twice (an activity retried after a crash, a saga
asking again while it waits): an acquire of a holder grants again (the saga takes the first `slot` event and
ignores the rest), of a waiter changes nothing; a release of an instance neither holding nor waiting changes
nothing. The line is ordered by the saga's creationTimestamp, then name; the head goes first, and nobody
passes it (a waiter whose own limit is lower than the holders' count waits, and so does everyone behind it).
"""

from __future__ import annotations

from bisect import insort

from steadfast.concurrency.records import POSITION_EVENT, SLOT_EVENT, Notice, Ticket
from steadfast.records import Record

# Waiters told their new place in line each time it changes; further back, a waiter is told only when it queues.
TELL_FIRST = 3


class Semaphore(Record):
    """A keeper's state, carried through continue-as-new."""

    namespace: str
    key: str
    check_seconds: float = 30.0
    holders: list[Ticket] = []
    waiting: list[Ticket] = []
    told: dict[str, int] = {}  # instance -> the position it was last told
    handled: int = 0  # messages and checks in this run (continue-as-new after a bound)

    def to_check(self) -> list[str]:
        """The instances whose end matters now: the holders, and the waiters next in line (one ended further
        back is found when it comes near the head). Bounded, so a long line costs no more per check."""
        near = max(TELL_FIRST, self.waiting[0].limit if self.waiting else 0)
        return [t.instance for t in self.holders + self.waiting[:near]]

    def busy(self) -> bool:
        return bool(self.holders or self.waiting)

    def acquire(self, ticket: Ticket) -> list[Notice]:
        if any(t.instance == ticket.instance for t in self.holders):
            return [Notice(instance=ticket.instance, event=SLOT_EVENT, data={"key": self.key})]
        if any(t.instance == ticket.instance for t in self.waiting):
            return []
        insort(self.waiting, ticket, key=Ticket.order)
        return self._grant()

    def release(self, instance: str) -> list[Notice]:
        return self.drop({instance})

    def drop(self, instances: set[str]) -> list[Notice]:
        """Forget `instances` (ended, withdrawn, gone), holders and waiters alike, then grant what is free."""
        if not instances:
            return []
        self.holders = [t for t in self.holders if t.instance not in instances]
        self.waiting = [t for t in self.waiting if t.instance not in instances]
        return self._grant()

    def _grant(self) -> list[Notice]:
        notices: list[Notice] = []
        while self.waiting and len(self.holders) < self.waiting[0].limit:
            head = self.waiting.pop(0)
            self.holders.append(head)
            notices.append(Notice(instance=head.instance, event=SLOT_EVENT, data={"key": self.key}))
        told: dict[str, int] = {}
        for index, ticket in enumerate(self.waiting):
            position = index + 1
            before = self.told.get(ticket.instance)
            if before is None or (position <= TELL_FIRST and before != position):
                notices.append(Notice(instance=ticket.instance, event=POSITION_EVENT, data={"position": position}))
                before = position
            told[ticket.instance] = before
        self.told = told
        return notices
