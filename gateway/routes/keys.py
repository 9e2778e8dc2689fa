"""API keys: create, list and revoke the caller's keys. Session tokens only: a key can never
manage keys (gateway.api_keys refuses it before these run)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request

from gateway.api_keys import KeyResolver, new_key, session_only
from gateway.clients import Caller, MemoryClient
from gateway.deps import CurrentCallerDep, MemoryClientDep
from gateway.schemas import ApiKeyList, CreatedApiKey, NewApiKey

router = APIRouter(prefix="/keys", tags=["keys"], dependencies=[Depends(session_only)])

KEY_NOT_FOUND = "API key not found"


async def _key_id(
    key_id: Annotated[str, Path(description="The key's id, as GET /keys lists it")],
) -> str:
    try:
        return str(uuid.UUID(key_id))
    except ValueError:
        raise HTTPException(404, KEY_NOT_FOUND) from None


@router.post(
    "",
    response_model=CreatedApiKey,
    status_code=201,
    responses={409: {"description": "The caller has 50 live keys already"}},
)
async def create_key(
    body: NewApiKey, caller: CurrentCallerDep, memory: MemoryClientDep
) -> CreatedApiKey:
    """Create a key. The full key is in this answer only; only its hash is stored."""
    made = new_key()
    info = await memory.create_key(caller, body, made.key_hash, made.prefix)
    return CreatedApiKey(key=made.key, **info.model_dump(exclude={"last_used_at"}))


@router.get("", response_model=ApiKeyList)
async def list_keys(caller: CurrentCallerDep, memory: MemoryClientDep) -> ApiKeyList:
    """The caller's keys, oldest first, without their secrets."""
    return ApiKeyList(keys=await memory.list_keys(caller))


@router.delete(
    "/{key_id}",
    status_code=204,
    responses={404: {"description": "The caller has no key with this id"}},
)
async def revoke_key(
    key_id: Annotated[str, Depends(_key_id)],
    caller: CurrentCallerDep,
    memory: MemoryClientDep,
    request: Request,
) -> None:
    """Revoke a key: refused at once here, on every other gateway within 2 seconds."""
    if not await memory.revoke_key(caller, key_id):
        raise HTTPException(404, KEY_NOT_FOUND)
    resolver: KeyResolver = request.app.state.key_resolver
    resolver.forget(key_id=key_id)


async def delete_user_keys(
    request: Request, memory: MemoryClient, caller: Caller, user_id: str
) -> int:
    """Delete every key of a user (an admin deleting the user)."""
    deleted = await memory.delete_user_keys(caller, user_id)
    resolver: KeyResolver = request.app.state.key_resolver
    resolver.forget(user_id=user_id)
    return deleted
