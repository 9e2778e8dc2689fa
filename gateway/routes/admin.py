"""Operator routes; the caller needs the admin role."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from gateway.deps import AdminCaller, Memories
from gateway.schemas import Deleted, Stats

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/stats", response_model=Stats)
async def stats(caller: AdminCaller, memory: Memories) -> Stats:
    return await memory.stats(caller)


@router.delete("/users/{user_id}", response_model=Deleted)
async def delete_user(
    user_id: Annotated[str, Path(min_length=1, max_length=256)],
    caller: AdminCaller,
    memory: Memories,
) -> Deleted:
    """Delete every memory of one user."""
    return Deleted(deleted=await memory.delete_user(caller, user_id))
