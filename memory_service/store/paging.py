"""Listings newest first, a page at a time, and the cursor that says where a page stopped.

Memories are listed by creation time, newest first, and memories created at the same instant
(a batch shares one time) by id: the store orders by time alone and returns ties in any order,
so a page that ends inside a run of ties reads that whole run and sorts it."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

from memory_service.models import Memory, SearchFilters
from memory_service.store.interface import Condition, MemoryStore, Range
from memory_service.store.ownership import tenant_conditions
from memory_service.store.payload import with_created_at

# Memories sharing one creation time that one page reads at most: far more than a batch
# save (at most 256 items) gives one time.
MAX_TIED = 100_000


@dataclass(frozen=True)
class ListCursor:
    """Where a newest-first listing stopped: the creation time and id of the last memory
    returned."""

    created_at: float
    last_id: str


def encode_cursor(cursor: ListCursor) -> str:
    raw = f"{cursor.created_at!r}/{cursor.last_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> ListCursor:
    """The position a cursor stands for; ValueError for anything this store did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, last_id = raw.split("/")
        decoded = ListCursor(float(created_at), last_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("malformed cursor") from exc
    if not math.isfinite(decoded.created_at) or not decoded.last_id:
        raise ValueError("malformed cursor")
    return decoded


Listed = tuple[float, Memory]


async def _newest(
    store: MemoryStore, conditions: list[Condition], start: float | None, window: int
) -> list[Listed]:
    return [with_created_at(r) for r in await store.newest(conditions, start, window)]


async def _tied(store: MemoryStore, conditions: list[Condition], created_at: float) -> list[Listed]:
    """Every memory created at exactly this time, by id."""
    same_time = [*conditions, Range("created_at", gte=created_at, lte=created_at)]
    records = await _newest(store, same_time, created_at, MAX_TIED)
    return sorted(records, key=lambda record: record[1].id)


def _older_than(created_at: float) -> float:
    return math.nextafter(created_at, -math.inf)


async def page_after(
    store: MemoryStore, conditions: list[Condition], limit: int, cursor: ListCursor | None
) -> tuple[list[Memory], str | None]:
    """One page of the memories that meet the conditions, in listing order from the cursor,
    and the cursor of the next page (None at the end)."""
    wanted = limit + 1  # one more than the page says whether another follows
    listed: list[Listed] = []
    start: float | None = None
    if cursor is not None:
        rest_of_run = await _tied(store, conditions, cursor.created_at)
        listed = [r for r in rest_of_run if r[1].id > cursor.last_id][:wanted]
        start = _older_than(cursor.created_at)
    if len(listed) < wanted:
        older = await _newest(store, conditions, start, wanted - len(listed))
        if len(listed) + len(older) == wanted and len(older) > 1 and older[-1][0] == older[-2][0]:
            # The window may end inside a run of ties: take that run whole, by id.
            last = older[-1][0]
            older = [r for r in older if r[0] != last] + await _tied(store, conditions, last)
        listed += sorted(older, key=lambda record: (-record[0], record[1].id))
    page = listed[:limit]
    if len(listed) <= limit or not page:
        return [m for _, m in page], None
    created_at, memory = page[-1]
    return [m for _, m in page], encode_cursor(ListCursor(created_at, memory.id))


async def scroll(
    store: MemoryStore, user_id: str, filters: SearchFilters, limit: int, cursor: str | None
) -> tuple[list[Memory], str | None]:
    """One page of the user's memories, newest first, and the cursor of the next page (None
    at the end)."""
    position = decode_cursor(cursor) if cursor else None
    return await page_after(store, tenant_conditions(user_id, filters), limit, position)


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
