"""A small deterministic cron evaluator: when a schedule fires, in a time zone, with no clock of its own.

Pure functions of the expression, the zone and a given instant, so workflow code may call them (the same answer on
every replay). Accepted:

- 5 fields `minute hour day-of-month month day-of-week`, or 6 with `second` first (for short test schedules);
  each field `*`, a value, a range `a-b`, a step `*/n` or `a-b/n` or `a/n`, or a comma list of these; month and
  weekday names (`jan`, `mon`); weekday 0 and 7 are Sunday. As in classic cron, when both day-of-month and
  day-of-week are restricted, a day matching either fires.
- `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`.
- `@every <duration>` (e.g. `@every 90s`, `@every 1h30m`): multiples of the duration since the Unix epoch, in UTC
  whatever the time zone, so a restarted schedule keeps its rhythm without remembering where it started.

Calendar schedules are evaluated on the zone's wall clock. Daylight saving time: a wall time that does not exist
(skipped when clocks go forward) does not fire; a wall time that happens twice (clocks go back) fires once, at its
first occurrence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_LENGTH = 256
# How far a search looks before it gives up: far enough for `0 0 29 2 mon` (Feb 29 on a Monday: every 28 years).
_HORIZON_YEARS = 30
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EVERY = re.compile(r"^@every\s+(\S+)$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_ONE_SECOND = timedelta(seconds=1)


GAP_SAMPLES = 500  # runs looked at to find a schedule's shortest gap (steadfast.schedules.rules)
_GAP_FROM = datetime(2001, 1, 1, tzinfo=UTC)


class CronError(ValueError):
    """An expression or time zone that cannot be evaluated; the message says which part and why."""


def zone(name: str | None) -> ZoneInfo:
    """The IANA time zone `name` (UTC when unset); CronError if the system's tz database does not know it."""
    if not name:
        return ZoneInfo("UTC")
    if name.startswith(("/", ".")) or ".." in name:
        raise CronError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CronError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)") from exc


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    offset: int = 0  # the value of names[0]


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day of week", 0, 7, _DAYS, 0),
)


def _value(text: str, field: _Field) -> int:
    lowered = text.lower()
    if lowered in field.names:
        return field.names.index(lowered) + field.offset
    if not text.isdigit():
        raise CronError(f"{field.name}: {text!r} is not a number")
    value = int(text)
    if not field.low <= value <= field.high:
        raise CronError(f"{field.name}: {value} is outside {field.low}-{field.high}")
    return value


def _parse_field(text: str, field: _Field) -> tuple[frozenset[int], bool]:
    """The values `text` allows, and whether it is unrestricted (`*`)."""
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(f"{field.name}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            low, high = field.low, field.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(first, field), _value(last, field)
            if low > high:
                raise CronError(f"{field.name}: range {base!r} runs backwards")
        else:
            low = _value(base, field)
            high = field.high if step_text else low
        values.update(range(low, high + 1, step))
    if field.name == "day of week" and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values), text == "*"


@dataclass(frozen=True)
class Schedule:
    """A parsed expression. `next_after` and `latest_at_or_before` take and return aware datetimes (UTC out)."""

    expression: str
    tz: ZoneInfo
    every: timedelta | None = None
    seconds: frozenset[int] = frozenset()
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()  # 0 = Sunday
    any_day: bool = True  # day of month is `*`
    any_weekday: bool = True

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled instant strictly after `moment`."""
        moment = moment.astimezone(UTC)
        if self.every is not None:
            step = self.every.total_seconds()
            return datetime.fromtimestamp((int(moment.timestamp() // step) + 1) * step, UTC)
        wall = moment.astimezone(self.tz).replace(tzinfo=None, microsecond=0)
        while True:
            wall = self._next_wall(wall + _ONE_SECOND)
            found = self._instant(wall)
            if found is not None and found > moment:
                return found

    def shortest_gap(self, samples: int = GAP_SAMPLES) -> timedelta:
        """The shortest time between two consecutive runs, over the first `samples` runs after 2001-01-01 (a
        cron's gaps repeat well within them: seconds and minutes cycle first), or the `@every` duration."""
        if self.every is not None:
            return self.every
        moment = self.next_after(_GAP_FROM)
        shortest: timedelta | None = None
        for _ in range(samples):
            following = self.next_after(moment)
            gap = following - moment
            shortest = gap if shortest is None else min(shortest, gap)
            if shortest <= _ONE_SECOND:
                break
            moment = following
        return shortest if shortest is not None else timedelta(days=366)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last scheduled instant at or before `moment`."""
        moment = moment.astimezone(UTC)
        if self.every is not None:
            step = self.every.total_seconds()
            return datetime.fromtimestamp(int(moment.timestamp() // step) * step, UTC)
        wall = moment.astimezone(self.tz).replace(tzinfo=None, microsecond=0)
        while True:
            wall = self._previous_wall(wall)
            found = self._instant(wall)
            if found is not None and found <= moment:
                break
            wall -= _ONE_SECOND
        # In the second pass of a repeated hour, wall times after `moment`'s already fired in the first pass.
        while (later := self.next_after(found)) <= moment:
            found = later
        return found

    def count_between(self, after: datetime, before: datetime, limit: int) -> int:
        """How many scheduled instants lie strictly between `after` and `before`, counting up to `limit`."""
        count = 0
        at = after
        while count < limit:
            at = self.next_after(at)
            if at >= before:
                break
            count += 1
        return count

    def _instant(self, wall: datetime) -> datetime | None:
        """The UTC instant of a wall time at its first occurrence; None when the wall time does not exist."""
        local = wall.replace(tzinfo=self.tz, fold=0)
        instant = local.astimezone(UTC)
        if instant.astimezone(self.tz).replace(tzinfo=None) != wall:
            return None  # skipped when the clocks went forward
        return instant

    def _day_matches(self, wall: datetime) -> bool:
        in_month = wall.day in self.days
        in_week = (wall.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def _next_wall(self, wall: datetime) -> datetime:
        """The first matching wall time at or after `wall`."""
        limit = wall.year + _HORIZON_YEARS
        while wall.year <= limit:
            if wall.month not in self.months:
                year, month = (wall.year + 1, 1) if wall.month == 12 else (wall.year, wall.month + 1)
                wall = datetime(year, month, 1)
            elif not self._day_matches(wall):
                wall = datetime(wall.year, wall.month, wall.day) + timedelta(days=1)
            elif wall.hour not in self.hours:
                wall = wall.replace(minute=0, second=0) + timedelta(hours=1)
            elif wall.minute not in self.minutes:
                wall = wall.replace(second=0) + timedelta(minutes=1)
            elif wall.second not in self.seconds:
                wall += _ONE_SECOND
            else:
                return wall
        raise CronError(f"{self.expression!r} never fires within {_HORIZON_YEARS} years")

    def _previous_wall(self, wall: datetime) -> datetime:
        """The last matching wall time at or before `wall`."""
        limit = wall.year - _HORIZON_YEARS
        while wall.year >= limit:
            if wall.month not in self.months:
                wall = datetime(wall.year, wall.month, 1) - _ONE_SECOND
            elif not self._day_matches(wall):
                wall = datetime(wall.year, wall.month, wall.day) - _ONE_SECOND
            elif wall.hour not in self.hours:
                wall = wall.replace(minute=0, second=0) - _ONE_SECOND
            elif wall.minute not in self.minutes:
                wall = wall.replace(second=0) - _ONE_SECOND
            elif wall.second not in self.seconds:
                wall -= _ONE_SECOND
            else:
                return wall
        raise CronError(f"{self.expression!r} never fired within {_HORIZON_YEARS} years")


def _every(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not text or match is None:
        raise CronError(f"@every {text!r}: a duration such as 30s, 5m or 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    length = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if length < _ONE_SECOND:
        raise CronError("@every: the duration must be at least 1s")
    return length


def parse(expression: str, time_zone: str | None = None) -> Schedule:
    """Parse `expression` for the zone `time_zone` (IANA name, UTC when unset); CronError says what is wrong."""
    tz = zone(time_zone)
    text = " ".join(expression.split())
    if len(text) > MAX_LENGTH:
        raise CronError(f"longer than {MAX_LENGTH} characters")
    every = _EVERY.match(text)
    if every is not None:
        return Schedule(text, tz, every=_every(every.group(1)))
    text = _MACROS.get(text.lower(), text)
    if text.startswith("@"):
        raise CronError(f"unknown macro {text.split()[0]!r}; known: {', '.join(sorted(_MACROS))}, @every <duration>")
    parts = text.split(" ")
    if len(parts) == 5:
        parts = ["0", *parts]
    elif len(parts) != 6:
        raise CronError(f"{len(parts)} fields; expected 5 (minute hour day month weekday) or 6 (seconds first)")
    parsed = [_parse_field(part, field) for part, field in zip(parts, _FIELDS, strict=True)]
    schedule = Schedule(
        text,
        tz,
        seconds=parsed[0][0],
        minutes=parsed[1][0],
        hours=parsed[2][0],
        days=parsed[3][0],
        months=parsed[4][0],
        weekdays=parsed[5][0],
        any_day=parsed[3][1],
        any_weekday=parsed[5][1],
    )
    schedule.next_after(datetime(2000, 1, 1, tzinfo=UTC))  # refuses `0 0 31 2 *` (never) now, not when due
    return schedule
