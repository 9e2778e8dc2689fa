"""The times a query names and the times a memory is about, for the hybrid ranking's date
rule: "What did I watch on 1 May, 2022?" finds the memory saved on 2 May that says "last
night", and "in March 2023" the one saved in April that says "last month".

A period is a first and a last day, as proleptic Gregorian ordinals (`date.toordinal`). A
query names days ("on 1 May, 2022", "May 1, 2022", "2022-05-01"), else months ("in March
2023"), else years ("in 2023"): the most specific kind it has. A month without a year ("in
May", "the second week of November") names that month of any year. A memory is about the day
it was saved (its `created_at`, on the day it was in the person's time zone), every date
written in it, and the days its relative words point to, counted from the day it was saved.
A query's own relative words ("what did I say yesterday") point from the day it is asked on,
in that zone, when the caller knows that day (`LocalCalendar`). What it says of its own
(`says_about`) leaves out the day it was saved: a turn saved in March that says "last month"
is about February by what it says, while every turn saved in March is about March. A date
written in a memory is something it says, never when it was said.
"""

from __future__ import annotations

import calendar
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo

Period = tuple[int, int]

_MONTH_NAMES = {name.lower(): n for n, name in enumerate(calendar.month_name) if name}
_MONTH_NAMES.update({name.lower(): n for n, name in enumerate(calendar.month_abbr) if name})
_MONTH_NAMES["sept"] = 9
_MONTH = (
    r"(january|february|march|april|may|june|july|august|september|october|november|"
    r"december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)"
)
_ORDINAL = r"(\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"((?:19|20)\d\d)"
# Between a day or month and its year: a comma with or without a space, or a space.
_THEN_YEAR = r"(?:,\s*|\s+)"
# "1 May, 2022", "1st of May 2022"
_DAY_FIRST = re.compile(rf"\b{_ORDINAL}\s+(?:of\s+)?{_MONTH}{_THEN_YEAR}{_YEAR}\b", re.IGNORECASE)
# "May 1, 2022", "May 1st 2022", "December 1,2023"
_MONTH_FIRST = re.compile(rf"\b{_MONTH}\s+{_ORDINAL}{_THEN_YEAR}{_YEAR}\b", re.IGNORECASE)
_ISO = re.compile(rf"\b{_YEAR}-(\d\d)-(\d\d)\b")
_MONTH_YEAR = re.compile(rf"\b{_MONTH},?\s+{_YEAR}\b", re.IGNORECASE)
_IN_YEAR = re.compile(rf"\b(?:in|during|of|since|by|throughout)\s+{_YEAR}\b", re.IGNORECASE)
# A month named without a year: "in May", "the second week of November", "since early June".
# Full names only ("mar" and "sep" are words too), and "may" only as "May".
_IN_MONTH = re.compile(
    r"\b(?:in|during|of|since|by|throughout|until|before|after)\s+(?:early\s+|late\s+|mid-?)?"
    r"(January|February|March|April|May|June|July|August|September|October|November|December)"
    r"\b(?![,\s]*\d)",
    re.IGNORECASE,
)

_WEEKDAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_FEW = r"(?:a|one|1|two|2|three|3|few|a few|couple of|a couple of)"


def _days(first: int, last: int) -> Callable[[int], Period]:
    return lambda day: (day + first, day + last)


def _months(shift: int) -> Callable[[int], Period]:
    def period(day: int) -> Period:
        when = date.fromordinal(day)
        year, month = divmod(when.year * 12 + when.month - 1 + shift, 12)
        return _month(year, month + 1)

    return period


def _years(shift: int) -> Callable[[int], Period]:
    return lambda day: _year(date.fromordinal(day).year + shift)


# Relative words and the period each points to from the day they were said.
_RELATIVE: list[tuple[re.Pattern[str], Callable[[int], Period]]] = [
    (re.compile(r"\b(?:today|tonight|this (?:morning|afternoon|evening))\b", re.I), _days(0, 0)),
    (re.compile(r"\b(?:yesterday|last night)\b", re.I), _days(-1, -1)),
    (re.compile(rf"\b(?:last (?:week|weekend|{_WEEKDAYS}))\b", re.I), _days(-8, -1)),
    (re.compile(rf"\b{_FEW} days ago\b", re.I), _days(-4, -1)),
    (re.compile(rf"\b{_FEW} weeks? ago\b", re.I), _days(-21, -5)),
    (re.compile(r"\b(?:last month|a month ago|one month ago)\b", re.I), _months(-1)),
    (re.compile(r"\b(?:two|2) months ago\b", re.I), _months(-2)),
    (re.compile(r"\b(?:last year|a year ago|one year ago)\b", re.I), _years(-1)),
    (re.compile(r"\btomorrow\b", re.I), _days(1, 1)),
    (re.compile(rf"\bnext (?:week|weekend|{_WEEKDAYS})\b", re.I), _days(1, 8)),
    (re.compile(r"\bnext month\b", re.I), _months(1)),
    (re.compile(r"\bnext year\b", re.I), _years(1)),
]


def _day(year: int, month: int, day: int) -> Period | None:
    try:
        ordinal = date(year, month, day).toordinal()
    except ValueError:
        return None
    return ordinal, ordinal


def _month(year: int, month: int) -> Period:
    last = calendar.monthrange(year, month)[1]
    return date(year, month, 1).toordinal(), date(year, month, last).toordinal()


def _year(year: int) -> Period:
    return date(year, 1, 1).toordinal(), date(year, 12, 31).toordinal()


def _month_number(name: str) -> int:
    return _MONTH_NAMES[name.lower()]


def _written_days(text: str) -> list[Period]:
    """Every full date written in the text, in the order written."""
    found: list[tuple[int, Period | None]] = []
    for match in _DAY_FIRST.finditer(text):
        day, month, year = match.groups()
        found.append((match.start(), _day(int(year), _month_number(month), int(day))))
    for match in _MONTH_FIRST.finditer(text):
        month, day, year = match.groups()
        found.append((match.start(), _day(int(year), _month_number(month), int(day))))
    for match in _ISO.finditer(text):
        year, month, day = match.groups()
        found.append((match.start(), _day(int(year), int(month), int(day))))
    return [period for _, period in sorted(found, key=lambda f: f[0]) if period is not None]


@dataclass(frozen=True, slots=True)
class LocalCalendar:
    """Whose days the time rules count: the person's time zone, and the day a query is asked
    on there (an ordinal; None: a query's relative words point nowhere)."""

    zone: tzinfo = UTC
    today: int | None = None

    @classmethod
    def at(cls, zone: tzinfo, now: datetime) -> LocalCalendar:
        """The calendar of someone in `zone` asking at `now`."""
        return cls(zone, now.astimezone(zone).date().toordinal())


# Days in UTC, and no day asked on: what ranking without a person at hand counts in.
UTC_CALENDAR = LocalCalendar()


def relative_periods(text: str, day: int) -> list[Period]:
    """The periods the text's relative words point to from `day`."""
    return [period(day) for pattern, period in _RELATIVE if pattern.search(text)]


@functools.lru_cache(maxsize=1024)
def named_periods(query: str, today: int | None = None) -> tuple[Period, ...]:
    """The days a query names, else (asked on `today`) the periods its relative words point
    to, else its months, else its years; () when it names none."""
    days = _written_days(query)
    if days:
        return tuple(days)
    if today is not None:
        relative = relative_periods(query, today)
        if relative:
            return tuple(relative)
    months = [_month(int(year), _month_number(month)) for month, year in _MONTH_YEAR.findall(query)]
    if months:
        return tuple(months)
    return tuple(_year(int(year)) for year in _IN_YEAR.findall(query))


@functools.lru_cache(maxsize=1024)
def named_months(query: str) -> tuple[int, ...]:
    """The months (1-12) a query names without a year, when it names no period."""
    if named_periods(query):
        return ()
    return tuple(
        _month_number(match.group(1))
        for match in _IN_MONTH.finditer(query)
        if match.group(1).lower() != "may" or match.group(1) == "May"
    )


@functools.lru_cache(maxsize=4096)
def memory_periods(text: str, saved_day: int) -> tuple[tuple[Period, ...], tuple[Period, ...]]:
    """When a memory was said (the day it was saved) and what it says (the dates written in
    it, and the periods its relative words point to from the day it was saved)."""
    relative = relative_periods(text, saved_day)
    return ((saved_day, saved_day),), (*_written_days(text), *relative)


def saved_day(created_at: float, zone: tzinfo = UTC) -> int:
    """The day in `zone` of a creation time in epoch seconds."""
    return datetime.fromtimestamp(created_at, tz=zone).date().toordinal()


def _overlaps(periods: Sequence[Period], months: Sequence[int], own: Sequence[Period]) -> bool:
    """Whether any of a memory's own periods meets one of the periods, or one of the months
    in the years it spans."""
    for first, last in own:
        named = [*periods]
        for year in range(date.fromordinal(first).year, date.fromordinal(last).year + 1):
            named.extend(_month(year, month) for month in months)
        if any(a <= last and first <= b for a, b in named):
            return True
    return False


def is_about(
    periods: Sequence[Period],
    text: str,
    created_at: float,
    months: Sequence[int] = (),
    zone: tzinfo = UTC,
) -> bool:
    """Whether a memory is about a time in one of the periods or months (of any year): saved
    then, or said then, or saying so; its days are those of `zone`."""
    if not periods and not months:
        return False
    said, says = memory_periods(text, saved_day(created_at, zone))
    return _overlaps(periods, months, (*said, *says))


def says_about(
    periods: Sequence[Period],
    text: str,
    created_at: float,
    months: Sequence[int] = (),
    zone: tzinfo = UTC,
) -> bool:
    """Whether a memory says, in its own words, that something was in one of the periods or
    months: a date written after its first, or its relative words ("last month")."""
    if not periods and not months:
        return False
    return _overlaps(periods, months, memory_periods(text, saved_day(created_at, zone))[1])
