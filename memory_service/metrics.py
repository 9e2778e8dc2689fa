"""Prometheus metrics of the memory service."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RPC_SECONDS = Histogram(
    "memory_rpc_seconds", "Time to serve a MemoryService RPC", ["method", "code"]
)
EMBED_BATCH_SIZE = Histogram(
    "memory_embed_batch_size",
    "Texts encoded together in one model call",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
EMBED_SECONDS = Histogram("memory_embed_seconds", "Time of one model call")
STORE_SECONDS = Histogram("memory_store_seconds", "Time of a store operation", ["operation"])
MEMORIES_SAVED = Counter("memory_saved_total", "Memories stored", ["kind"])
