"""The remote store: a collection built for another dimension is refused, and every failure
of Qdrant reaches the caller as a store error."""

from __future__ import annotations

import pytest
from qdrant_client import AsyncQdrantClient

from memory_service.store import (
    DimensionMismatchError,
    StoreError,
    StoreUnavailableError,
)
from memory_service.store.remote import ServerMemoryStore
from tests.support.qdrant_stand_in import QdrantStandIn
from tests.support.store_points import SPEC, point


async def test_server_store_checks_dimension() -> None:
    from qdrant_client import models

    client = AsyncQdrantClient(location=":memory:")
    # A collection of this name made elsewhere with another vector size.
    await client.create_collection(
        SPEC.name,
        vectors_config={"dense": models.VectorParams(size=16, distance=models.Distance.COSINE)},
    )
    with pytest.raises(DimensionMismatchError, match=r"holds 16-dimensional .* produces 8"):
        await ServerMemoryStore(client, SPEC).open()


async def test_server_store_tells_every_qdrant_failure_as_a_store_error() -> None:
    qdrant = QdrantStandIn().start()
    store = ServerMemoryStore.connect(qdrant.url, None, SPEC, timeout=0.3)
    try:
        await store.open()
        p = point("u", "kept", 0)
        await store.upsert([p])
        for outage in (qdrant.stall, qdrant.hang_up, lambda: qdrant.fail_with(503)):
            outage()
            with pytest.raises(StoreUnavailableError):
                await store.get("u", p.memory.id)
            with pytest.raises(StoreUnavailableError):
                await store.upsert([point("u", "lost", 1)])
            qdrant.answer()
            # Back at once, with nothing stored that was not acknowledged.
            assert await store.count("u") == 1
        qdrant.fail_with(400)
        with pytest.raises(StoreError) as refused:
            await store.count("u")
        # A refused request is a store error too, but not one that waiting fixes.
        assert not isinstance(refused.value, StoreUnavailableError)
        qdrant.answer()
        got = await store.get("u", p.memory.id)
        assert got is not None and got.text == "kept"
    finally:
        await store.close()
        qdrant.stop()
