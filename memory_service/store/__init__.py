"""Vector store for memories: one interface, an adapter per Qdrant backend."""

from memory_service.store.base import (
    CollectionSpec,
    DimensionMismatchError,
    MemoryStore,
    StoreError,
    StoreUnavailableError,
)

__all__ = [
    "CollectionSpec",
    "DimensionMismatchError",
    "MemoryStore",
    "StoreError",
    "StoreUnavailableError",
]
