"""Listings newest first, a page at a time, and the cursor that says where a page stopped."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from memory_service.models import Memory, SearchFilters
from memory_service.store.interface import MemoryStore
from memory_service.store.ownership import tenant_conditions
from memory_service.store.payload import with_created_at

# Memories sharing one creation time that a page may have to step over; a batch save
# (at most 256 items) is the largest group with one time.
MAX_SKIP = 100_000


@dataclass(frozen=True)
class ListCursor:
    """Where a newest-first listing stopped: the creation time of the last memory returned,
    and how many memories with exactly that time were returned (a batch can share one)."""

    created_at: float
    seen_at_time: int


def encode_cursor(cursor: ListCursor) -> str:
    raw = f"{cursor.created_at!r}/{cursor.seen_at_time}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> ListCursor:
    """The position a cursor stands for; ValueError for anything this store did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, seen = raw.split("/")
        decoded = ListCursor(float(created_at), int(seen))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("malformed cursor") from exc
    if not math.isfinite(decoded.created_at) or not 0 <= decoded.seen_at_time <= MAX_SKIP:
        raise ValueError("malformed cursor")
    return decoded


def scroll_window(limit: int, cursor: ListCursor | None) -> tuple[float | None, int]:
    """Where the next page starts (newest first) and how many records to ask for."""
    if cursor is None:
        return None, limit + 1
    return cursor.created_at, cursor.seen_at_time + limit + 1


def newest_first_page(
    records: Sequence[tuple[float, Memory]], limit: int, cursor: ListCursor | None
) -> tuple[list[Memory], str | None]:
    """One page from records ordered newest first starting at the cursor's time: those the
    previous pages returned are skipped, and the cursor says where this page stopped."""
    skip = 0
    if cursor is not None:
        while skip < min(cursor.seen_at_time, len(records)) and (
            records[skip][0] == cursor.created_at
        ):
            skip += 1
    rest = records[skip:]
    page = rest[:limit]
    if len(rest) <= limit or not page:
        return [m for _, m in page], None
    last = page[-1][0]
    seen = sum(1 for created, _ in page if created == last)
    if cursor is not None and last == cursor.created_at:
        seen += cursor.seen_at_time
    return [m for _, m in page], encode_cursor(ListCursor(last, seen))


async def scroll(
    store: MemoryStore, user_id: str, filters: SearchFilters, limit: int, cursor: str | None
) -> tuple[list[Memory], str | None]:
    """One page of the user's memories, newest first, and the cursor of the next page (None
    at the end)."""
    position = decode_cursor(cursor) if cursor else None
    start, window = scroll_window(limit, position)
    records = await store.newest(tenant_conditions(user_id, filters), start, window)
    return newest_first_page([with_created_at(r) for r in records], limit, position)


async def iterate(
    store: MemoryStore, user_id: str, filters: SearchFilters, page_size: int = 256
) -> AsyncIterator[Memory]:
    """Every memory of the user that meets the filters, newest first."""
    cursor: str | None = None
    while True:
        page, cursor = await scroll(store, user_id, filters, page_size, cursor)
        for memory in page:
            yield memory
        if cursor is None:
            return
