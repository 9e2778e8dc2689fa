"""The memory service's server: it maintains its embedded store and returns free heap to the
OS while it runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from memory_service import memory_release
from memory_service import server as memory_server
from memory_service.config import MemorySettings
from memory_service.embedding.scheduler import Embedder
from memory_service.memories import NewMemory
from memory_service.models import SearchFilters, SearchMode
from memory_service.server import create_server
from service_kit.identity import Identity


def service_settings(tmp_path: Path, **settings: float) -> MemorySettings:
    return MemorySettings(
        host="127.0.0.1",
        port=0,
        data_dir=tmp_path / "data",
        service_token="maintenance-test-token",
        metrics_port=-1,
        **settings,
    )


async def test_the_service_maintains_its_embedded_store(embedder: Embedder, tmp_path: Path) -> None:
    server = await create_server(
        service_settings(
            tmp_path, maintenance_interval_seconds=0.1, maintenance_min_deleted_share=0.2
        )
    )
    await server.start_serving(embedder)
    try:
        assert server.memories is not None and server.maintenance is not None
        alice, bob = Identity("alice"), Identity("bob")
        for n in range(30):
            await server.memories.save(alice, NewMemory(text=f"alice wrote note {n}"))
        kept = await server.memories.save(bob, NewMemory(text="bob's only note about kyoto"))
        await server.memories.delete_user(alice)
        async with asyncio.timeout(60):
            while not server.maintenance.runs:
                await asyncio.sleep(0.05)

        found = await server.memories.search(bob, "kyoto", 5, SearchMode.HYBRID, SearchFilters())
        assert [r.memory.id for r in found] == [kept.id]
        later = await server.memories.save(bob, NewMemory(text="bob again"))
        assert (await server.memories.get(bob, later.id)).text == "bob again"
    finally:
        await server.stop(0)


async def test_the_service_returns_free_heap_to_the_os_while_it_runs(
    embedder: Embedder, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    trims: list[float] = []
    monkeypatch.setattr(memory_server, "HEAP_TRIM_SECONDS", 0.05)
    monkeypatch.setattr(memory_release, "release_free_memory", lambda: trims.append(0.0) or True)
    server = await create_server(service_settings(tmp_path))
    await server.start_serving(embedder)
    try:
        async with asyncio.timeout(30):
            while len(trims) < 3:
                await asyncio.sleep(0.05)
    finally:
        await server.stop(0)
    stopped = len(trims)
    await asyncio.sleep(0.2)
    assert len(trims) == stopped
