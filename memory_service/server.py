"""Build and run the memory service's gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from functools import partial

from memory_service import metrics
from memory_service.api_keys import ApiKeys
from memory_service.config import MemorySettings
from memory_service.embedding.encoder import LongText
from memory_service.embedding.model_dir import embed_parallelism, open_model_dir
from memory_service.embedding.onnx_encoder import OnnxEncoder
from memory_service.embedding.scheduler import Embedder
from memory_service.memories import Memories
from memory_service.memory_release import release_free_memory, release_free_memory_every
from memory_service.servicer import MemoryServicer
from memory_service.store import CollectionSpec, MemoryStore
from memory_service.store.embedded import EdgeMemoryStore
from memory_service.store.embedded.files import replace_durably
from memory_service.store.embedded.maintenance import StoreMaintenance
from memory_service.store.keys import KeyStore
from memory_service.store.keys.embedded import EmbeddedKeyStore
from protos.memory.v1 import memory_pb2, memory_pb2_grpc
from service_kit.grpc_server import SERVING, BoundServer, ServiceServer, bind_server
from service_kit.grpc_server import serve as run_service
from service_kit.heap import freeze_startup_heap
from service_kit.settings import secret

log = logging.getLogger(__name__)

SERVICE = memory_pb2.DESCRIPTOR.services_by_name["MemoryService"]
# How often the heap's free pages go back to the OS (see release_free_memory_every).
HEAP_TRIM_SECONDS = 60.0


def build_store(settings: MemorySettings, spec: CollectionSpec) -> MemoryStore:
    if settings.qdrant_url:
        # The Qdrant client (with its HTTP stack, ~30 MB resident) loads only for a server:
        # the embedded store, what `memory-layer up` runs, never needs it.
        from memory_service.store.remote import ServerMemoryStore

        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return ServerMemoryStore.connect(
            settings.qdrant_url,
            api_key,
            spec,
            replication_factor=settings.qdrant_replication_factor,
            timeout=settings.qdrant_timeout_seconds,
        )
    return EdgeMemoryStore(settings.data_dir, spec, shards=settings.embedded_shards)


def build_key_store(settings: MemorySettings, store: MemoryStore) -> KeyStore:
    """Keys live where the memories do: beside the embedded store, or on the same server."""
    if settings.qdrant_url:
        from memory_service.store.keys.server import ServerKeyStore
        from memory_service.store.remote import ServerMemoryStore

        assert isinstance(store, ServerMemoryStore)
        collection = f"{settings.collection_prefix}_api_keys"
        return ServerKeyStore(store.client, collection, timeout=settings.qdrant_timeout_seconds)
    return EmbeddedKeyStore(settings.data_dir)


ID_KEY_FILE = "id.key"
_ID_KEY_BYTES = 32


def load_id_key(settings: MemorySettings) -> bytes:
    """MEMORY_ID_KEY, or the embedded store's own, made on first start (the data dir is held
    by this process by then, so no other one makes it at the same time)."""
    if secret(settings.id_key):
        return secret(settings.id_key).encode()
    path = settings.data_dir / ID_KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(_ID_KEY_BYTES)
        replace_durably(path, key, 0o600)
        return key


def build_encoder(settings: MemorySettings) -> OnnxEncoder:
    """The model MEMORY_MODEL names (unset: the bundled one), ready to encode."""
    return OnnxEncoder(
        open_model_dir(settings.model),
        dimension=settings.embedding_dim,
        model_threads=embed_parallelism(settings)["model_threads"],
        precision=settings.embed_precision,
        long_text=LongText.parse(settings.long_text),
    )


@dataclass
class MemoryServer(ServiceServer):
    """A bound server: serving health at once, MemoryService once start_serving() is done."""

    settings: MemorySettings
    bound: BoundServer
    servicer: MemoryServicer
    embedder: Embedder | None = None
    store: MemoryStore | None = None
    memories: Memories | None = None
    maintenance: StoreMaintenance | None = None
    _owns_embedder: bool = field(default=True)
    _maintenance_task: asyncio.Task[None] | None = None
    _trim_task: asyncio.Task[None] | None = None

    async def start_serving(self, embedder: Embedder | None = None) -> None:
        """Load the model and open the store, then report SERVING."""
        if embedder is None:
            parallelism = embed_parallelism(self.settings)
            encoder = await asyncio.to_thread(build_encoder, self.settings)
            embedder = Embedder(
                encoder,
                batch_size=self.settings.embed_batch_size,
                max_wait_ms=self.settings.embed_batch_wait_ms,
                busy_wait_ms=self.settings.embed_busy_wait_ms,
                workers=parallelism["workers"],
                owner_workers=self.settings.embed_workers_per_user,
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
        key_store = build_key_store(self.settings, store)
        await key_store.open()
        await embedder.start()
        freeze_startup_heap()
        # Loading the model and replaying the store's log leave freed heap behind.
        await asyncio.to_thread(release_free_memory)
        self._trim_task = asyncio.create_task(release_free_memory_every(HEAP_TRIM_SECONDS))
        self.embedder, self.store = embedder, store
        id_key = await asyncio.to_thread(load_id_key, self.settings)
        self.memories = Memories(
            embedder, store, id_key=id_key, relevance_floor=self.settings.relevance_floor
        )
        self.servicer.memories = self.memories
        self.servicer.keys = ApiKeys(key_store)
        if isinstance(store, EdgeMemoryStore) and self.settings.maintenance_interval_seconds > 0:
            # A Qdrant server optimizes its own segments; the embedded engine only when told.
            self.maintenance = StoreMaintenance(
                store,
                interval_seconds=self.settings.maintenance_interval_seconds,
                min_deleted_share=self.settings.maintenance_min_deleted_share,
                min_appendable_points=self.settings.maintenance_min_appendable_points,
            )
            self._maintenance_task = asyncio.create_task(self.maintenance.run_forever())
        await self.set_status(SERVING)
        log.info(
            "memory service ready on port %d (%s store, collection %s, %s embedder)",
            self.port,
            store.backend,
            spec.name,
            embedder.mode,
        )

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish, then release the store."""
        await self.drain(grace)
        # A maintenance run cut short leaves the shard in use as it was; its copy is dropped.
        for task in (self._maintenance_task, self._trim_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.memories is not None:
            await self.memories.commits.close()
        if self.store is not None:
            await self.store.close()
        if self.embedder is not None and self._owns_embedder:
            await self.embedder.stop()


async def create_server(settings: MemorySettings) -> MemoryServer:
    """Bind the server (port 0 picks a free port) and start it reporting NOT_SERVING."""
    servicer = MemoryServicer()
    add = partial(memory_pb2_grpc.add_MemoryServiceServicer_to_server, servicer)
    bound = await bind_server(settings, settings.port, SERVICE, add, metrics.RPC_SECONDS)
    return MemoryServer(settings, bound, servicer)


async def serve(settings: MemorySettings | None = None) -> None:
    await run_service("memory_service", settings or MemorySettings(), create_server)
