"""Build and run the chat service's gRPC server."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import grpc

from chat_service import metrics
from chat_service.assistant import Assistant
from chat_service.config import ChatSettings, ProviderName
from chat_service.providers import LlmProvider
from chat_service.providers.offline import OfflineProvider
from chat_service.providers.registry import PROVIDERS
from chat_service.retrieval import MemoryRetriever, memory_channel
from chat_service.servicer import ChatServicer
from protos.chat.v1 import chat_pb2, chat_pb2_grpc
from service_kit.grpc_server import SERVING, BoundServer, ServiceServer, bind_server
from service_kit.grpc_server import serve as run_service
from service_kit.heap import freeze_startup_heap
from service_kit.llm_apis import OFFLINE

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import httpx

SERVICE = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]


def http_client(settings: ChatSettings) -> httpx.AsyncClient:
    """The one pooled client every provider call goes through."""
    # Imported here: a service that only answers offline opens no client and loads no httpx.
    import httpx

    timeout = httpx.Timeout(
        connect=settings.llm_connect_timeout_seconds,
        read=settings.llm_read_timeout_seconds,
        write=settings.llm_connect_timeout_seconds,
        pool=settings.llm_connect_timeout_seconds,
    )
    limits = httpx.Limits(
        max_connections=settings.llm_max_connections,
        max_keepalive_connections=settings.llm_max_connections,
    )
    # trust_env=False: a proxy for the provider is set explicitly, never picked up by surprise.
    return httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)


def build_providers(
    settings: ChatSettings, client: httpx.AsyncClient | None
) -> dict[ProviderName, LlmProvider]:
    """The offline provider, and the configured one (which needs `client`) if any."""
    providers: dict[ProviderName, LlmProvider] = {
        OFFLINE: OfflineProvider(model_configured=settings.provider != OFFLINE)
    }
    spec = PROVIDERS.get(settings.provider)
    if spec is not None:
        if client is None:
            raise ValueError(f"the {spec.name} provider needs an HTTP client")
        providers[spec.name] = spec.build(client, settings)
    return providers


@dataclass
class ChatServer(ServiceServer):
    """A bound server: serving health at once, ChatService once start_serving() is done."""

    settings: ChatSettings
    bound: BoundServer
    servicer: ChatServicer
    service_token: str
    http: httpx.AsyncClient | None = None
    memory: grpc.aio.Channel | None = None

    async def start_serving(self) -> None:
        """Open the provider client and the memory channel, then report SERVING. A memory
        service that is down does not hold this up: chats then go on without memories."""
        if self.settings.provider in PROVIDERS:
            self.http = http_client(self.settings)
        self.memory = memory_channel(self.settings.memory_addr)
        assistant = Assistant(
            self.settings,
            MemoryRetriever(self.memory, self.service_token),
            build_providers(self.settings, self.http),
        )
        self.servicer.assistant = assistant
        freeze_startup_heap()
        await self.set_status(SERVING)
        log.info(
            "chat service ready on port %d (provider %s, memory at %s)",
            self.port,
            self.settings.provider,
            self.settings.memory_addr,
        )

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish, then close the clients."""
        await self.drain(grace)
        if self.http is not None:
            await self.http.aclose()
        if self.memory is not None:
            await self.memory.close(None)


async def create_server(settings: ChatSettings) -> ChatServer:
    """Bind the server (port 0 picks a free port) and start it reporting NOT_SERVING."""
    servicer = ChatServicer()
    add = partial(chat_pb2_grpc.add_ChatServiceServicer_to_server, servicer)
    bound = await bind_server(settings, settings.port, SERVICE, add, metrics.RPC_SECONDS)
    return ChatServer(settings, bound, servicer, settings.memory_token())


async def serve(settings: ChatSettings | None = None) -> None:
    await run_service("chat_service", settings or ChatSettings(), create_server)
