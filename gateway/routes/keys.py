"""API keys: create, list and revoke the caller's keys. Session tokens only: a key can never
manage keys (gateway.api_keys refuses it before these run)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import grpc
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from gateway.api_keys import KeyResolver, new_key, session_only
from gateway.clients import Caller, MemoryClient
from gateway.deps import CurrentCallerDep, MemoryClientDep
from gateway.schemas import RequestBody
from protos.memory.v1 import memory_pb2 as pb
from service_kit.api_keys import KEY_SCOPES, MAX_KEY_DAYS, MAX_KEY_NAME_CHARS, is_valid_key_name

router = APIRouter(prefix="/keys", tags=["keys"], dependencies=[Depends(session_only)])

KEY_NOT_FOUND = "API key not found"
Scope = Literal["read", "write"]


def _check_name(value: str) -> str:
    if not is_valid_key_name(value):
        raise ValueError(f"must be 1 to {MAX_KEY_NAME_CHARS} printable characters")
    return value


class NewApiKey(RequestBody):
    name: Annotated[
        str,
        Field(max_length=MAX_KEY_NAME_CHARS, description="What the key is for, e.g. a device"),
        AfterValidator(_check_name),
    ]
    scopes: Annotated[
        list[Scope],
        Field(
            min_length=1,
            max_length=len(KEY_SCOPES),
            description="read: search, context, list, get, export, chat. "
            "write: save, batch, edit, delete.",
        ),
    ] = ["read", "write"]
    expires_in_days: Annotated[
        int | None,
        Field(ge=1, le=MAX_KEY_DAYS, description="Unset: the key never expires."),
    ] = None


class ApiKeyInfo(BaseModel):
    id: str
    name: str
    prefix: Annotated[str, Field(description="The key's first characters, to recognise it")]
    scopes: list[Scope]
    created_at: AwareDatetime
    last_used_at: Annotated[
        AwareDatetime | None, Field(description="To the minute; null if never used")
    ] = None
    expires_at: AwareDatetime | None = None


class CreatedApiKey(BaseModel):
    id: str
    name: str
    key: Annotated[str, Field(description="The key itself. Shown in this answer only.")]
    prefix: str
    scopes: list[Scope]
    created_at: AwareDatetime
    expires_at: AwareDatetime | None = None


class ApiKeyList(BaseModel):
    keys: list[ApiKeyInfo]


def _time(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _info(reply: pb.ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=reply.id,
        name=reply.name,
        prefix=reply.prefix,
        scopes=[s for s in reply.scopes if s in KEY_SCOPES],  # type: ignore[misc]
        created_at=_time(reply.created_at),
        last_used_at=_time(reply.last_used_at) if reply.HasField("last_used_at") else None,
        expires_at=_time(reply.expires_at) if reply.HasField("expires_at") else None,
    )


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
    request = pb.CreateKeyRequest(
        name=body.name, key_hash=made.key_hash, prefix=made.prefix, scopes=body.scopes
    )
    if body.expires_in_days is not None:
        request.expires_at.FromDatetime(datetime.now(UTC) + timedelta(days=body.expires_in_days))
    try:
        reply = await memory._call(memory.stub.CreateKey, request, caller)
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.FAILED_PRECONDITION:
            raise HTTPException(409, exc.details()) from None
        raise
    info = _info(reply)
    return CreatedApiKey(key=made.key, **info.model_dump(exclude={"last_used_at"}))


@router.get("", response_model=ApiKeyList)
async def list_keys(caller: CurrentCallerDep, memory: MemoryClientDep) -> ApiKeyList:
    """The caller's keys, oldest first, without their secrets."""
    reply = await memory._call(memory.stub.ListKeys, pb.ListKeysRequest(), caller)
    return ApiKeyList(keys=[_info(k) for k in reply.keys])


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
    try:
        await memory._call(memory.stub.RevokeKey, pb.RevokeKeyRequest(id=key_id), caller)
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            raise HTTPException(404, KEY_NOT_FOUND) from None
        raise
    resolver: KeyResolver = request.app.state.key_resolver
    resolver.forget(key_id=key_id)


async def delete_user_keys(
    request: Request, memory: MemoryClient, caller: Caller, user_id: str
) -> int:
    """Delete every key of a user (an admin deleting the user)."""
    message = pb.DeleteUserKeysRequest(user_id=user_id)
    deleted = int((await memory._call(memory.stub.DeleteUserKeys, message, caller)).deleted)
    resolver: KeyResolver = request.app.state.key_resolver
    resolver.forget(user_id=user_id)
    return deleted
