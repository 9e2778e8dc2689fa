"""MemoryService over real gRPC: real server on port 0, real model, real embedded store."""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memory_service.config import MemorySettings
from memory_service.embedding.encoder import LongText
from memory_service.embedding.onnx_encoder import OnnxEncoder
from memory_service.embedding.scheduler import Embedder
from memory_service.server import MemoryServer, create_server
from protos.memory.v1 import memory_pb2 as pb
from protos.memory.v1 import memory_pb2_grpc
from service_kit.identity import Identity, outgoing_metadata
from service_kit.limits import MAX_TEXT_CHARS
from tests.support.ports import free_port

TOKEN = "integration-service-token"
ALICE = outgoing_metadata(Identity("alice"), TOKEN)
BOB = outgoing_metadata(Identity("bob"), TOKEN)
ADMIN = outgoing_metadata(Identity("root", is_admin=True), TOKEN)


def settings(data_dir: Path) -> MemorySettings:
    return MemorySettings(
        host="127.0.0.1", port=0, data_dir=data_dir, service_token=TOKEN, metrics_port=-1
    )


class Running:
    def __init__(self, server: MemoryServer) -> None:
        self.server = server
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        self.stub = memory_pb2_grpc.MemoryServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop(0)


@pytest.fixture
async def start(embedder: Embedder) -> AsyncIterator[Callable[[Path], Any]]:
    started: list[Running] = []

    async def _start(data_dir: Path) -> Running:
        server = await create_server(settings(data_dir))
        await server.start_serving(embedder)
        running = Running(server)
        started.append(running)
        return running

    yield _start
    for running in started:
        await running.close()


async def save(stub: Any, md: Any, text: str, **kw: Any) -> pb.Memory:
    return await stub.SaveMemory(pb.SaveMemoryRequest(text=text, **kw), metadata=md)


async def codes_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code()


async def test_users_see_only_their_own_and_data_survives_restart(start, tmp_path: Path) -> None:
    data = tmp_path / "data"
    svc = await start(data)
    stub = svc.stub
    mine = [
        await save(stub, ALICE, "I prefer window seats on long flights", provider="chatgpt"),
        await save(stub, ALICE, "My sister's birthday is on the fourth of May", provider="claude"),
        await save(stub, ALICE, "Use pnpm instead of npm in the monorepo", provider="chatgpt"),
    ]
    theirs = await save(
        stub, BOB, "Bob's secret flight booking reference is QX42", provider="gemini"
    )

    found = await stub.Search(pb.SearchRequest(query="flight seats", top_k=10), metadata=ALICE)
    assert {r.memory.id for r in found.results} == {m.id for m in mine}
    assert all(r.memory.user_id == "alice" for r in found.results)
    for mode in (pb.SEARCH_MODE_SEMANTIC, pb.SEARCH_MODE_KEYWORD, pb.SEARCH_MODE_HYBRID):
        hits = await stub.Search(
            pb.SearchRequest(query="Bob flight booking QX42", top_k=50, mode=mode), metadata=ALICE
        )
        assert theirs.id not in {r.memory.id for r in hits.results}

    assert (await stub.GetMemory(pb.GetMemoryRequest(id=mine[0].id), metadata=ALICE)).text == (
        mine[0].text
    )
    assert (
        await codes_of(stub.GetMemory(pb.GetMemoryRequest(id=theirs.id), metadata=ALICE))
        == grpc.StatusCode.NOT_FOUND
    )
    listed = await stub.ListMemories(pb.ListMemoriesRequest(page_size=50), metadata=ALICE)
    assert {m.id for m in listed.memories} == {m.id for m in mine}
    exported = [m async for m in stub.ExportMemories(pb.ExportMemoriesRequest(), metadata=ALICE)]
    assert {m.id for m in exported} == {m.id for m in mine}
    assert (
        await codes_of(stub.DeleteMemory(pb.DeleteMemoryRequest(id=theirs.id), metadata=ALICE))
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        await codes_of(
            stub.DeleteUserMemories(pb.DeleteUserMemoriesRequest(user_id="bob"), metadata=ALICE)
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert await codes_of(stub.GetStats(pb.GetStatsRequest(), metadata=ALICE)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )

    await svc.close()
    svc = await start(data)
    stats = await svc.stub.GetStats(pb.GetStatsRequest(), metadata=ADMIN)
    assert (stats.total_memories, stats.users, stats.dimension) == (4, 2, 384)
    got = await svc.stub.GetMemory(pb.GetMemoryRequest(id=theirs.id), metadata=BOB)
    assert got.text == theirs.text and got.provider == "gemini"

    await svc.stub.DeleteMemory(pb.DeleteMemoryRequest(id=mine[0].id), metadata=ALICE)
    left = await svc.stub.ListMemories(pb.ListMemoriesRequest(), metadata=ALICE)
    assert {m.id for m in left.memories} == {mine[1].id, mine[2].id}
    wiped = await svc.stub.DeleteUserMemories(pb.DeleteUserMemoriesRequest(), metadata=ALICE)
    assert wiped.deleted == 2
    assert (await svc.stub.GetStats(pb.GetStatsRequest(), metadata=ADMIN)).total_memories == 1


async def test_same_message_id_saves_once(start, tmp_path: Path) -> None:
    svc = await start(tmp_path / "data")
    first = await save(svc.stub, ALICE, "retry me", message_id="msg-1")
    again = await save(svc.stub, ALICE, "retry me", message_id="msg-1")
    other_user = await save(svc.stub, BOB, "retry me", message_id="msg-1")
    assert again.id == first.id
    assert again.created_at == first.created_at
    assert other_user.id != first.id
    stats = await svc.stub.GetStats(pb.GetStatsRequest(), metadata=ADMIN)
    assert stats.total_memories == 2


async def test_response_attaches_to_its_prompt(start, tmp_path: Path) -> None:
    svc = await start(tmp_path / "data")
    prompt = await save(svc.stub, ALICE, "How do I undo the last git commit?", message_id="p1")
    request = pb.AttachResponseRequest(
        text="Use git reset --soft HEAD~1 to keep the changes staged.",
        prompt_message_id="p1",
        message_id="r1",
    )
    response = await svc.stub.AttachResponse(request, metadata=ALICE)
    assert response.kind == pb.MEMORY_KIND_RESPONSE and response.prompt_id == prompt.id
    retried = await svc.stub.AttachResponse(request, metadata=ALICE)
    assert retried.id == response.id
    linked = await svc.stub.GetMemory(pb.GetMemoryRequest(id=prompt.id), metadata=ALICE)
    assert linked.response_id == response.id
    assert (
        await codes_of(
            svc.stub.AttachResponse(
                pb.AttachResponseRequest(text="answer", prompt_id=prompt.id), metadata=BOB
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )


RARE = "Checkout service logs show ERR_7731 after the nightly release"
CORPUS = [
    RARE,
    "Troubleshooting a failing server: read the stack trace, then check memory limits",
    "Why does my web server crash with an error when traffic spikes?",
    "The API server returned an internal error and crashed during the load test",
    "Recipe for a lemon drizzle cake with poppy seeds",
    "Plan a weekend hiking trip in the Alps in September",
    "My cat loves sleeping on the warm windowsill every afternoon",
]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


async def test_hybrid_finds_rare_tokens_and_semantic_finds_paraphrases(
    start, tmp_path: Path
) -> None:
    svc = await start(tmp_path / "data")
    for text in CORPUS:
        await save(svc.stub, ALICE, text)

    async def top(query: str, mode: int) -> str:
        hits = await svc.stub.Search(
            pb.SearchRequest(query=query, top_k=5, mode=mode), metadata=ALICE
        )
        return hits.results[0].memory.text

    query = "what causes the server error ERR_7731"
    assert await top(query, pb.SEARCH_MODE_SEMANTIC) != RARE
    assert await top(query, pb.SEARCH_MODE_HYBRID) == RARE
    assert await top(query, pb.SEARCH_MODE_KEYWORD) == RARE

    paraphrase = "where do kittens doze"
    assert not words(paraphrase) & words(CORPUS[-1])
    assert await top(paraphrase, pb.SEARCH_MODE_SEMANTIC) == CORPUS[-1]


async def test_scores_min_score_and_the_relevance_floor(start, tmp_path: Path) -> None:
    svc = await start(tmp_path / "data")
    stub = svc.stub
    pet = await save(stub, ALICE, "My dog's name is Biscuit, a three year old beagle")
    await save(stub, ALICE, "I drive a 2016 blue Honda Civic")
    saved_again = await save(stub, ALICE, "my dog's NAME is biscuit,  a three year old beagle")
    assert saved_again.id == pet.id

    async def search(query: str, **kw: Any) -> list[pb.ScoredMemory]:
        request = pb.SearchRequest(query=query, top_k=10, **kw)
        return list((await stub.Search(request, metadata=ALICE)).results)

    on_topic = await search("what is my dog called?")
    assert on_topic[0].memory.id == pet.id
    assert [r.memory.id for r in on_topic].count(pet.id) == 1
    assert all(0.0 <= r.score <= 1.0 for r in on_topic)
    assert on_topic[0].score > 0.5
    assert [r.memory.id for r in await search("what is my dog called?", relevant_only=True)] == [
        pet.id
    ]
    # A query whose best match is short of "related": its top score is below 1.
    breed = await search("what breed is my dog?")
    assert breed[0].memory.id == pet.id and 0.5 < breed[0].score < 0.99
    above = await search("what breed is my dog?", min_score=breed[0].score + 0.01)
    assert above == []

    off_topic = await search("Write a Haskell function that reverses a list")
    assert off_topic and all(r.score < 0.3 for r in off_topic)
    assert await search("Write a Haskell function that reverses a list", relevant_only=True) == []

    rrf = await search("dog Biscuit", mode=pb.SEARCH_MODE_RRF)
    assert rrf[0].memory.id == pet.id
    assert (
        await codes_of(
            stub.Search(pb.SearchRequest(query="dog", top_k=5, min_score=1.5), metadata=ALICE)
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_bad_input_is_rejected_and_writes_nothing(start, tmp_path: Path) -> None:
    svc = await start(tmp_path / "data")
    stub = svc.stub
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert await codes_of(save(stub, ALICE, "")) == invalid
    assert await codes_of(save(stub, ALICE, "   \n")) == invalid
    assert await codes_of(save(stub, ALICE, "x" * (MAX_TEXT_CHARS + 1))) == invalid
    assert (
        await codes_of(stub.Search(pb.SearchRequest(query="q", top_k=51), metadata=ALICE))
        == invalid
    )
    assert (
        await codes_of(stub.Search(pb.SearchRequest(query="q", top_k=0), metadata=ALICE)) == invalid
    )
    assert (
        await codes_of(
            stub.Search(pb.SearchRequest(query="q", top_k=5, mode=99), metadata=ALICE)  # type: ignore[arg-type]
        )
        == invalid
    )
    assert (
        await codes_of(stub.ListMemories(pb.ListMemoriesRequest(cursor="%%%"), metadata=ALICE))
        == invalid
    )
    assert (
        await codes_of(
            stub.ListMemories(pb.ListMemoriesRequest(cursor="bm90LWEtdXVpZA"), metadata=ALICE)
        )
        == invalid
    )

    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    no_token = (("x-user-id", "alice"),)
    wrong_token = outgoing_metadata(Identity("alice"), "not-the-token")
    no_identity = (("x-service-token", TOKEN),)
    for md in (no_token, wrong_token, no_identity, ()):
        assert await codes_of(save(stub, md, "should not be stored")) == unauthenticated

    not_found = grpc.StatusCode.NOT_FOUND
    assert (
        await codes_of(
            stub.GetMemory(
                pb.GetMemoryRequest(id="00000000-0000-0000-0000-000000000000"), metadata=ALICE
            )
        )
        == not_found
    )
    assert (
        await codes_of(stub.GetMemory(pb.GetMemoryRequest(id="not-an-id"), metadata=ALICE))
        == not_found
    )

    stats = await stub.GetStats(pb.GetStatsRequest(), metadata=ADMIN)
    assert stats.total_memories == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("long_text", "mode"), [("first", pb.SEARCH_MODE_HYBRID), ("mean", pb.SEARCH_MODE_SEMANTIC)]
)
async def test_the_last_words_of_a_long_text_are_found(
    long_text: str, mode: pb.SearchMode, tmp_path: Path, encoder: OnnxEncoder
) -> None:
    """By default a long memory's vector is its first window's, and its last words are found
    by their keywords (hybrid search); with MEMORY_LONG_TEXT=mean its vector is drawn from
    all of it, and they are found by meaning alone."""
    chosen = copy.copy(encoder)
    chosen.long_text = LongText.parse(long_text)
    embedder = Embedder(chosen, batch_size=32, max_wait_ms=2.0)
    await embedder.start()
    server = await create_server(settings(tmp_path / "data"))
    await server.start_serving(embedder)
    svc = Running(server)
    try:
        filler = "We talked about the quarterly budget and the spreadsheet formulas. " * 60
        tail = "Finally: the wifi password for the cabin is written under the router."
        text = filler + tail
        assert len(chosen.token_ids([text])[0]) > 2 * chosen.window
        saved = await save(svc.stub, ALICE, text)
        got = await svc.stub.GetMemory(pb.GetMemoryRequest(id=saved.id), metadata=ALICE)
        assert got.text == text
        await save(svc.stub, ALICE, "Notes on spreadsheet formulas for the budget")
        hits = await svc.stub.Search(
            pb.SearchRequest(query="cabin wifi password router", top_k=1, mode=mode),
            metadata=ALICE,
        )
        assert hits.results[0].memory.id == saved.id
    finally:
        await svc.close()
        await embedder.stop()


async def test_health_serving_then_not_serving_on_stop(embedder: Embedder, tmp_path: Path) -> None:
    server = await create_server(settings(tmp_path / "data"))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    health = health_pb2_grpc.HealthStub(channel)
    check = health_pb2.HealthCheckRequest(service="memory.v1.MemoryService")
    assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING
    stub = memory_pb2_grpc.MemoryServiceStub(channel)
    assert await codes_of(save(stub, ALICE, "too early")) == grpc.StatusCode.UNAVAILABLE
    await server.start_serving(embedder)
    assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.SERVING
    await server.set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
    assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING
    await channel.close()
    await server.stop(0)


@pytest.mark.slow
async def test_data_dir_refuses_another_dimension(start, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    data = tmp_path / "data"
    svc = await start(data)
    await save(svc.stub, ALICE, "stored with 384 dimensions")
    await svc.close()

    env = {
        **os.environ,
        "MEMORY_DATA_DIR": str(data),
        "MEMORY_PORT": "0",
        "MEMORY_HOST": "127.0.0.1",
        "MEMORY_METRICS_PORT": "-1",
        "MEMORY_EMBEDDING_DIM": "128",
        "MEMORY_LAYER_SERVICE_TOKEN": TOKEN,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "memory_service"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert re.search(r"holds 384-dimensional .* produces 128-dimensional", proc.stderr)


@pytest.mark.slow
async def test_process_serves_health_metrics_and_drains_on_sigterm(tmp_path: Path) -> None:
    import asyncio
    import os
    import signal
    import sys
    import urllib.request

    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "MEMORY_DATA_DIR": str(tmp_path / "data"),
        "MEMORY_PORT": str(port),
        "MEMORY_HOST": "127.0.0.1",
        "MEMORY_METRICS_PORT": str(metrics_port),
        "MEMORY_LAYER_SERVICE_TOKEN": TOKEN,
        "MEMORY_DRAIN_SECONDS": "2",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "memory_service", env=env, stderr=asyncio.subprocess.PIPE
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(channel)
    check = health_pb2.HealthCheckRequest(service="memory.v1.MemoryService")
    status = None
    for _ in range(600):
        try:
            status = (await health.Check(check, timeout=1)).status
        except grpc.aio.AioRpcError:
            status = None
        if status == health_pb2.HealthCheckResponse.SERVING:
            break
        await asyncio.sleep(0.1)
    assert status == health_pb2.HealthCheckResponse.SERVING
    stub = memory_pb2_grpc.MemoryServiceStub(channel)
    await save(stub, ALICE, "counted in the metrics")

    def scrape() -> str:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    body = await asyncio.to_thread(scrape)
    assert 'memory_rpc_seconds_count{code="OK",method="/memory.v1.MemoryService/SaveMemory"}' in (
        body
    )
    assert "memory_embed_batch_size_count" in body

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    await channel.close()


async def test_admin_rpcs_are_accepted_only_with_the_gateways_token(
    embedder: Embedder, tmp_path: Path
) -> None:
    server = await create_server(
        MemorySettings(
            host="127.0.0.1",
            port=0,
            data_dir=tmp_path,
            metrics_port=-1,
            gateway_token="the-gateways-token",
            chat_token="chat-services-token",
        )
    )
    await server.start_serving(embedder)
    running = Running(server)
    try:
        stub = running.stub
        victim = outgoing_metadata(Identity("victim"), "chat-services-token")
        await stub.SaveMemory(pb.SaveMemoryRequest(text="mine alone"), metadata=victim)
        for token in ("chat-services-token", "the-gateways-token"):
            admin = outgoing_metadata(Identity("root", is_admin=True), token)
            if token == "chat-services-token":
                # The chat service may act for users, never for an admin.
                for call in (
                    stub.GetStats(pb.GetStatsRequest(), metadata=admin),
                    stub.DeleteUserMemories(
                        pb.DeleteUserMemoriesRequest(user_id="victim"), metadata=admin
                    ),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await call
                    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            else:
                stats = await stub.GetStats(pb.GetStatsRequest(), metadata=admin)
                assert stats.total_memories == 1
        for token in ("", "integration-service-token", "the-gateways-token-x"):
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await stub.GetStats(
                    pb.GetStatsRequest(), metadata=outgoing_metadata(Identity("root"), token)
                )
            assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
        left = await stub.ListMemories(pb.ListMemoriesRequest(), metadata=victim)
        assert [m.text for m in left.memories] == ["mine alone"]
    finally:
        await running.close()
