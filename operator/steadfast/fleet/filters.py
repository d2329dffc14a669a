"""What `steadfast list` asks for: kinds, phases, labels, age and who waits; split into what the API server
filters (kind, phase through the CRDs' selectable status.phase, labels) and what only the client can (age,
approvers)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from steadfast.api.kinds import APPROVAL_REQUEST, KINDS, Kind, kind_named
from steadfast.fleet.phases import NEEDS_PERSON, PHASES, WAITING_FOR_USER
from steadfast.fleet.record import FleetRecord

_AGE = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Names people say besides kubectl's (kind, plural, singular, short name).
_ALIASES = {"approval": APPROVAL_REQUEST, "approvals": APPROVAL_REQUEST}


def parse_age(text: str) -> timedelta:
    """`30m`, `24h`, `7d`, `1h30m` (units s, m, h, d, w) as a duration; ValueError otherwise."""
    compact = text.strip().lower()
    if not compact or _AGE.sub("", compact):
        raise ValueError(f"invalid age {text!r}: use a number and a unit (s, m, h, d, w), e.g. 30m, 24h, 7d")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _AGE.findall(compact)))


def _split(values: Iterable[str]) -> list[str]:
    """Repeated options and comma lists alike: ["saga,apr", "hmon"] -> ["saga", "apr", "hmon"]."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def parse_kinds(values: Iterable[str]) -> tuple[Kind, ...]:
    """Kinds by any kubectl name (and `approval`), in the fixed order of KINDS; all of them when none is given."""
    names = _split(values)
    if not names:
        return KINDS
    wanted = {_ALIASES.get(n.lower()) or kind_named(n) for n in names}
    return tuple(k for k in KINDS if k in wanted)


@dataclass(frozen=True)
class Request:
    """One list call: a kind, optionally one phase (a field selector), in the query's namespace and labels."""

    kind: Kind
    phase: str | None = None

    @property
    def field_selector(self) -> str | None:
        return f"status.phase={self.phase}" if self.phase is not None else None


@dataclass(frozen=True)
class Filters:
    kinds: tuple[Kind, ...] = KINDS
    phases: frozenset[str] = frozenset()  # empty: any
    selector: str | None = None  # a label selector, passed to the API server as it is
    older_than: timedelta | None = None
    newer_than: timedelta | None = None
    needs_person: bool = False
    waiting_for: str | None = None  # a user name
    unknown: tuple[str, ...] = field(default=())  # phases no selected kind has (a typo, most likely)

    @classmethod
    def build(
        cls,
        *,
        kinds: Iterable[str] = (),
        phases: Iterable[str] = (),
        selector: str | None = None,
        older_than: str | None = None,
        newer_than: str | None = None,
        needs_person: bool = False,
        waiting_for: str | None = None,
    ) -> Filters:
        """From the command line's words; raises ValueError (KeyError for a kind) on what it cannot read."""
        chosen = parse_kinds(kinds)
        wanted = frozenset(_split(phases))
        known = frozenset().union(*(PHASES[k] for k in chosen))
        unknown = tuple(sorted(wanted - known))
        if wanted and unknown == tuple(sorted(wanted)):
            raise ValueError(
                f"no {'/'.join(k.kind for k in chosen)} has phase {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(
            kinds=chosen,
            phases=wanted,
            selector=selector or None,
            older_than=parse_age(older_than) if older_than else None,
            newer_than=parse_age(newer_than) if newer_than else None,
            needs_person=needs_person,
            waiting_for=waiting_for or None,
            unknown=unknown,
        )

    def phases_of(self, kind: Kind) -> frozenset[str] | None:
        """The phases of `kind` to ask for; None for all; empty when nothing of `kind` can match."""
        chosen: frozenset[str] | None = (self.phases & PHASES[kind]) if self.phases else None
        for limit, on in ((NEEDS_PERSON[kind], self.needs_person), (WAITING_FOR_USER[kind], bool(self.waiting_for))):
            if on:
                chosen = limit if chosen is None else chosen & limit
        return chosen

    def requests(self) -> list[Request]:
        """The list calls that fetch everything these filters may keep, and as little else as the server allows:
        one per kind, or one per (kind, phase) when phases narrow it (field selectors cannot say "or")."""
        out: list[Request] = []
        for kind in self.kinds:
            phases = self.phases_of(kind)
            if phases is None:
                out.append(Request(kind))
            else:
                out.extend(Request(kind, p) for p in sorted(phases))
        return out

    @property
    def needs_objects(self) -> bool:
        """Whether `keep` reads what no printer column shows (a request's approvers)."""
        return self.waiting_for is not None

    def keep(self, record: FleetRecord) -> bool:
        """What the server could not filter: age and a request's approvers."""
        age = record.age_seconds
        if self.older_than is not None and (age is None or age < self.older_than.total_seconds()):
            return False
        if self.newer_than is not None and (age is None or age > self.newer_than.total_seconds()):
            return False
        return not (
            self.waiting_for and record.kind == APPROVAL_REQUEST.kind and self.waiting_for not in record.approvers
        )
