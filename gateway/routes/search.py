"""Finding memories, and building a context block from them."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.context_block import build_context
from gateway.deps import CurrentCallerDep, MemoryClientDep, check_user_id
from gateway.schemas import Context, ContextQuery, SearchQuery, SearchResults

router = APIRouter(tags=["search"])


@router.post("/search", response_model=SearchResults)
async def search(
    body: SearchQuery, caller: CurrentCallerDep, memory: MemoryClientDep
) -> SearchResults:
    """The caller's memories ranked by relevance to `query` (hybrid, semantic or keyword),
    each with a score in [0, 1]; none below `min_score`."""
    check_user_id(caller, body.user_id)
    return SearchResults(results=await memory.search(caller, body))


@router.post("/context", response_model=Context)
async def context(body: ContextQuery, caller: CurrentCallerDep, memory: MemoryClientDep) -> Context:
    """A ready-to-inject block of the most relevant memories within `max_tokens`
    (estimated as characters / 4), plus the memories it uses. Only memories at or above the
    relevance floor go in: a prompt no memory is about gets an empty block."""
    check_user_id(caller, body.user_id)
    return build_context(await memory.search(caller, body), body.max_tokens)
