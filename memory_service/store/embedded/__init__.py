"""The embedded store: the Qdrant engine in process, its shards kept under a data dir, and
the maintenance that keeps them compact while the service runs."""

from memory_service.store.embedded.shard import EdgeShardSlot
from memory_service.store.embedded.store import EdgeMemoryStore

__all__ = ["EdgeMemoryStore", "EdgeShardSlot"]
