"""gRPC clients of the downstream services: one channel each, a deadline on every call,
reads retried on UNAVAILABLE by the channel's retry policy, keepalive on, and calls spread
over every address a name resolves to (headless Services in Kubernetes)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import conversions as conv
from gateway import schemas
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

    service: str

    def __init__(self, channel: grpc.aio.Channel, service_token: str, timeout: float) -> None:
        self.channel = channel
        self.health = health_pb2_grpc.HealthStub(channel)
        self.service_token = service_token
        self.timeout = timeout

    def _metadata(self, caller: Caller) -> tuple[tuple[str, str], ...]:
        return outgoing_metadata(caller.identity, self.service_token, caller.request_id)

    async def serving(self, probe_seconds: float = 2.0) -> bool:
        try:
            reply = await self.health.Check(
                health_pb2.HealthCheckRequest(service=self.service), timeout=probe_seconds
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        await self.channel.close(grace=None)


class MemoryClient(ServiceClient):
    service = MEMORY_SERVICE.full_name

    def __init__(self, channel: grpc.aio.Channel, service_token: str, timeout: float) -> None:
        super().__init__(channel, service_token, timeout)
        self.stub = memory_pb2_grpc.MemoryServiceStub(channel)

    @classmethod
    def connect(cls, address: str, service_token: str, timeout: float) -> MemoryClient:
        channel = service_channel(address, MEMORY_SERVICE)
        return cls(channel, service_token, timeout)

    async def save_prompt(
        self, caller: Caller, body: schemas.SavePrompt, message_id: str
    ) -> schemas.Memory:
        reply = await self.stub.SaveMemory(
            conv.save_prompt_to_pb(body, message_id),
            timeout=self.timeout,
            metadata=self._metadata(caller),
        )
        return conv.memory_from_pb(reply)

    async def save_response(
        self, caller: Caller, body: schemas.SaveResponse, message_id: str
    ) -> schemas.Memory:
        reply = await self.stub.AttachResponse(
            conv.save_response_to_pb(body, message_id),
            timeout=self.timeout,
            metadata=self._metadata(caller),
        )
        return conv.memory_from_pb(reply)

    async def save_batch(
        self,
        caller: Caller,
        items: list[schemas.BatchPrompt | schemas.BatchResponse],
        deadline_seconds: float,
    ) -> list[schemas.SaveResult]:
        reply = await self.stub.SaveMemories(
            pb.SaveMemoriesRequest(items=[conv.batch_item_to_pb(item) for item in items]),
            timeout=deadline_seconds,
            metadata=self._metadata(caller),
        )
        return [conv.save_result_from_pb(result) for result in reply.results]

    async def search(
        self,
        caller: Caller,
        query: str,
        top_k: int,
        mode: str,
        filters: schemas.Filters | None,
        *,
        min_score: float = 0.0,
        relevant_only: bool = False,
    ) -> list[schemas.ScoredMemory]:
        reply = await self.stub.Search(
            conv.search_to_pb(
                query, top_k, mode, filters, min_score=min_score, relevant_only=relevant_only
            ),
            timeout=self.timeout,
            metadata=self._metadata(caller),
        )
        return conv.scored_from_pb(reply)

    async def get(self, caller: Caller, memory_id: str) -> schemas.Memory:
        reply = await self.stub.GetMemory(
            pb.GetMemoryRequest(id=memory_id), timeout=self.timeout, metadata=self._metadata(caller)
        )
        return conv.memory_from_pb(reply)

    async def update(
        self, caller: Caller, memory_id: str, body: schemas.MemoryUpdate
    ) -> schemas.Memory:
        reply = await self.stub.UpdateMemory(
            conv.update_to_pb(memory_id, body),
            timeout=self.timeout,
            metadata=self._metadata(caller),
        )
        return conv.memory_from_pb(reply)

    async def list(
        self, caller: Caller, page_size: int, cursor: str, filters: schemas.Filters
    ) -> schemas.MemoryPage:
        reply = await self.stub.ListMemories(
            pb.ListMemoriesRequest(
                page_size=page_size, cursor=cursor, filters=conv.filters_to_pb(filters)
            ),
            timeout=self.timeout,
            metadata=self._metadata(caller),
        )
        return schemas.MemoryPage(
            memories=[conv.memory_from_pb(m) for m in reply.memories],
            next_cursor=reply.next_cursor or None,
        )

    async def delete(self, caller: Caller, memory_id: str) -> None:
        await self.stub.DeleteMemory(
            pb.DeleteMemoryRequest(id=memory_id),
            timeout=self.timeout,
            metadata=self._metadata(caller),
        )

    async def delete_user(self, caller: Caller, user_id: str = "") -> int:
        reply = await self.stub.DeleteUserMemories(
            pb.DeleteUserMemoriesRequest(user_id=user_id),
            timeout=self.timeout,
            metadata=self._metadata(caller),
        )
        return int(reply.deleted)

    async def export(
        self, caller: Caller, filters: schemas.Filters | None, stream_seconds: float
    ) -> AsyncIterator[schemas.Memory]:
        call = self.stub.ExportMemories(
            pb.ExportMemoriesRequest(filters=conv.filters_to_pb(filters)),
            timeout=stream_seconds,
            metadata=self._metadata(caller),
        )
        try:
            async for msg in call:
                yield conv.memory_from_pb(msg)
        finally:
            call.cancel()

    async def stats(self, caller: Caller) -> schemas.Stats:
        reply = await self.stub.GetStats(
            pb.GetStatsRequest(), timeout=self.timeout, metadata=self._metadata(caller)
        )
        return conv.stats_from_pb(reply)


class ChatClient(ServiceClient):
    service = CHAT_SERVICE.full_name

    def __init__(self, channel: grpc.aio.Channel, service_token: str, timeout: float) -> None:
        super().__init__(channel, service_token, timeout)
        self.stub = chat_pb2_grpc.ChatServiceStub(channel)

    @classmethod
    def connect(cls, address: str, service_token: str, timeout: float) -> ChatClient:
        channel = service_channel(address, CHAT_SERVICE)
        return cls(channel, service_token, timeout)

    async def chat(self, caller: Caller, body: schemas.ChatQuery) -> schemas.ChatAnswer:
        reply = await self.stub.Chat(
            conv.chat_to_pb(body), timeout=self.timeout, metadata=self._metadata(caller)
        )
        return conv.chat_answer_from_pb(reply)

    async def stream(
        self, caller: Caller, body: schemas.ChatQuery
    ) -> AsyncGenerator[str | schemas.ChatDone, None]:
        """The answer's text pieces, then its details; closing the iterator early cancels the
        call, which makes chat_service close its request to the provider."""
        call = self.stub.ChatStream(
            conv.chat_to_pb(body), timeout=self.timeout, metadata=self._metadata(caller)
        )
        try:
            async for event in call:
                if event.WhichOneof("event") == "delta":
                    yield event.delta
                else:
                    yield conv.chat_done_from_pb(event.done)
        finally:
            call.cancel()
