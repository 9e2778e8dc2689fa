"""The MemoryService RPCs: convert, call the domain, convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC

import grpc

from memory_service import conversions as conv
from memory_service.batch import save_batch
from memory_service.key_servicer import KeyRpcs
from memory_service.memories import Memories
from memory_service.store import StoreUnavailableError
from protos.memory.v1 import memory_pb2 as pb
from protos.memory.v1 import memory_pb2_grpc
from service_kit.grpc_server import SetAtStartup
from service_kit.identity import require_identity


class MemoryServicer(KeyRpcs, memory_pb2_grpc.MemoryServiceServicer):
    memories = SetAtStartup[Memories]("memory service is starting", StoreUnavailableError)

    async def SaveMemory(
        self, request: pb.SaveMemoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.Memory:
        memory = await self.memories.save(require_identity(), conv.new_memory_from_pb(request))
        return conv.memory_to_pb(memory)

    async def AttachResponse(
        self, request: pb.AttachResponseRequest, context: grpc.aio.ServicerContext
    ) -> pb.Memory:
        memory = await self.memories.attach_response(
            require_identity(),
            conv.response_from_pb(request),
            prompt_id=request.prompt_id,
            prompt_message_id=request.prompt_message_id,
        )
        return conv.memory_to_pb(memory)

    async def SaveMemories(
        self, request: pb.SaveMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.SaveMemoriesResponse:
        outcomes = await save_batch(
            self.memories, require_identity(), conv.batch_items_from_pb(request)
        )
        return conv.save_outcomes_to_pb(outcomes)

    async def Search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        results = await self.memories.search(
            require_identity(),
            request.query,
            request.top_k,
            conv.mode_from_pb(request.mode),
            conv.filters_from_pb(request.filters),
            min_score=request.min_score,
            relevant_only=request.relevant_only,
            explain=request.explain,
            time_zone=request.time_zone,
        )
        return conv.scored_to_pb(results)

    async def GetMemory(
        self, request: pb.GetMemoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.Memory:
        return conv.memory_to_pb(await self.memories.get(require_identity(), request.id))

    async def UpdateMemory(
        self, request: pb.UpdateMemoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.Memory:
        text, metadata = conv.update_from_pb(request)
        memory = await self.memories.update(
            require_identity(), request.id, text=text, metadata=metadata
        )
        return conv.memory_to_pb(memory)

    async def ListMemories(
        self, request: pb.ListMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMemoriesResponse:
        page, cursor = await self.memories.list(
            require_identity(),
            request.page_size,
            request.cursor,
            conv.filters_from_pb(request.filters),
        )
        return pb.ListMemoriesResponse(
            memories=[conv.memory_to_pb(m) for m in page], next_cursor=cursor or ""
        )

    async def DeleteMemory(
        self, request: pb.DeleteMemoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteMemoryResponse:
        await self.memories.delete(require_identity(), request.id)
        return pb.DeleteMemoryResponse()

    async def DeleteUserMemories(
        self, request: pb.DeleteUserMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteUserMemoriesResponse:
        deleted = await self.memories.delete_user(require_identity(), request.user_id)
        return pb.DeleteUserMemoriesResponse(deleted=deleted)

    async def ExportMemories(  # type: ignore[override]
        self, request: pb.ExportMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Memory]:
        filters = conv.filters_from_pb(request.filters)
        async for memory in self.memories.export(require_identity(), filters):
            yield conv.memory_to_pb(memory)

    async def GetUserStats(
        self, request: pb.GetUserStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UserStats:
        bounds = [bound.ToDatetime(tzinfo=UTC) for bound in request.bounds]
        return conv.user_stats_to_pb(await self.memories.user_stats(require_identity(), bounds))

    async def GetStats(
        self, request: pb.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.Stats:
        return conv.stats_to_pb(await self.memories.stats(require_identity()))
