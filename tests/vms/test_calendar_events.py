"""Calendar events (``vms.jobs.calendar``): parsing, errors and the next event after a time, in local time."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from vms.exceptions import CalendarEventError
from vms.jobs.calendar import parse_calendar_event, verify_calendar_event


@pytest.fixture
def local_zone() -> Iterator[None]:
    """Run a test in another local time zone, restored afterwards."""
    saved = os.environ.get("TZ")
    yield
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


def _zone(name: str) -> None:
    os.environ["TZ"] = name
    time.tzset()


def _stamp(text: str) -> int:
    """Local 'YYYY-MM-DD HH:MM:SS' as epoch seconds."""
    return int(time.mktime((*datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timetuple()[:8], -1)))


def _local(stamp: int | None) -> str | None:
    return None if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S %a", time.localtime(stamp))


def _next(schedule: str, after: str) -> str | None:
    return _local(parse_calendar_event(schedule).next_after(_stamp(after)))


def _series(schedule: str, after: str, count: int) -> list[str | None]:
    event = parse_calendar_event(schedule)
    out: list[str | None] = []
    stamp: int | None = _stamp(after)
    for _ in range(count):
        assert stamp is not None
        stamp = event.next_after(stamp)
        out.append(_local(stamp))
    return out


# 2026-12-05 is a Saturday.
@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("sat 02:00", "2026-12-05 01:59:59", "2026-12-05 02:00:00 Sat"),
        ("sat 02:00", "2026-12-05 02:00:00", "2026-12-12 02:00:00 Sat"),  # strictly after
        ("mon..fri 22:00", "2026-12-04 22:00:00", "2026-12-07 22:00:00 Mon"),
        ("*/6:00", "2026-12-05 06:00:00", "2026-12-05 12:00:00 Sat"),
        ("*/6:00", "2026-12-05 19:00:00", "2026-12-06 00:00:00 Sun"),
        ("*/5", "2026-12-05 10:03:00", "2026-12-05 10:05:00 Sat"),  # a lone value is minutes
        ("30/10", "2026-12-05 10:55:00", "2026-12-05 11:30:00 Sat"),
        ("12:05", "2026-12-05 12:05:00", "2026-12-06 12:05:00 Sun"),
        ("*", "2026-12-05 10:00:30", "2026-12-05 10:01:00 Sat"),
        ("*-05", "2026-12-05 00:00:00", "2027-01-05 00:00:00 Tue"),
        ("Sat *-1..7 15:00", "2026-12-05 15:00:00", "2027-01-02 15:00:00 Sat"),
        ("2015-10-21", "2015-01-01 00:00:00", "2015-10-21 00:00:00 Wed"),
        ("2015-10-21", "2015-10-21 00:00:00", None),  # a past date never comes again
        ("*-02-29", "2026-12-05 00:00:00", "2028-02-29 00:00:00 Tue"),
        ("*-02-30", "2026-12-05 00:00:00", None),
        ("sun", "2026-12-05 10:00:00", "2026-12-06 00:00:00 Sun"),
        ("fri..mon 03:00", "2026-12-01 04:00:00", "2026-12-04 03:00:00 Fri"),  # wraps around the week
        ("monday,Wednesday 8:15", "2026-12-05 00:00:00", "2026-12-07 08:15:00 Mon"),
        ("10:00:30", "2026-12-05 10:00:00", "2026-12-05 10:00:30 Sat"),
        ("*:*:0/20", "2026-12-05 10:00:40", "2026-12-05 10:01:00 Sat"),
        ("2027/2-01-01", "2026-12-05 00:00:00", "2027-01-01 00:00:00 Fri"),
        ("2027/2-01-01", "2027-01-01 00:00:00", "2029-01-01 00:00:00 Mon"),
        ("2020..2027-06-01", "2027-06-01 00:00:00", None),
    ],
)
def test_next_event(schedule: str, after: str, expected: str | None, local_zone: None) -> None:
    _zone("UTC")
    assert _next(schedule, after) == expected


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("minutely", "2026-12-05 10:00:00", ["2026-12-05 10:01:00 Sat", "2026-12-05 10:02:00 Sat"]),
        ("hourly", "2026-12-05 10:00:00", ["2026-12-05 11:00:00 Sat", "2026-12-05 12:00:00 Sat"]),
        ("daily", "2026-12-05 10:00:00", ["2026-12-06 00:00:00 Sun", "2026-12-07 00:00:00 Mon"]),
        ("weekly", "2026-12-05 10:00:00", ["2026-12-07 00:00:00 Mon", "2026-12-14 00:00:00 Mon"]),
        ("monthly", "2026-12-05 10:00:00", ["2027-01-01 00:00:00 Fri", "2027-02-01 00:00:00 Mon"]),
        ("yearly", "2026-12-05 10:00:00", ["2027-01-01 00:00:00 Fri", "2028-01-01 00:00:00 Sat"]),
        ("annually", "2026-12-05 10:00:00", ["2027-01-01 00:00:00 Fri", "2028-01-01 00:00:00 Sat"]),
        ("quarterly", "2026-12-05 10:00:00", ["2027-01-01 00:00:00 Fri", "2027-04-01 00:00:00 Thu"]),
        ("semiannually", "2026-12-05 10:00:00", ["2027-01-01 00:00:00 Fri", "2027-07-01 00:00:00 Thu"]),
        ("semi-annually", "2026-12-05 10:00:00", ["2027-01-01 00:00:00 Fri", "2027-07-01 00:00:00 Thu"]),
        # Proxmox's documented examples
        (
            "mon..fri 8..17,22:0/15",
            "2026-12-04 17:40:00",
            ["2026-12-04 17:45:00 Fri", "2026-12-04 22:00:00 Fri", "2026-12-04 22:15:00 Fri"],
        ),
        (
            "fri 12..13:5/20",
            "2026-12-04 12:00:00",
            [f"2026-12-04 {t}:00 Fri" for t in ("12:05", "12:25", "12:45", "13:05", "13:25", "13:45")]
            + ["2026-12-11 12:05:00 Fri"],
        ),
        ("12/2:5", "2026-12-05 20:06:00", ["2026-12-05 22:05:00 Sat", "2026-12-06 12:05:00 Sun"]),
        ("mon..wed 30/10", "2026-12-06 23:00:00", ["2026-12-07 00:30:00 Mon", "2026-12-07 00:40:00 Mon"]),
    ],
)
def test_series(schedule: str, after: str, expected: list[str], local_zone: None) -> None:
    _zone("UTC")
    assert _series(schedule, after, len(expected)) == expected


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("mon,tue,wed,thu,fri", "mon..fri"),
        ("sat,sun", "sat..sun"),
        ("*/5", "0/5"),
        ("*:00/5", "0/1:0/5"),
        ("12,14,16,18,20,22:5", "12/2:5"),
        ("*", "*/1"),
        ("fri 12..13:5/20", "fri 12,13:5/20"),
        ("DAILY", "*-*-* 00:00"),
        ("  sat   02:00 ", "Sat 2:0:0"),
    ],
)
def test_equivalent_forms(one: str, other: str, local_zone: None) -> None:
    _zone("UTC")
    a, b = parse_calendar_event(one), parse_calendar_event(other)
    assert (a.weekdays, a.years, a.months, a.days, a.hours, a.minutes, a.seconds) == (
        b.weekdays,
        b.years,
        b.months,
        b.days,
        b.hours,
        b.minutes,
        b.seconds,
    )
    assert _series(one, "2026-12-05 10:00:00", 5) == _series(other, "2026-12-05 10:00:00", 5)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("", "empty calendar event"),
        ("   ", "empty calendar event"),
        ("sat 25:00", "hour 25 out of range 0..23"),
        ("12:60", "minute 60 out of range 0..59"),
        ("12:00:61", "second 61 out of range 0..59"),
        ("*-13-01", "month 13 out of range 1..12"),
        ("*-01-32", "day 32 out of range 1..31"),
        ("*-00-01", "month 0 out of range 1..12"),
        ("1969-01-01", "year 1969 out of range 1970..9999"),
        ("satur 02:00", "invalid weekday 'satur'"),
        ("mon..xyz", "invalid weekday 'xyz'"),
        ("mon,,tue", "invalid weekday ''"),
        ("17..8:00", "invalid hour range '17..8' (start after end)"),
        ("*/0", "invalid minute repetition '*/0' (a step of at least 1)"),
        ("1:2:3:4", "invalid time '1:2:3:4' (HOURS:MINUTES[:SECONDS])"),
        ("1-2-3-4", "invalid date '1-2-3-4' ([YEARS-]MONTHS-DAYS)"),
        ("sat 02:00 extra", "unexpected 'extra'"),
        ("02:00 sat", "unexpected 'sat'"),
        ("sat 2am", "invalid minute '2am'"),
        ("1,,2", "invalid minute ''"),
        ("-5", "invalid month ''"),
        ("a" * 300, "calendar event too long"),
    ],
)
def test_bad_events_say_what_is_wrong(schedule: str, message: str) -> None:
    with pytest.raises(CalendarEventError) as caught:
        parse_calendar_event(schedule)
    assert message in str(caught.value)
    with pytest.raises(ValueError):  # the API's validators catch ValueError
        verify_calendar_event(schedule)


def test_verify_returns_the_text() -> None:
    assert verify_calendar_event("mon..fri 22:00") == "mon..fri 22:00"
    assert parse_calendar_event("Sat 02:00").text == "Sat 02:00"


def test_local_time_is_used(local_zone: None) -> None:
    """The same schedule is a different instant in another zone: Proxmox schedules in local time."""
    after = 1_796_083_200  # 2026-12-01 00:00:00 UTC
    _zone("UTC")
    utc = parse_calendar_event("02:00").next_after(after)
    _zone("Asia/Tokyo")  # UTC+9, no DST
    tokyo = parse_calendar_event("02:00").next_after(after)
    assert utc is not None and tokyo is not None
    assert time.strftime("%H:%M", time.gmtime(utc)) == "02:00"
    assert time.strftime("%H:%M", time.localtime(tokyo)) == "02:00"
    assert time.strftime("%H:%M", time.gmtime(tokyo)) == "17:00"


def test_daylight_saving_changes(local_zone: None) -> None:
    """A daily event keeps its local hour over a DST change; the hour that does not exist is not skipped."""
    _zone("Europe/Vienna")
    # 2026-03-29: 02:00 CET -> 03:00 CEST; 2026-10-25: 03:00 CEST -> 02:00 CET.
    assert _series("01:30", "2026-03-28 12:00:00", 2) == ["2026-03-29 01:30:00 Sun", "2026-03-30 01:30:00 Mon"]
    spring = parse_calendar_event("02:30").next_after(_stamp("2026-03-29 00:00:00"))
    assert spring is not None and time.strftime("%Y-%m-%d", time.localtime(spring)) == "2026-03-29"
    stamps: list[int] = []
    event = parse_calendar_event("*:00")
    stamp: int | None = _stamp("2026-10-25 00:30:00")
    for _ in range(5):
        assert stamp is not None
        stamp = event.next_after(stamp)
        assert stamp is not None
        stamps.append(stamp)
    assert stamps == sorted(set(stamps))  # strictly increasing, never stuck in the repeated hour
    assert [time.strftime("%H:%M", time.localtime(s)) for s in stamps] == ["01:00", "02:00", "03:00", "04:00", "05:00"]


def test_an_event_that_never_comes() -> None:
    """An event that never comes (30 February) answers None without walking the seconds of its days."""
    assert parse_calendar_event("*-02-30 *:*:*").next_after(0) is None
