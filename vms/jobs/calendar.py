"""Proxmox calendar events (systemd-like schedules such as ``sat 02:00`` or ``mon..fri *:0/15``).

Format: ``[WEEKDAY] [[YEARS-]MONTHS-DAYS] [HOURS:MINUTES[:SECONDS]]``. Each field is a comma
list of ``*``, values, ranges ``a..b`` and repetitions ``a/step``, ``a..b/step`` or ``*/step``.
A time without ``:`` is minutes (every hour); a missing time is 00:00:00; a missing weekday or
date means every day. Named events (``daily``, ``weekly`` ...) stand for their expansions.
Times are local, as Proxmox computes them. Pure code: no Django, no clock.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from vms.exceptions import CalendarEventError

MAX_LENGTH = 256
LAST_YEAR = 2199  # the search for a next event gives up after this year: it never comes
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # date.weekday() order
LONG_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
NAMED = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00",
    "semi-annually": "*-01,07-01 00:00:00",
}
_ITEM_RE = re.compile(r"^(?:(?P<star>\*)|(?P<start>\d{1,4})(?:\.\.(?P<end>\d{1,4}))?)(?:/(?P<step>\d{1,4}))?$")


@dataclass(frozen=True)
class YearRule:
    """Years from ``start`` to ``end`` (None: no end) every ``step`` years."""

    start: int
    end: int | None
    step: int

    def matches(self, year: int) -> bool:
        return year >= self.start and (self.end is None or year <= self.end) and (year - self.start) % self.step == 0


@dataclass(frozen=True)
class CalendarEvent:
    """A parsed schedule: the allowed values of each field, sorted."""

    text: str
    weekdays: frozenset[int]
    years: tuple[YearRule, ...]  # empty: every year
    months: tuple[int, ...]
    days: tuple[int, ...]
    hours: tuple[int, ...]
    minutes: tuple[int, ...]
    seconds: tuple[int, ...]

    def next_after(self, after: float) -> int | None:
        """The first event time (epoch seconds) strictly after ``after``; None if there is none before 2200."""
        start = datetime(*time.localtime(int(after) + 1)[:6])
        for moment in self._local_times(start):
            stamp = int(time.mktime((*moment.timetuple()[:8], -1)))
            if stamp > after:  # a local time in a DST fold can map to an earlier instant: skip it
                return stamp
        return None

    def _local_times(self, start: datetime) -> Iterator[datetime]:
        """Every matching local time not before ``start``, in order."""
        for year in range(start.year, LAST_YEAR + 1):
            if self.years and not any(rule.matches(year) for rule in self.years):
                continue
            first_day = (start.month, start.day) if year == start.year else None
            for month, day in _product_from([self.months, self.days], first_day):
                if day > calendar.monthrange(year, month)[1] or date(year, month, day).weekday() not in self.weekdays:
                    continue
                first_time = (start.hour, start.minute, start.second) if (month, day) == first_day else None
                for hour, minute, second in _product_from([self.hours, self.minutes, self.seconds], first_time):
                    yield datetime(year, month, day, hour, minute, second)


def _product_from(lists: Sequence[Sequence[int]], lower: Sequence[int] | None) -> Iterator[tuple[int, ...]]:
    """The tuples of the product of sorted ``lists`` in order, from ``lower`` on (None: from the first)."""
    if not lists:
        yield ()
        return
    for value in lists[0]:
        if lower is not None and value < lower[0]:
            continue
        rest_lower = lower[1:] if lower is not None and value == lower[0] else None
        for rest in _product_from(lists[1:], rest_lower):
            yield (value, *rest)


def _values(spec: str, what: str, low: int, high: int) -> tuple[int, ...]:
    """The sorted values of one field (``*``, ``5``, ``1..7``, ``0/15``, ``8..17/2``, comma lists)."""
    found: set[int] = set()
    for item in spec.split(","):
        start, end, step = _item(item, what, low, high)
        found.update(range(start, (high if end is None else end) + 1, step))
    return tuple(sorted(found))


def _item(item: str, what: str, low: int, high: int) -> tuple[int, int | None, int]:
    """(start, end or None for 'to the field's end', step) of one list item, bounds checked."""
    match = _ITEM_RE.match(item)
    if match is None:
        raise CalendarEventError(f"invalid {what} '{item}'")
    step = int(match["step"]) if match["step"] is not None else 1
    if step < 1:
        raise CalendarEventError(f"invalid {what} repetition '{item}' (a step of at least 1)")
    if match["star"]:
        return low, None, step
    start = int(match["start"])
    end = int(match["end"]) if match["end"] is not None else (None if match["step"] is not None else start)
    for value in (start, end):
        if value is not None and not low <= value <= high:
            raise CalendarEventError(f"{what} {value} out of range {low}..{high}")
    if end is not None and end < start:
        raise CalendarEventError(f"invalid {what} range '{item}' (start after end)")
    return start, end, step


def _years(spec: str) -> tuple[YearRule, ...]:
    if spec == "*":
        return ()
    rules = []
    for item in spec.split(","):
        start, end, step = _item(item, "year", 1970, 9999)
        rules.append(YearRule(start, end, step))
    return tuple(rules)


def _weekday(name: str) -> int:
    for names in (WEEKDAYS, LONG_WEEKDAYS):
        if name in names:
            return names.index(name)
    raise CalendarEventError(f"invalid weekday '{name}'")


def _weekdays(spec: str) -> frozenset[int]:
    """``mon,wed``, ``mon..fri``; a range may wrap around the week (``fri..mon``)."""
    days: set[int] = set()
    for item in spec.split(","):
        first, sep, last = item.partition("..")
        start = _weekday(first)
        end = _weekday(last) if sep else start
        days.update((start + offset) % 7 for offset in range((end - start) % 7 + 1))
    return frozenset(days)


def parse_calendar_event(text: str) -> CalendarEvent:
    """Parse a schedule; CalendarEventError says what is wrong with it."""
    if not isinstance(text, str):
        raise CalendarEventError("a calendar event is a string")
    if len(text) > MAX_LENGTH:
        raise CalendarEventError(f"calendar event too long (at most {MAX_LENGTH} characters)")
    spec = " ".join(text.lower().split())
    if not spec:
        raise CalendarEventError("empty calendar event")
    tokens = NAMED.get(spec, spec).split(" ")
    weekdays = frozenset(range(7))
    if tokens[0][:1].isalpha():
        weekdays = _weekdays(tokens.pop(0))
    date_spec = tokens.pop(0) if tokens and "-" in tokens[0] else None
    time_spec = tokens.pop(0) if tokens and "-" not in tokens[0] else None
    if tokens:
        raise CalendarEventError(f"unexpected '{tokens[0]}' (format: [WEEKDAY] [[YEARS-]MONTHS-DAYS] [HH:MM[:SS]])")
    years: tuple[YearRule, ...] = ()
    months, days = tuple(range(1, 13)), tuple(range(1, 32))
    if date_spec is not None:
        parts = date_spec.split("-")
        if len(parts) not in (2, 3):
            raise CalendarEventError(f"invalid date '{date_spec}' ([YEARS-]MONTHS-DAYS)")
        if len(parts) == 3:
            years = _years(parts.pop(0))
        months, days = _values(parts[0], "month", 1, 12), _values(parts[1], "day", 1, 31)
    hours: tuple[int, ...] = (0,)
    minutes: tuple[int, ...] = (0,)
    seconds: tuple[int, ...] = (0,)
    if time_spec is not None:
        parts = time_spec.split(":")
        if len(parts) > 3:
            raise CalendarEventError(f"invalid time '{time_spec}' (HOURS:MINUTES[:SECONDS])")
        if len(parts) == 1:  # Proxmox: a lone value is minutes, every hour
            parts = ["*", parts[0]]
        hours, minutes = _values(parts[0], "hour", 0, 23), _values(parts[1], "minute", 0, 59)
        seconds = _values(parts[2], "second", 0, 59) if len(parts) == 3 else (0,)
    return CalendarEvent(text, weekdays, years, months, days, hours, minutes, seconds)


def verify_calendar_event(text: str) -> str:
    """``text`` if it parses (the API's ``pve-calendar-event`` format), else CalendarEventError."""
    parse_calendar_event(text)
    return text
