"""gRPC clients of the downstream services: one channel each, a deadline on every call,
reads retried on UNAVAILABLE by the channel's retry policy, keepalive on, and calls spread
over every address a name resolves to (headless Services in Kubernetes)."""

from __future__ import annotations

import builtins
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import conversions as conv
from gateway import schemas
from gateway.cursors import CursorSeal
from protos.chat.v1 import chat_pb2, chat_pb2_grpc
from protos.memory.v1 import memory_pb2 as pb
from protos.memory.v1 import memory_pb2_grpc
from service_kit.channels import service_channel
from service_kit.identity import Identity, outgoing_metadata

MEMORY_SERVICE = pb.DESCRIPTOR.services_by_name["MemoryService"]
CHAT_SERVICE = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request acts for, and the id that ties its log lines together."""

    identity: Identity
    request_id: str


class ServiceClient:
    """What every downstream client shares: its channel, credentials, deadline and health."""

    # The service called, and the generated stub that calls it.
    descriptor: ClassVar[ServiceDescriptor]
    stub_type: ClassVar[type]

    def __init__(self, channel: grpc.aio.Channel, service_token: str, timeout: float) -> None:
        self.channel = channel
        self.stub = self.stub_type(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.service_token = service_token
        self.timeout = timeout

    @classmethod
    def connect(cls, address: str, service_token: str, timeout: float) -> Self:
        return cls(service_channel(address, cls.descriptor), service_token, timeout)

    def _call(
        self,
        rpc: Callable[..., Any],
        request: Message,
        caller: Caller,
        timeout: float | None = None,
    ) -> Any:
        """Start one call as the caller, within the client's deadline unless given another."""
        return rpc(
            request,
            timeout=self.timeout if timeout is None else timeout,
            metadata=outgoing_metadata(caller.identity, self.service_token, caller.request_id),
        )

    async def serving(self, probe_seconds: float = 2.0) -> bool:
        try:
            reply = await self.health.Check(
                health_pb2.HealthCheckRequest(service=self.descriptor.full_name),
                timeout=probe_seconds,
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        await self.channel.close(grace=None)


class MemoryClient(ServiceClient):
    descriptor = MEMORY_SERVICE
    stub_type = memory_pb2_grpc.MemoryServiceStub

    def __init__(self, channel: grpc.aio.Channel, service_token: str, timeout: float) -> None:
        super().__init__(channel, service_token, timeout)
        # The service token is the secret every gateway replica already shares.
        self.cursors = CursorSeal(service_token)

    async def save_prompt(
        self, caller: Caller, body: schemas.SavePrompt, message_id: str
    ) -> schemas.Memory:
        request = conv.save_prompt_to_pb(body, message_id)
        return conv.memory_from_pb(await self._call(self.stub.SaveMemory, request, caller))

    async def save_response(
        self, caller: Caller, body: schemas.SaveResponse, message_id: str
    ) -> schemas.Memory:
        request = conv.save_response_to_pb(body, message_id)
        return conv.memory_from_pb(await self._call(self.stub.AttachResponse, request, caller))

    async def save_batch(
        self,
        caller: Caller,
        items: list[schemas.BatchPrompt | schemas.BatchResponse],
        deadline_seconds: float,
    ) -> list[schemas.SaveResult]:
        request = pb.SaveMemoriesRequest(items=[conv.batch_item_to_pb(item) for item in items])
        reply = await self._call(self.stub.SaveMemories, request, caller, deadline_seconds)
        return [conv.save_result_from_pb(result) for result in reply.results]

    async def search(
        self, caller: Caller, body: schemas.SearchQuery | schemas.ContextQuery
    ) -> list[schemas.ScoredMemory]:
        reply = await self._call(self.stub.Search, conv.query_to_pb(body), caller)
        return conv.scored_from_pb(
            reply, explain=isinstance(body, schemas.SearchQuery) and body.explain
        )

    async def get(self, caller: Caller, memory_id: str) -> schemas.Memory:
        request = pb.GetMemoryRequest(id=memory_id)
        return conv.memory_from_pb(await self._call(self.stub.GetMemory, request, caller))

    async def update(
        self, caller: Caller, memory_id: str, body: schemas.MemoryUpdate
    ) -> schemas.Memory:
        request = conv.update_to_pb(memory_id, body)
        return conv.memory_from_pb(await self._call(self.stub.UpdateMemory, request, caller))

    async def list(
        self, caller: Caller, page_size: int, cursor: str, filters: schemas.Filters
    ) -> schemas.MemoryPage:
        """One page; `cursor` is a next_cursor this client gave the same user (400 if not)."""
        user_id = caller.identity.user_id
        position = self.cursors.open(user_id, cursor) if cursor else ""
        request = pb.ListMemoriesRequest(
            page_size=page_size, cursor=position, filters=conv.filters_to_pb(filters)
        )
        reply = await self._call(self.stub.ListMemories, request, caller)
        return schemas.MemoryPage(
            memories=[conv.memory_from_pb(m) for m in reply.memories],
            next_cursor=self.cursors.seal(user_id, reply.next_cursor)
            if reply.next_cursor
            else None,
        )

    async def delete(self, caller: Caller, memory_id: str) -> None:
        await self._call(self.stub.DeleteMemory, pb.DeleteMemoryRequest(id=memory_id), caller)

    async def delete_user(self, caller: Caller, user_id: str = "") -> int:
        request = pb.DeleteUserMemoriesRequest(user_id=user_id)
        return int((await self._call(self.stub.DeleteUserMemories, request, caller)).deleted)

    async def export(
        self, caller: Caller, filters: schemas.Filters | None, stream_seconds: float
    ) -> AsyncGenerator[schemas.Memory, None]:
        request = pb.ExportMemoriesRequest(filters=conv.filters_to_pb(filters))
        call = self._call(self.stub.ExportMemories, request, caller, stream_seconds)
        try:
            async for msg in call:
                yield conv.memory_from_pb(msg)
        finally:
            call.cancel()

    async def user_stats(self, caller: Caller, bounds: Sequence[datetime]) -> pb.UserStats:
        request = pb.GetUserStatsRequest()
        for bound in bounds:
            request.bounds.add().FromDatetime(bound)
        reply: pb.UserStats = await self._call(self.stub.GetUserStats, request, caller)
        return reply

    async def stats(self, caller: Caller) -> schemas.Stats:
        reply = await self._call(self.stub.GetStats, pb.GetStatsRequest(), caller)
        return conv.stats_from_pb(reply)

    async def create_key(
        self, caller: Caller, body: schemas.NewApiKey, key_hash: bytes, prefix: str
    ) -> schemas.ApiKeyInfo:
        """Store a new key's hash for the caller. A caller with the most live keys allowed
        gets FAILED_PRECONDITION (HTTP 409)."""
        request = conv.new_key_to_pb(body, key_hash, prefix, datetime.now(UTC))
        return conv.key_from_pb(await self._call(self.stub.CreateKey, request, caller))

    async def list_keys(self, caller: Caller) -> builtins.list[schemas.ApiKeyInfo]:
        reply = await self._call(self.stub.ListKeys, pb.ListKeysRequest(), caller)
        return [conv.key_from_pb(key) for key in reply.keys]

    async def revoke_key(self, caller: Caller, key_id: str) -> bool:
        """Revoke one of the caller's keys; False if the caller has no key with this id."""
        try:
            await self._call(self.stub.RevokeKey, pb.RevokeKeyRequest(id=key_id), caller)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def resolve_key(self, caller: Caller, key_hash: bytes) -> schemas.ResolvedKey | None:
        """The live key with this hash; None for an unknown, revoked or expired one."""
        request = pb.ResolveKeyRequest(key_hash=key_hash)
        try:
            reply = await self._call(self.stub.ResolveKey, request, caller)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return conv.resolved_key_from_pb(reply)

    async def delete_user_keys(self, caller: Caller, user_id: str) -> int:
        request = pb.DeleteUserKeysRequest(user_id=user_id)
        return int((await self._call(self.stub.DeleteUserKeys, request, caller)).deleted)


class ChatClient(ServiceClient):
    descriptor = CHAT_SERVICE
    stub_type = chat_pb2_grpc.ChatServiceStub

    async def chat(self, caller: Caller, body: schemas.ChatQuery) -> schemas.ChatAnswer:
        reply = await self._call(self.stub.Chat, conv.chat_to_pb(body), caller)
        return conv.chat_answer_from_pb(reply)

    async def stream(
        self, caller: Caller, body: schemas.ChatQuery
    ) -> AsyncGenerator[str | schemas.ChatDone, None]:
        """The answer's text pieces, then its details; closing the iterator early cancels the
        call, which makes chat_service close its request to the provider."""
        call = self._call(self.stub.ChatStream, conv.chat_to_pb(body), caller)
        try:
            async for event in call:
                if event.WhichOneof("event") == "delta":
                    yield event.delta
                else:
                    yield conv.chat_done_from_pb(event.done)
        finally:
            call.cancel()
