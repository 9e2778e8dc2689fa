"""Build and run the memory service's gRPC server."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from memory_service.allocator import release_free_memory
from memory_service.config import MemorySettings
from memory_service.embedder import (
    Embedder,
    embed_parallelism,
    load_sentence_transformer,
    resolve_precision,
)
from memory_service.interceptors import ServiceInterceptor
from memory_service.logs import configure_logging
from memory_service.memories import Memories
from memory_service.metrics import start_metrics
from memory_service.servicer import MemoryServicer
from memory_service.store import CollectionSpec, MemoryStore
from memory_service.store.edge import EdgeMemoryStore
from memory_service.store.server import ServerMemoryStore
from protos.memory.v1 import memory_pb2, memory_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = memory_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name


def server_options(settings: MemorySettings) -> list[tuple[str, int]]:
    age_ms = int(settings.max_connection_age_seconds * 1000)
    return [
        ("grpc.max_connection_age_ms", age_ms),
        ("grpc.max_connection_age_grace_ms", int(settings.drain_seconds * 1000) + 5000),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ]


def build_store(settings: MemorySettings, spec: CollectionSpec) -> MemoryStore:
    if settings.qdrant_url:
        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return ServerMemoryStore.connect(
            settings.qdrant_url,
            api_key,
            spec,
            replication_factor=settings.qdrant_replication_factor,
        )
    return EdgeMemoryStore(settings.data_dir, spec)


@dataclass
class MemoryServer:
    """A bound server: serving health at once, MemoryService once start_serving() is done."""

    settings: MemorySettings
    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    servicer: MemoryServicer
    embedder: Embedder | None = None
    store: MemoryStore | None = None
    _owns_embedder: bool = field(default=True)

    async def set_status(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def start_serving(self, embedder: Embedder | None = None) -> None:
        """Load the model and open the store, then report SERVING."""
        if embedder is None:
            model, name = await asyncio.to_thread(
                load_sentence_transformer,
                self.settings.model,
                self.settings.embedding_dim,
                self.settings.torch_threads,
            )
            embedder = Embedder(
                model,
                name,
                batch_size=self.settings.embed_batch_size,
                max_wait_ms=self.settings.embed_batch_wait_ms,
                encode_batch_size=self.settings.embed_encode_batch_size,
                precision=resolve_precision(self.settings.embed_precision),
                packed=self.settings.embed_packed,
                **embed_parallelism(self.settings),
            )
        else:
            self._owns_embedder = False
        spec = CollectionSpec(
            model=embedder.model_name,
            dimension=embedder.dimension,
            prefix=self.settings.collection_prefix,
        )
        store = build_store(self.settings, spec)
        await store.open()
        await embedder.start()
        # Loading the model and replaying the store's log leave freed heap behind.
        await asyncio.to_thread(release_free_memory)
        self.embedder, self.store = embedder, store
        self.servicer.ready(Memories(embedder, store))
        await self.set_status(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "memory service ready on port %d (%s store, collection %s, %s embedder)",
            self.port,
            store.backend,
            spec.name,
            embedder.mode,
        )

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish, then release the store."""
        await self.set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(self.settings.drain_seconds if grace is None else grace)
        if self.store is not None:
            await self.store.close()
        if self.embedder is not None and self._owns_embedder:
            await self.embedder.stop()


async def create_server(settings: MemorySettings) -> MemoryServer:
    """Bind the server (port 0 picks a free port) and start it reporting NOT_SERVING."""
    if settings.service_token is None or not settings.service_token.get_secret_value():
        raise RuntimeError("MEMORY_LAYER_SERVICE_TOKEN must be set")
    token = settings.service_token.get_secret_value()
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(token)], options=server_options(settings)
    )
    servicer = MemoryServicer()
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(servicer, server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise RuntimeError(f"cannot listen on {settings.host}:{settings.port}")
    running = MemoryServer(settings, server, port, health_servicer, servicer)
    await running.set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    return running


async def serve(settings: MemorySettings | None = None) -> None:
    settings = settings or MemorySettings()
    configure_logging("memory_service", settings.log_level)
    running = await create_server(settings)
    start_metrics(settings.metrics_port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info("memory service listening on %s:%d, loading model", settings.host, running.port)
    try:
        startup = asyncio.create_task(running.start_serving())
        done, _ = await asyncio.wait(
            {startup, asyncio.create_task(stopping.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if startup in done:
            startup.result()
            await stopping.wait()
        else:
            startup.cancel()
    finally:
        log.info("memory service shutting down")
        await running.stop()
