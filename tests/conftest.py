"""Fixtures shared by every test: the real bundled model, loaded once per run, signing keys
with their JWKS server, and a real MemoryService and gateway for the API tests; and the
markers every test under tests/browser/ and tests/deploy/ carries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from memory_service.embedding.model_dir import open_model_dir
from memory_service.embedding.onnx_encoder import OnnxEncoder
from memory_service.embedding.scheduler import Embedder
from memory_service.server import MemoryServer
from tests.support.auth import JwksServer, Keys, ec_key, gateway_settings, rsa_key
from tests.support.stack import Gateway, StartGateway, start_memory

TESTS = Path(__file__).resolve().parent
# Directory under tests/ -> the markers each of its tests carries. The browser tests start
# the stack as processes and a Chromium, the end-to-end ones `memory-layer up`: all slow.
DIRECTORY_MARKERS = {
    "browser": (pytest.mark.browser, pytest.mark.slow),
    "e2e": (pytest.mark.slow,),
    "deploy": (pytest.mark.deploy,),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        directory = item.path.relative_to(TESTS).parts[0]
        for marker in DIRECTORY_MARKERS.get(directory, ()):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def encoder() -> OnnxEncoder:
    """The service's encoder over the bundled model, shared by every embedder of the run (as
    the service's workers share it)."""
    return OnnxEncoder(open_model_dir(None))


@pytest.fixture(scope="session")
async def embedder(encoder: OnnxEncoder) -> AsyncIterator[Embedder]:
    emb = Embedder(encoder, batch_size=32, max_wait_ms=2.0)
    await emb.start()
    yield emb
    await emb.stop()


@pytest.fixture(scope="session")
def keys() -> Iterator[Keys]:
    es, rs = ec_key("es-key-1"), rsa_key("rs-key-1")
    server = JwksServer([es.public_jwk, rs.public_jwk])
    server.start()
    yield Keys(es, rs, server)
    server.stop()


@pytest.fixture(scope="session")
async def memory_server(embedder: Embedder, tmp_path_factory) -> AsyncIterator[MemoryServer]:  # type: ignore[no-untyped-def]
    server = await start_memory(embedder, tmp_path_factory.mktemp("gateway-memory"))
    yield server
    await server.stop(0)


@pytest.fixture(scope="session")
async def gateway(keys: Keys, memory_server: MemoryServer) -> AsyncIterator[Gateway]:
    running = await Gateway(gateway_settings(keys, memory_server.port)).start()
    yield running
    await running.stop()


@pytest.fixture
async def start_gateway(keys: Keys, memory_server: MemoryServer) -> AsyncIterator[StartGateway]:
    started: list[Gateway] = []

    async def _start(memory_port: int | None = None, **overrides: Any) -> Gateway:
        port = memory_server.port if memory_port is None else memory_port
        running = await Gateway(gateway_settings(keys, port, **overrides)).start()
        started.append(running)
        return running

    yield _start
    for running in started:
        await running.stop()


@pytest.fixture
async def api(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client
