"""The API key RPCs of MemoryService, and their conversions (kept apart from the memory RPCs
they are served beside)."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from memory_service.api_keys import ApiKeys
from memory_service.store import StoreUnavailableError
from memory_service.store.keys import KeyRecord
from protos.memory.v1 import memory_pb2 as pb
from service_kit.grpc_server import SetAtStartup
from service_kit.identity import require_identity


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def key_to_pb(record: KeyRecord) -> pb.ApiKey:
    return pb.ApiKey(
        id=record.id,
        user_id=record.user_id,
        name=record.name,
        prefix=record.prefix,
        scopes=list(record.scopes),
        created_at=_timestamp(record.created_at),
        last_used_at=_timestamp(record.last_used_at),
        expires_at=_timestamp(record.expires_at),
    )


class KeyRpcs:
    """Mixed into MemoryServicer."""

    keys = SetAtStartup[ApiKeys]("memory service is starting", StoreUnavailableError)

    async def CreateKey(
        self, request: pb.CreateKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApiKey:
        expires_at = (
            request.expires_at.ToDatetime(tzinfo=UTC) if request.HasField("expires_at") else None
        )
        record = await self.keys.create(
            require_identity(),
            name=request.name,
            key_hash=request.key_hash,
            prefix=request.prefix,
            scopes=list(request.scopes),
            expires_at=expires_at,
        )
        return key_to_pb(record)

    async def ListKeys(
        self, request: pb.ListKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListKeysResponse:
        records = await self.keys.list(require_identity())
        return pb.ListKeysResponse(keys=[key_to_pb(r) for r in records])

    async def RevokeKey(
        self, request: pb.RevokeKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeKeyResponse:
        await self.keys.revoke(require_identity(), request.id)
        return pb.RevokeKeyResponse()

    async def ResolveKey(
        self, request: pb.ResolveKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApiKey:
        return key_to_pb(await self.keys.resolve(require_identity(), request.key_hash))

    async def DeleteUserKeys(
        self, request: pb.DeleteUserKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteUserKeysResponse:
        deleted = await self.keys.delete_user(require_identity(), request.user_id)
        return pb.DeleteUserKeysResponse(deleted=deleted)
