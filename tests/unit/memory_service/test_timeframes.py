"""The times a query names and a memory is about, for the date rule."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from memory_service import timeframes


def day(year: int, month: int, d: int) -> int:
    return date(year, month, d).toordinal()


def saved(year: int, month: int, d: int) -> float:
    return datetime(year, month, d, 12, tzinfo=UTC).timestamp()


def test_a_query_names_days_else_months_else_years() -> None:
    may_1 = (day(2022, 5, 1), day(2022, 5, 1))
    assert timeframes.named_periods("What did I watch on 1 May, 2022?") == (may_1,)
    assert timeframes.named_periods("what did I watch on May 1st, 2022") == (may_1,)
    assert timeframes.named_periods("notes from 2022-05-01") == (may_1,)
    assert timeframes.named_periods("What did we attend in March 2023?") == (
        (day(2023, 3, 1), day(2023, 3, 31)),
    )
    assert timeframes.named_periods("How often did I swim in 2023?") == (
        (day(2023, 1, 1), day(2023, 12, 31)),
    )
    # A comma with no space still ends the day.
    assert timeframes.named_periods("the picture shared on December 1,2023") == (
        (day(2023, 12, 1), day(2023, 12, 1)),
    )
    # The most specific kind wins: the day, not its month.
    assert timeframes.named_periods("on 3 June, 2023, in June 2023") == (
        (day(2023, 6, 3), day(2023, 6, 3)),
    )


def test_a_query_without_a_full_date_names_nothing() -> None:
    for query in (
        "What did I do in May?",
        "How many turtles does Nate have?",
        "the 2023 budget",
        "error 2024-13-45 in the log",
    ):
        assert timeframes.named_periods(query) == (), query
    # A day that does not exist still names its month.
    assert timeframes.named_periods("on 31 February, 2023") == (
        (day(2023, 2, 1), day(2023, 2, 28)),
    )


def test_a_memory_is_about_the_day_it_was_saved_and_the_dates_written_in_it() -> None:
    may_1 = timeframes.named_periods("on 1 May, 2022")

    assert timeframes.is_about(may_1, "watched the trilogy", saved(2022, 5, 1))
    assert not timeframes.is_about(may_1, "watched the trilogy", saved(2022, 5, 3))
    assert timeframes.is_about(may_1, "the flight is on May 1, 2022", saved(2024, 1, 1))


def test_relative_words_count_from_the_day_it_was_saved_never_from_a_written_date() -> None:
    # Saved on 2 May: "yesterday" is 1 May.
    may_1 = timeframes.named_periods("on 1 May, 2022")
    assert timeframes.is_about(may_1, "I watched it yesterday", saved(2022, 5, 2))
    assert not timeframes.is_about(may_1, "I watched it yesterday", saved(2022, 5, 5))
    # A date written at its start is not when it was said: "last night" counts from the save.
    quoted = "(2 May, 2022) I watched it last night!"
    assert not timeframes.is_about(may_1, quoted, saved(2026, 1, 1))
    assert timeframes.is_about(may_1, quoted.replace("(2 May, 2022) ", ""), saved(2022, 5, 2))
    # Saved in April: "last month" is March.
    march = timeframes.named_periods("in March 2023")
    said = "my colleagues and I went to a convention last month"
    assert timeframes.is_about(march, said, saved(2023, 4, 18))
    assert not timeframes.is_about(march, said.replace("last month", "today"), saved(2023, 4, 18))
    # Said in January 2024: "last year" is 2023; "next week" points ahead.
    assert timeframes.is_about(
        timeframes.named_periods("in 2023"), "we moved last year", saved(2024, 1, 10)
    )
    assert timeframes.is_about(
        timeframes.named_periods("on 9 January, 2024"), "see you next week", saved(2024, 1, 3)
    )


def test_a_query_that_names_no_time_matches_no_memory() -> None:
    assert not timeframes.is_about((), "yesterday on 1 May, 2022", saved(2022, 5, 1))


def test_a_month_without_a_year_is_that_month_of_any_year() -> None:
    assert timeframes.named_months("When did Melanie go camping in June?") == (6,)
    assert timeframes.named_months("Where was Tim in the second week of November?") == (11,)
    assert timeframes.named_months("What did we do since early March?") == (3,)
    assert timeframes.named_months("Which spot did Joanna visit in May?") == (5,)
    # "may" is a verb; a named year makes it a period; a bare word is no time.
    assert timeframes.named_months("what else may I add in may") == ()
    assert timeframes.named_months("What did we attend in March 2023?") == ()
    assert timeframes.named_months("the march was long") == ()

    june = timeframes.named_months("in June")
    assert timeframes.is_about((), "we went camping", saved(2021, 6, 14), june)
    assert timeframes.is_about((), "camping last week was great", saved(2023, 7, 2), june)
    assert not timeframes.is_about((), "we went camping", saved(2021, 8, 14), june)


def test_what_a_memory_says_leaves_out_when_it_was_said() -> None:
    march = timeframes.named_periods("in March 2023")
    said = "my colleagues and I went to a convention last month"
    assert timeframes.says_about(march, said, saved(2023, 4, 18))
    # Saved in March, saying nothing of when: about March, but not in its own words.
    plain = "we had a picnic in the park"
    assert timeframes.is_about(march, plain, saved(2023, 3, 6))
    assert not timeframes.says_about(march, plain, saved(2023, 3, 6))
    # Any date written in it, the first too, is something it says.
    assert timeframes.says_about(march, "the talk was on 9 March, 2023", saved(2026, 1, 1))
    assert timeframes.says_about(march, "(9 March, 2023) the talk", saved(2026, 1, 1))
    assert not timeframes.says_about((), said, saved(2023, 4, 18))


# The person is two hours ahead of UTC all year (no daylight saving time).
JOHANNESBURG = ZoneInfo("Africa/Johannesburg")
# Day D, 23:30 UTC: 01:30 on D + 1 in Johannesburg.
LATE_ON_D = datetime(2026, 3, 10, 23, 30, tzinfo=UTC).timestamp()
# Asked on D + 2, 07:00 in Johannesburg (05:00 UTC, also D + 2).
ASKED = datetime(2026, 3, 12, 7, 0, tzinfo=JOHANNESBURG)


def test_a_memory_is_on_the_day_it_was_saved_in_the_persons_time_zone() -> None:
    assert timeframes.saved_day(LATE_ON_D) == day(2026, 3, 10)
    assert timeframes.saved_day(LATE_ON_D, JOHANNESBURG) == day(2026, 3, 11)
    # Its own relative words count from that day too.
    friday = timeframes.named_periods("on 10 March, 2026")
    assert timeframes.says_about(friday, "I slept badly last night", LATE_ON_D, zone=JOHANNESBURG)
    assert not timeframes.says_about(friday, "I slept badly last night", LATE_ON_D)


def test_a_querys_relative_words_count_from_the_day_it_is_asked_on() -> None:
    local = timeframes.LocalCalendar.at(JOHANNESBURG, ASKED)
    assert local.today == day(2026, 3, 12)
    yesterday = timeframes.named_periods("what did I say yesterday", local.today)
    assert yesterday == ((day(2026, 3, 11), day(2026, 3, 11)),)
    assert timeframes.named_periods("what did I say last week", local.today) == (
        (day(2026, 3, 4), day(2026, 3, 11)),
    )
    # A date the query writes wins over its relative words; no day asked on, no relative words.
    assert timeframes.named_periods("yesterday, on 1 May, 2022", local.today) == (
        (day(2022, 5, 1), day(2022, 5, 1)),
    )
    assert timeframes.named_periods("what did I say yesterday") == ()

    # The memory saved at 23:30 UTC on D was said "yesterday" for the person asking on D + 2
    # in their zone; counted in UTC it was two days before.
    assert timeframes.is_about(yesterday, "booked the table", LATE_ON_D, zone=JOHANNESBURG)
    utc = timeframes.LocalCalendar.at(UTC, ASKED)
    assert utc.today == day(2026, 3, 12)
    in_utc = timeframes.named_periods("what did I say yesterday", utc.today)
    assert not timeframes.is_about(in_utc, "booked the table", LATE_ON_D)
