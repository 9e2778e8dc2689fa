"""The person's time zone as requests carry it: an IANA name ("Europe/Berlin"), or none (UTC).
One rule for the gateway, which answers a bad name with 422, and the services behind it."""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, tzinfo

# Longer than any IANA name (the longest are about 30 characters).
MAX_TIME_ZONE_CHARS = 64


@functools.cache
def _known() -> frozenset[str]:
    # The zone database's names, not whatever file TZPATH holds ("localtime", "zone.tab").
    return frozenset(zoneinfo.available_timezones())


def time_zone(name: str) -> tzinfo:
    """The zone an IANA name names, UTC for ""; ValueError for any other name."""
    if not name:
        return UTC
    if len(name) > MAX_TIME_ZONE_CHARS or name not in _known():
        shown = name if len(name) <= MAX_TIME_ZONE_CHARS else name[:MAX_TIME_ZONE_CHARS] + "…"
        raise ValueError(f"unknown time zone {shown!r}; use an IANA name such as Europe/Berlin")
    return zoneinfo.ZoneInfo(name)
