"""The memories a chat is grounded in: top-k through MemoryService.Search over gRPC, on
behalf of the caller, within the caller's remaining time."""

from __future__ import annotations

import logging
import time

import grpc

from chat_service import conversions, metrics
from chat_service.errors import MemoryUnavailableError
from chat_service.models import ContextMemory
from protos.memory.v1 import memory_pb2, memory_pb2_grpc
from service_kit.channels import service_channel
from service_kit.identity import Identity, outgoing_metadata

log = logging.getLogger(__name__)

MISCONFIGURED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def memory_channel(address: str) -> grpc.aio.Channel:
    return service_channel(address, memory_pb2.DESCRIPTOR.services_by_name["MemoryService"])


class MemoryRetriever:
    def __init__(self, channel: grpc.aio.Channel, service_token: str) -> None:
        self.stub = memory_pb2_grpc.MemoryServiceStub(channel)
        self.service_token = service_token

    async def search(
        self,
        identity: Identity,
        request_id: str,
        query: str,
        top_k: int,
        time_limit: float,
        time_zone: str = "",
    ) -> list[ContextMemory]:
        """The caller's `top_k` memories nearest `query`, days counted in `time_zone` (IANA,
        "" for UTC); MemoryUnavailableError if the memory service cannot answer within
        `time_limit` seconds."""
        started = time.perf_counter()
        try:
            response = await self.stub.Search(
                conversions.search_request(query, top_k, time_zone),
                metadata=outgoing_metadata(identity, self.service_token, request_id),
                timeout=time_limit,
            )
        except grpc.aio.AioRpcError as exc:
            metrics.RETRIEVAL_FAILURES.inc()
            # A refused service token is a deployment mistake, not a passing outage.
            misconfigured = exc.code() in MISCONFIGURED
            log.log(
                logging.ERROR if misconfigured else logging.WARNING,
                "memory search failed: %s %s",
                exc.code().name,
                exc.details(),
            )
            raise MemoryUnavailableError(exc.code().name) from exc
        finally:
            metrics.RETRIEVAL_SECONDS.observe(time.perf_counter() - started)
        return conversions.context_memories(response)
