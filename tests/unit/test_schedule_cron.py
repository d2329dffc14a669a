"""The cron evaluator: fields, macros, @every, time zones and daylight saving time, the latest missed time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from steadfast.schedules.admission import interval_problem
from steadfast.schedules.cron import CronError, parse


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_five_fields_next_and_latest() -> None:
    every_quarter = parse("*/15 9-17 * * mon-fri")
    assert every_quarter.next_after(at("2026-12-04T17:50:00+00:00")) == at("2026-12-07T09:00:00+00:00")  # Fri->Mon
    assert every_quarter.latest_at_or_before(at("2026-12-06T12:00:00+00:00")) == at("2026-12-04T17:45:00+00:00")
    assert every_quarter.latest_at_or_before(at("2026-12-07T09:15:00+00:00")) == at("2026-12-07T09:15:00+00:00")


def test_six_fields_have_seconds_first() -> None:
    every_two = parse("*/2 * * * * *")
    assert every_two.next_after(at("2026-01-01T00:00:01.5+00:00")) == at("2026-01-01T00:00:02+00:00")
    assert every_two.next_after(at("2026-01-01T00:00:02+00:00")) == at("2026-01-01T00:00:04+00:00")
    assert every_two.latest_at_or_before(at("2026-01-01T00:00:03.9+00:00")) == at("2026-01-01T00:00:02+00:00")


def test_lists_names_and_sunday_as_seven() -> None:
    s = parse("0 12 * jan,jul 7")
    assert s.next_after(at("2026-01-01T00:00:00+00:00")) == at("2026-01-04T12:00:00+00:00")  # first Sunday
    assert s.next_after(at("2026-01-31T13:00:00+00:00")) == at("2026-07-05T12:00:00+00:00")


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    s = parse("0 0 13 * fri")  # the 13th, and every Friday (classic cron)
    assert s.next_after(at("2026-02-07T00:00:00+00:00")) == at("2026-02-13T00:00:00+00:00")  # Friday the 13th
    assert s.next_after(at("2026-03-07T00:00:00+00:00")) == at("2026-03-13T00:00:00+00:00")  # Friday
    assert s.next_after(at("2026-04-04T00:00:00+00:00")) == at("2026-04-10T00:00:00+00:00")  # Friday before 13th


def test_macros_and_every() -> None:
    assert parse("@daily").next_after(at("2026-05-05T10:00:00+00:00")) == at("2026-05-06T00:00:00+00:00")
    assert parse("@hourly").latest_at_or_before(at("2026-05-05T10:59:59+00:00")) == at("2026-05-05T10:00:00+00:00")
    ninety = parse("@every 90s", "Europe/Berlin")  # epoch-aligned, in UTC whatever the zone
    assert ninety.next_after(at("1970-01-01T00:00:00+00:00")) == at("1970-01-01T00:01:30+00:00")
    assert ninety.latest_at_or_before(at("1970-01-01T00:04:00+00:00")) == at("1970-01-01T00:03:00+00:00")


def test_time_zone_wall_clock() -> None:
    nine_berlin = parse("0 9 * * *", "Europe/Berlin")
    assert nine_berlin.next_after(at("2026-01-10T00:00:00+00:00")) == at("2026-01-10T08:00:00+00:00")  # CET
    assert nine_berlin.next_after(at("2026-07-10T00:00:00+00:00")) == at("2026-07-10T07:00:00+00:00")  # CEST


def test_dst_gap_skips_the_missing_wall_time() -> None:
    # 2026-03-29 in Berlin: 02:00 CET -> 03:00 CEST; 02:30 does not exist that day.
    s = parse("30 2 * * *", "Europe/Berlin")
    assert s.next_after(at("2026-03-28T12:00:00+00:00")) == at("2026-03-30T00:30:00+00:00")
    assert s.latest_at_or_before(at("2026-03-29T23:00:00+00:00")) == at("2026-03-28T01:30:00+00:00")


def test_dst_overlap_fires_once_at_the_first_occurrence() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST -> 02:00 CET; 02:30 happens twice.
    s = parse("30 2 * * *", "Europe/Berlin")
    first = s.next_after(at("2026-10-24T12:00:00+00:00"))
    assert first == at("2026-10-25T00:30:00+00:00")  # 02:30 CEST
    assert s.next_after(first) == at("2026-10-26T01:30:00+00:00")  # not 02:30 CET the same day
    # During the second pass of the hour, the latest run is still the first occurrence.
    assert s.latest_at_or_before(at("2026-10-25T01:45:00+00:00")) == first
    every_quarter = parse("*/15 * * * *", "Europe/Berlin")
    assert every_quarter.latest_at_or_before(at("2026-10-25T01:20:00+00:00")) == at("2026-10-25T00:45:00+00:00")
    assert every_quarter.next_after(at("2026-10-25T00:45:00+00:00")) == at("2026-10-25T02:00:00+00:00")


def test_count_between() -> None:
    s = parse("*/2 * * * * *")
    assert s.count_between(at("2026-01-01T00:00:00+00:00"), at("2026-01-01T00:00:10+00:00"), 100) == 4
    assert s.count_between(at("2026-01-01T00:00:00+00:00"), at("2026-01-02T00:00:00+00:00"), 100) == 100


@pytest.mark.parametrize(
    ("expression", "zone", "says"),
    [
        ("* * * *", None, "4 fields"),
        ("61 * * * *", None, "minute: 61 is outside 0-59"),
        ("0 0 31 2 *", None, "never fires"),
        ("*/0 * * * *", None, "step '0'"),
        ("5-1 * * * *", None, "runs backwards"),
        ("@fortnightly", None, "unknown macro"),
        ("@every 0s", None, "at least 1s"),
        ("@every soon", None, "a duration"),
        ("0 * * * *", "Mars/Olympus", "unknown time zone"),
        ("0 * * * *", "../etc/passwd", "unknown time zone"),
    ],
)
def test_refusals_say_what_is_wrong(expression: str, zone: str | None, says: str) -> None:
    with pytest.raises(CronError, match=says.replace("(", r"\(")):
        parse(expression, zone)


@pytest.mark.parametrize(
    ("cron", "zone_name", "gap"),
    [
        ("* * * * * *", None, timedelta(seconds=1)),
        ("*/2 * * * * *", None, timedelta(seconds=2)),
        ("0,1 0 * * * *", None, timedelta(seconds=1)),  # two runs a second apart once an hour
        ("*/5 * * * *", None, timedelta(minutes=5)),
        ("0 2 * * *", "UTC", timedelta(days=1)),
        ("0 9 * * MON", "Europe/Berlin", timedelta(days=6, hours=23)),  # the week clocks go forward
        ("@every 90s", None, timedelta(seconds=90)),
    ],
)
def test_shortest_gap_between_two_runs(cron: str, zone_name: str | None, gap: timedelta) -> None:
    assert parse(cron, zone_name).shortest_gap() == gap


def test_a_schedule_more_often_than_the_minimum_is_refused_naming_the_field() -> None:
    minute = timedelta(minutes=1)

    def body(cron: str, zone_name: str | None = None) -> dict[str, Any]:
        return {"spec": {"schedule": cron, **({"timeZone": zone_name} if zone_name else {})}}

    assert interval_problem(None, body("*/10 * * * * *"), minute) == (
        "spec.schedule: runs as little as 10s apart; this cluster allows schedules at least 1m apart "
        "(the operator's --min-schedule-interval)"
    )
    assert interval_problem(None, body("*/1 * * * *"), minute) is None
    assert interval_problem(None, body("@every 30s"), timedelta(seconds=1)) is None  # 1s: no limit
    assert interval_problem(None, body("not a cron"), minute) is None  # the model's to refuse
    # An edit that leaves the schedule and its zone alone passes (admitted under a smaller minimum before).
    assert interval_problem(body("*/10 * * * * *"), body("*/10 * * * * *"), minute) is None
    assert interval_problem(body("*/1 * * * *"), body("*/10 * * * * *"), minute) is not None
