"""Build and run the chat service's gRPC server."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
import httpx
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from chat_service import metrics
from chat_service.assistant import Assistant
from chat_service.config import ChatSettings, ProviderName
from chat_service.providers import LlmProvider
from chat_service.providers.anthropic import AnthropicProvider
from chat_service.providers.offline import OfflineProvider
from chat_service.providers.openai import OpenAIProvider
from chat_service.retrieval import MemoryRetriever, memory_channel
from chat_service.servicer import ChatServicer
from memory_service.interceptors import ServiceInterceptor
from memory_service.logs import configure_logging
from memory_service.metrics import start_metrics
from protos.chat.v1 import chat_pb2, chat_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name


def server_options(settings: ChatSettings) -> list[tuple[str, int]]:
    age_ms = int(settings.max_connection_age_seconds * 1000)
    return [
        ("grpc.max_connection_age_ms", age_ms),
        ("grpc.max_connection_age_grace_ms", int(settings.drain_seconds * 1000) + 5000),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ]


def http_client(settings: ChatSettings) -> httpx.AsyncClient:
    """The one pooled client every provider call goes through."""
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
    settings: ChatSettings, client: httpx.AsyncClient
) -> dict[ProviderName, LlmProvider]:
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    providers: dict[ProviderName, LlmProvider] = {
        "offline": OfflineProvider(model_configured=settings.provider != "offline")
    }
    if settings.provider == "openai":
        providers["openai"] = OpenAIProvider(
            client, settings.base_url, api_key, settings.llm_temperature
        )
    elif settings.provider == "anthropic":
        assert api_key is not None
        providers["anthropic"] = AnthropicProvider(
            client, settings.base_url, api_key, settings.llm_temperature
        )
    return providers


@dataclass
class ChatServer:
    """A bound server: serving health at once, ChatService once start_serving() is done."""

    settings: ChatSettings
    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    servicer: ChatServicer
    service_token: str
    http: httpx.AsyncClient | None = None
    memory: grpc.aio.Channel | None = None

    async def set_status(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def start_serving(self) -> None:
        """Open the provider client and the memory channel, then report SERVING. A memory
        service that is down does not hold this up: chats then go on without memories."""
        self.http = http_client(self.settings)
        self.memory = memory_channel(self.settings.memory_addr)
        assistant = Assistant(
            self.settings,
            MemoryRetriever(self.memory, self.service_token),
            build_providers(self.settings, self.http),
        )
        self.servicer.ready(assistant)
        await self.set_status(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "chat service ready on port %d (provider %s, memory at %s)",
            self.port,
            self.settings.provider,
            self.settings.memory_addr,
        )

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish, then close the clients."""
        await self.set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(self.settings.drain_seconds if grace is None else grace)
        if self.http is not None:
            await self.http.aclose()
        if self.memory is not None:
            await self.memory.close(None)


async def create_server(settings: ChatSettings) -> ChatServer:
    """Bind the server (port 0 picks a free port) and start it reporting NOT_SERVING."""
    if settings.service_token is None or not settings.service_token.get_secret_value():
        raise RuntimeError("MEMORY_LAYER_SERVICE_TOKEN must be set")
    token = settings.service_token.get_secret_value()
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(token, metrics.RPC_SECONDS)],
        options=server_options(settings),
    )
    servicer = ChatServicer()
    chat_pb2_grpc.add_ChatServiceServicer_to_server(servicer, server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise RuntimeError(f"cannot listen on {settings.host}:{settings.port}")
    running = ChatServer(settings, server, port, health_servicer, servicer, token)
    await running.set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    return running


async def serve(settings: ChatSettings | None = None) -> None:
    settings = settings or ChatSettings()
    configure_logging("chat_service", settings.log_level)
    running = await create_server(settings)
    start_metrics(settings.metrics_port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info("chat service listening on %s:%d", settings.host, running.port)
    try:
        await running.start_serving()
        await stopping.wait()
    finally:
        log.info("chat service shutting down")
        await running.stop()
