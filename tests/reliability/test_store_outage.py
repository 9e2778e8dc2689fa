"""A Qdrant server that stops answering while the service runs: saves and searches get a
503 with Retry-After (not a 500, not a hang), nothing acknowledged is lost, and the service
recovers by itself once Qdrant answers again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from memory_service.config import MemorySettings
from memory_service.embedding.scheduler import Embedder
from memory_service.server import MemoryServer, create_server
from tests.support.qdrant_stand_in import QdrantStandIn
from tests.support.reliability import client_for, gateway_settings
from tests.support.stack import SERVICE_TOKEN, GatewayServer, LoopThread

STORE_TIMEOUT_SECONDS = 0.5
RETRY_AFTER_SECONDS = 7


@pytest.fixture(scope="module")
def outage_stack(
    encoder: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[QdrantStandIn, GatewayServer]]:
    qdrant = QdrantStandIn().start()
    loop = LoopThread()

    async def start() -> tuple[MemoryServer, Embedder]:
        embedder = Embedder(encoder, batch_size=32, max_wait_ms=2.0)
        server = await create_server(
            MemorySettings(
                host="127.0.0.1",
                port=0,
                qdrant_url=qdrant.url,
                id_key=SecretStr("store-outage-test-id-key"),
                qdrant_timeout_seconds=STORE_TIMEOUT_SECONDS,
                data_dir=tmp_path_factory.mktemp("unused-data-dir"),
                service_token=SecretStr(SERVICE_TOKEN),
                metrics_port=-1,
            )
        )
        await server.start_serving(embedder)
        return server, embedder

    memory, embedder = loop.run(start())
    gateway = GatewayServer(
        loop, gateway_settings(memory.port, retry_after_seconds=RETRY_AFTER_SECONDS)
    ).start()
    yield qdrant, gateway

    async def stop() -> None:
        await memory.stop(0)
        await embedder.stop()

    gateway.stop()
    loop.run(stop())
    loop.close()
    qdrant.stop()


def _save(client: httpx.Client, text: str, message_id: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"prompt": text, "provider": "chatgpt"}
    if message_id is not None:
        body["message_id"] = message_id
    return client.post("/save-prompt", json=body)


def _search(client: httpx.Client, query: str) -> httpx.Response:
    return client.post("/search", json={"query": query, "top_k": 10})


def _assert_unavailable(response: httpx.Response) -> None:
    print(
        f"  {response.request.method} {response.request.url.path}: {response.status_code} "
        f"after {response.elapsed.total_seconds():.2f} s"
    )
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert response.json() == {"detail": "Service unavailable, retry later"}


@pytest.mark.parametrize("outage", ["stall", "hang_up"])
def test_a_silent_qdrant_is_a_503_and_the_service_recovers_without_losing_a_save(
    outage_stack: tuple[QdrantStandIn, GatewayServer], outage: str
) -> None:
    qdrant, gateway = outage_stack
    setup = {path.rsplit("/", 1)[-1] for method, path in qdrant.requests if method == "PUT"}
    assert "index" in setup  # the service set its collection up through the stand-in

    facts = {
        "m-boat": "My sailing boat is called Albatross",
        "m-cat": "The cat's vet appointment is on Thursday",
    }
    with client_for(gateway.url, f"outage-{outage}", timeout=30.0) as client:
        acknowledged = {}
        for message_id, text in facts.items():
            saved = _save(client, text, message_id)
            assert saved.status_code == 200, saved.text
            acknowledged[saved.json()["id"]] = text

        held_before = qdrant.held
        getattr(qdrant, outage)()
        _assert_unavailable(_save(client, "Passport renewal is due in March", "m-passport"))
        _assert_unavailable(_save(client, "A note saved without a message id"))
        _assert_unavailable(_search(client, "what is my boat called"))
        _assert_unavailable(client.get("/memories"))
        held = qdrant.held - held_before
        assert held >= 4  # the requests reached Qdrant and went unanswered

        qdrant.answer()
        found = _search(client, "what is my boat called")
        assert found.status_code == 200, found.text
        assert found.json()["results"][0]["text"] == facts["m-boat"]
        retried = _save(client, "Passport renewal is due in March", "m-passport")
        assert retried.status_code == 200, retried.text
        acknowledged[retried.json()["id"]] = "Passport renewal is due in March"

        listed = client.get("/memories", params={"limit": 50})
        assert listed.status_code == 200, listed.text
        assert {m["id"]: m["text"] for m in listed.json()["memories"]} == acknowledged
    print(f"\n{outage}: {held} store requests unanswered, every one a 503 for the client")
