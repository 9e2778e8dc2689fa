"""The times a query names and a memory is about, for the date rule."""

from __future__ import annotations

from datetime import UTC, date, datetime

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


def test_relative_words_count_from_the_first_written_date_else_the_save_day() -> None:
    # Said on 2 May: "last night" is 1 May.
    may_1 = timeframes.named_periods("on 1 May, 2022")
    assert timeframes.is_about(may_1, "(2 May, 2022) I watched it last night!", saved(2026, 1, 1))
    assert timeframes.is_about(may_1, "I watched it yesterday", saved(2022, 5, 2))
    assert not timeframes.is_about(may_1, "I watched it yesterday", saved(2022, 5, 5))
    # Said in April: "last month" is March.
    march = timeframes.named_periods("in March 2023")
    said = "(18 April, 2023) my colleagues and I went to a convention last month"
    assert timeframes.is_about(march, said, saved(2026, 1, 1))
    assert not timeframes.is_about(march, said.replace("last month", "today"), saved(2026, 1, 1))
    # Said in January 2024: "last year" is 2023; "next week" points ahead.
    assert timeframes.is_about(
        timeframes.named_periods("in 2023"), "we moved last year", saved(2024, 1, 10)
    )
    assert timeframes.is_about(
        timeframes.named_periods("on 9 January, 2024"), "see you next week", saved(2024, 1, 3)
    )


def test_a_query_that_names_no_time_matches_no_memory() -> None:
    assert not timeframes.is_about((), "yesterday on 1 May, 2022", saved(2022, 5, 1))
