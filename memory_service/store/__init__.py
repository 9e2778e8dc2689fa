"""Vector store for memories: one interface, an adapter per Qdrant backend (`embedded/`,
`remote.py`)."""

from memory_service.store.interface import (
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
