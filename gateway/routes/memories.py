"""Listing, reading, deleting and exporting the caller's own memories."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Annotated

import grpc
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from gateway.deps import CurrentCallerDep, MemoryClientDep, MemoryIdDep
from gateway.ratelimit import ConcurrencyLimit
from gateway.schemas import (
    DayCount,
    Deleted,
    Filters,
    Kind,
    Memory,
    MemoryPage,
    MemoryStats,
    MemoryUpdate,
    ProviderCount,
)
from service_kit.limits import MAX_PAGE_SIZE

log = logging.getLogger(__name__)

router = APIRouter(tags=["memories"])

# An export streams for as long as it takes; each message must still arrive in time.
EXPORT_TIMEOUT_SECONDS = 600.0
# Most days one overview counts, a year.
MAX_STATS_DAYS = 366
TOO_MANY_EXPORTS = "Too many exports running for this user, retry when one has finished"


def _query_filters(
    provider: Annotated[list[str] | None, Query(max_length=16)] = None,
    conversation_id: Annotated[str | None, Query(max_length=512)] = None,
    kind: Kind | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> Filters:
    try:
        return Filters(
            providers=provider or [],
            conversation_id=conversation_id,
            kind=kind,
            created_after=created_after,
            created_before=created_before,
        )
    except ValidationError as exc:
        # Query parameters fail the same rules as a body's filters, answered the same way.
        raise RequestValidationError(exc.errors(include_url=False)) from None


QueryFilters = Annotated[Filters, Depends(_query_filters)]


@router.get("/memories", response_model=MemoryPage)
async def list_memories(
    caller: CurrentCallerDep,
    memory: MemoryClientDep,
    filters: QueryFilters,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str, Query(max_length=1024)] = "",
) -> MemoryPage:
    """One page of the caller's memories, newest first; pass `next_cursor` back as `cursor`
    for the next."""
    return await memory.list(caller, limit, cursor, filters)


@router.get("/memories/stats", response_model=MemoryStats)
async def memory_stats(
    caller: CurrentCallerDep,
    memory: MemoryClientDep,
    days: Annotated[int, Query(ge=1, le=MAX_STATS_DAYS)] = 30,
    utc_offset: Annotated[int, Query(ge=-14 * 60, le=14 * 60)] = 0,
) -> MemoryStats:
    """How many memories the caller has, per provider, and per day over the last `days`
    days, those days as the caller counts them (`utc_offset`: minutes east of UTC). Counted
    by the store: its cost does not grow with the number of memories."""
    offset = timedelta(minutes=utc_offset)
    today = (datetime.now(UTC) + offset).date()
    first = today - timedelta(days=days - 1)
    starts = [first + timedelta(days=n) for n in range(days + 1)]
    bounds = [datetime.combine(day, time(), UTC) - offset for day in starts]
    reply = await memory.user_stats(caller, bounds)
    return MemoryStats(
        total=reply.total,
        providers=[ProviderCount(provider=p.provider, count=p.count) for p in reply.providers],
        per_day=[
            DayCount(day=day, count=count)
            for day, count in zip(starts, reply.span_counts, strict=False)
        ],
    )


@router.get("/memories/{memory_id}", response_model=Memory)
async def get_memory(
    memory_id: MemoryIdDep, caller: CurrentCallerDep, memory: MemoryClientDep
) -> Memory:
    return await memory.get(caller, memory_id)


@router.patch("/memories/{memory_id}", response_model=Memory)
async def update_memory(
    memory_id: MemoryIdDep, body: MemoryUpdate, caller: CurrentCallerDep, memory: MemoryClientDep
) -> Memory:
    """Change the text and/or metadata of one of the caller's memories. A new text is
    embedded again, so search finds the memory by what it now says; the id and created_at
    stay, updated_at records the edit."""
    return await memory.update(caller, memory_id, body)


@router.delete("/memories/{memory_id}", status_code=204)
async def delete_memory(
    memory_id: MemoryIdDep, caller: CurrentCallerDep, memory: MemoryClientDep
) -> None:
    await memory.delete(caller, memory_id)


@router.delete("/memories", response_model=Deleted)
async def delete_all_memories(caller: CurrentCallerDep, memory: MemoryClientDep) -> Deleted:
    """Delete every memory the caller owns."""
    return Deleted(deleted=await memory.delete_user(caller))


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def export(
    request: Request, caller: CurrentCallerDep, memory: MemoryClientDep, filters: QueryFilters
) -> StreamingResponse:
    """Everything the caller owns as NDJSON, one memory per line. At most
    GATEWAY_EXPORTS_PER_USER run at once per user; the next gets 429."""
    running: ConcurrencyLimit = request.app.state.exports
    user_id = caller.identity.user_id
    if not running.try_acquire(user_id):
        retry = str(request.app.state.settings.retry_after_seconds)
        raise HTTPException(429, TOO_MANY_EXPORTS, headers={"Retry-After": retry})
    memories = memory.export(caller, filters, EXPORT_TIMEOUT_SECONDS)

    async def lines() -> AsyncGenerator[bytes, None]:
        # The slot is held until this generator ends, however it ends: exhausted, failed, or
        # closed when the response drops it (a client gone).
        streaming = False
        try:
            async for item in memories:
                yield _ndjson(item)
                streaming = True
        except grpc.aio.AioRpcError as exc:
            if streaming:
                # Headers are gone; the truncated stream is what the client can notice.
                log.warning("export stopped early: %s", exc.code().name)
            raise
        finally:
            running.release(user_id)
            await memories.aclose()

    body = lines()
    # Started here, up to the first memory: a failing service still gets a proper status
    # code, and a started generator is closed (its slot given back) even if the response
    # never iterates it.
    first = await anext(body, None)
    return StreamingResponse(_then(first, body), media_type="application/x-ndjson")


async def _then(first: bytes | None, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    if first is None:
        return
    yield first
    async for line in rest:
        yield line


def _ndjson(item: Memory) -> bytes:
    return json.dumps(item.model_dump(mode="json"), ensure_ascii=False).encode() + b"\n"
