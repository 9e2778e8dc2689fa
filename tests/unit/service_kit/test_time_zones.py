"""The time zone a request names: an IANA name, or none for UTC; anything else refused."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from service_kit.time_zones import time_zone


def test_an_iana_name_is_its_zone_and_none_is_utc() -> None:
    assert time_zone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    assert time_zone("") is UTC
    summer = datetime(2026, 7, 1, 12, tzinfo=UTC).astimezone(time_zone("Europe/Berlin"))
    assert summer.utcoffset() is not None and summer.utcoffset().total_seconds() == 7200


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "Europe", "../../etc/passwd", "/etc/localtime", "zone.tab", "x" * 65]
)
def test_any_other_name_is_refused_with_a_message_that_says_what_to_send(name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown time zone .*use an IANA name"):
        time_zone(name)
