"""Operator routes; the caller needs the admin role."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gateway.deps import AdminCallerDep, MemoryClientDep, PathUserIdDep
from gateway.routes.keys import delete_user_keys
from gateway.schemas import Deleted, Stats

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/stats", response_model=Stats)
async def stats(caller: AdminCallerDep, memory: MemoryClientDep) -> Stats:
    return await memory.stats(caller)


@router.delete("/users/{user_id}", response_model=Deleted)
async def delete_user(
    user_id: PathUserIdDep,
    caller: AdminCallerDep,
    memory: MemoryClientDep,
    request: Request,
) -> Deleted:
    """Delete every memory and every API key of one user."""
    # Keys first: a key that outlived its user could save new memories for them.
    await delete_user_keys(request, memory, caller, user_id)
    return Deleted(deleted=await memory.delete_user(caller, user_id))
