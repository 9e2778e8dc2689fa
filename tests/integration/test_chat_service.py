"""ChatService over real gRPC: a real memory service (real model, embedded store) and a real
HTTP server on loopback standing in for the LLM provider (tests/support/llm_stand_in.py)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chat_service.config import ChatSettings
from chat_service.server import ChatServer, create_server
from memory_service.config import MemorySettings
from memory_service.embedding.scheduler import Embedder
from memory_service.server import MemoryServer
from memory_service.server import create_server as create_memory_server
from protos.chat.v1 import chat_pb2, chat_pb2_grpc
from protos.memory.v1 import memory_pb2, memory_pb2_grpc
from service_kit.identity import Identity, outgoing_metadata
from tests.support.llm_stand_in import ANSWER, Received, Reply, StandInProvider

TOKEN = "chat-integration-token"
ALICE = outgoing_metadata(Identity("alice"), TOKEN, "req-alice")
BOB = outgoing_metadata(Identity("bob"), TOKEN)
ALICE_TEXTS = [
    "I prefer window seats on long flights",
    "My sister's birthday is on the fourth of May",
    "Use pnpm instead of npm in the monorepo",
]
BOB_TEXTS = [
    "I always book aisle seats on flights because of my knees",
    "Bob's favourite airline seat is 12C, right by the wing",
]
QUESTION = "Which seat do I like on flights?"
WAIT = 20.0


# ---------------------------------------------------------------- fixtures


@dataclass
class Memories:
    server: MemoryServer
    alice: dict[str, str]
    bob: dict[str, str]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture(scope="module")
async def memories(
    embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Memories]:
    data_dir: Path = tmp_path_factory.mktemp("chat-memories")
    server = await create_memory_server(
        MemorySettings(
            host="127.0.0.1", port=0, data_dir=data_dir, service_token=TOKEN, metrics_port=-1
        )
    )
    await server.start_serving(embedder)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)

        async def save(md: Any, text: str) -> str:
            request = memory_pb2.SaveMemoryRequest(text=text, provider="chatgpt")
            return (await stub.SaveMemory(request, metadata=md)).id

        alice = {await save(ALICE, text): text for text in ALICE_TEXTS}
        bob = {await save(BOB, text): text for text in BOB_TEXTS}
    yield Memories(server, alice, bob)
    await server.stop(0)


@pytest.fixture
async def provider() -> AsyncIterator[StandInProvider]:
    stand_in = StandInProvider()
    await stand_in.start()
    yield stand_in
    await stand_in.close()


class Chat:
    def __init__(self, server: ChatServer) -> None:
        self.server = server
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        self.stub = chat_pb2_grpc.ChatServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop(0)


StartChat = Callable[..., Awaitable[Chat]]


@pytest.fixture
async def start_chat(memories: Memories, provider: StandInProvider) -> AsyncIterator[StartChat]:
    started: list[Chat] = []

    async def _start(api: str = "openai", **overrides: Any) -> Chat:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "metrics_port": -1,
            "memory_addr": memories.addr,
            "service_token": TOKEN,
            "drain_seconds": 0,
        }
        if api == "openai":
            values |= {
                "llm_provider": "openai",
                "llm_base_url": f"http://127.0.0.1:{provider.port}/v1",
                "llm_api_key": "sk-test",
                "llm_model": "gpt-test",
            }
        elif api == "anthropic":
            values |= {
                "llm_provider": "anthropic",
                "llm_base_url": f"http://127.0.0.1:{provider.port}",
                "llm_api_key": "ak-test",
                "llm_model": "claude-test",
            }
        server = await create_server(ChatSettings(**(values | overrides)))
        await server.start_serving()
        chat = Chat(server)
        started.append(chat)
        return chat

    yield _start
    for chat in started:
        await chat.close()


def ask(message: str = QUESTION, **fields: Any) -> chat_pb2.ChatRequest:
    return chat_pb2.ChatRequest(message=message, top_k=5, **fields)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        if isinstance(call, grpc.aio.UnaryStreamCall):
            async for _ in call:
                pass
        else:
            await call
    return err.value


async def drain(call: Any) -> list[chat_pb2.ChatStreamEvent]:
    return [event async for event in call]


def prompt_text(received: Received) -> str:
    """Everything the provider was given to read, whichever API it was."""
    body = received.body
    return json.dumps([body.get("system", ""), body["messages"]])


# ---------------------------------------------------------------- behaviour


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_provider_gets_the_callers_relevant_memories_and_none_of_anyone_elses(
    api: str, start_chat: StartChat, provider: StandInProvider, memories: Memories
) -> None:
    chat = await start_chat(api)
    history = [
        chat_pb2.Turn(role=chat_pb2.ROLE_USER, content="I'm planning a trip to Lisbon"),
        chat_pb2.Turn(role=chat_pb2.ROLE_ASSISTANT, content="Sounds lovely!"),
    ]
    response = await chat.stub.Chat(ask(history=history), metadata=ALICE, timeout=WAIT)

    assert response.response == "".join(ANSWER)
    (received,) = provider.requests
    sent = prompt_text(received)
    assert "I prefer window seats on long flights" in sent
    for text in BOB_TEXTS:
        assert text not in sent
    used = {memory.id for memory in response.details.context_used}
    assert "I prefer window seats on long flights" in {
        memory.text for memory in response.details.context_used
    }
    assert used <= set(memories.alice)
    assert response.details.usage.prompt_tokens == 321
    assert response.details.usage.completion_tokens == 4
    assert not response.details.usage.estimated
    assert not response.details.offline and not response.details.context_unavailable

    messages = received.body["messages"]
    assert [m["content"] for m in messages[-3:]] == [
        "I'm planning a trip to Lisbon",
        "Sounds lovely!",
        QUESTION,
    ]
    if api == "openai":
        assert received.path == "/v1/chat/completions"
        assert received.headers["authorization"] == "Bearer sk-test"
        assert received.body["model"] == "gpt-test"
        assert messages[0]["role"] == "system"
    else:
        assert received.path == "/v1/messages"
        assert received.headers["x-api-key"] == "ak-test"
        assert received.headers["anthropic-version"] == "2023-06-01"
        assert received.body["model"] == "claude-test"
        assert received.body["max_tokens"] == 1024


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_stream_passes_on_the_first_delta_before_the_provider_has_finished(
    api: str, start_chat: StartChat, provider: StandInProvider, memories: Memories
) -> None:
    chat = await start_chat(api)
    gate = asyncio.Event()
    provider.reply = Reply(gate=gate)
    call = chat.stub.ChatStream(ask(), metadata=ALICE, timeout=WAIT)
    events = call.__aiter__()

    # The stand-in holds back the rest of the answer until this delta has arrived.
    first = await asyncio.wait_for(anext(events), WAIT)
    assert first.WhichOneof("event") == "delta"
    assert first.delta == ANSWER[0]
    assert not provider.sent_last.is_set()
    gate.set()

    rest = [event async for event in events]
    assert [e.delta for e in rest[:-1]] == ANSWER[1:]
    done = rest[-1].done
    assert rest[-1].WhichOneof("event") == "done"
    assert {memory.id for memory in done.context_used} <= set(memories.alice)
    assert "I prefer window seats on long flights" in {m.text for m in done.context_used}
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (321, 4)
    assert done.provider == api
    assert done.finish_reason in ("stop", "end_turn")


async def test_cancelling_the_stream_disconnects_from_the_provider(
    start_chat: StartChat, provider: StandInProvider
) -> None:
    chat = await start_chat()
    provider.reply = Reply(gate=asyncio.Event())  # never opened
    call = chat.stub.ChatStream(ask(), metadata=ALICE, timeout=WAIT)
    first = await asyncio.wait_for(anext(call.__aiter__()), WAIT)
    assert first.delta == ANSWER[0]

    call.cancel()
    await asyncio.wait_for(provider.disconnected.wait(), WAIT)
    assert not provider.sent_last.is_set()


@pytest.mark.parametrize("rpc", ["Chat", "ChatStream"])
async def test_rate_limit_is_resource_exhausted_with_the_providers_retry_after(
    rpc: str, start_chat: StartChat, provider: StandInProvider
) -> None:
    chat = await start_chat()
    provider.reply = Reply(status=429, headers={"Retry-After": "17"})
    err = await failure(getattr(chat.stub, rpc)(ask(), metadata=ALICE, timeout=WAIT))
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("retry-after", "17") in tuple(err.trailing_metadata() or ())


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_provider_server_error_is_unavailable(
    api: str, start_chat: StartChat, provider: StandInProvider
) -> None:
    chat = await start_chat(api)
    provider.reply = Reply(status=500)
    err = await failure(chat.stub.Chat(ask(), metadata=ALICE, timeout=WAIT))
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert "500" in (err.details() or "")


async def test_provider_hanging_up_mid_answer_is_unavailable_after_the_text_so_far(
    start_chat: StartChat, provider: StandInProvider
) -> None:
    chat = await start_chat()
    provider.reply = Reply(hang_up=True)
    received: list[chat_pb2.ChatStreamEvent] = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for event in chat.stub.ChatStream(ask(), metadata=ALICE, timeout=WAIT):
            received.append(event)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert [event.delta for event in received] == [ANSWER[0]]


async def test_unreachable_provider_is_unavailable(start_chat: StartChat) -> None:
    chat = await start_chat(llm_base_url=f"http://127.0.0.1:{closed_port()}/v1")
    err = await failure(chat.stub.ChatStream(ask(), metadata=ALICE, timeout=WAIT))
    assert err.code() is grpc.StatusCode.UNAVAILABLE


async def test_provider_silent_past_the_read_timeout_is_deadline_exceeded_from_the_server(
    start_chat: StartChat, provider: StandInProvider
) -> None:
    chat = await start_chat(llm_read_timeout_seconds=0.5)
    provider.reply = Reply(stall=True)
    # The caller allows far longer, so the status comes from the chat service itself.
    err = await failure(chat.stub.Chat(ask(), metadata=ALICE, timeout=WAIT))
    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.details() == "openai did not answer in time"
    await asyncio.wait_for(provider.disconnected.wait(), WAIT)


async def test_stalled_stream_ends_at_the_callers_deadline_and_releases_the_provider(
    start_chat: StartChat, provider: StandInProvider
) -> None:
    chat = await start_chat()
    provider.reply = Reply(gate=asyncio.Event())  # first delta, then silence
    call = chat.stub.ChatStream(ask(), metadata=ALICE, timeout=2.0)
    err = await failure(call)
    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(provider.disconnected.wait(), WAIT)


async def test_memory_service_down_answers_without_memories_and_says_so(
    start_chat: StartChat, provider: StandInProvider
) -> None:
    chat = await start_chat(memory_addr=f"127.0.0.1:{closed_port()}")
    response = await chat.stub.Chat(ask(), metadata=ALICE, timeout=WAIT)
    assert response.response == "".join(ANSWER)
    assert response.details.context_unavailable
    assert "memories could not be searched" in response.details.notice
    assert list(response.details.context_used) == []
    sent = prompt_text(provider.requests[0])
    for text in ALICE_TEXTS:
        assert text not in sent

    events = await drain(chat.stub.ChatStream(ask(), metadata=ALICE, timeout=WAIT))
    assert events[-1].done.context_unavailable


async def test_offline_mode_answers_by_quoting_the_callers_memories(
    start_chat: StartChat, provider: StandInProvider, memories: Memories
) -> None:
    chat = await start_chat("offline")
    response = await chat.stub.Chat(ask(), metadata=ALICE, timeout=WAIT)
    assert response.details.offline
    assert response.details.provider == "offline"
    assert "No language model is configured" in response.response
    assert '"I prefer window seats on long flights"' in response.response
    for text in BOB_TEXTS:
        assert text not in response.response
    assert {m.id for m in response.details.context_used} <= set(memories.alice)
    assert "No language model is configured" in response.details.notice

    events = await drain(chat.stub.ChatStream(ask(), metadata=ALICE, timeout=WAIT))
    assert "".join(e.delta for e in events[:-1]) == response.response
    assert events[-1].done.offline
    assert provider.requests == []


async def test_a_configured_server_can_be_asked_for_offline_but_not_for_another_provider(
    start_chat: StartChat, provider: StandInProvider
) -> None:
    chat = await start_chat()
    response = await chat.stub.Chat(ask(provider="offline"), metadata=ALICE, timeout=WAIT)
    assert response.details.offline
    assert provider.requests == []
    err = await failure(chat.stub.Chat(ask(provider="claude"), metadata=ALICE, timeout=WAIT))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    err = await failure(chat.stub.Chat(ask(message="  "), metadata=ALICE, timeout=WAIT))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_calls_without_the_service_token_are_refused(
    start_chat: StartChat, provider: StandInProvider
) -> None:
    chat = await start_chat()
    forged = outgoing_metadata(Identity("alice"), "not-the-token")
    err = await failure(chat.stub.Chat(ask(), metadata=forged, timeout=WAIT))
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED
    assert provider.requests == []


async def test_health_reports_serving_only_once_ready(memories: Memories) -> None:
    settings = ChatSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        memory_addr=memories.addr,
        service_token=TOKEN,
    )
    server = await create_server(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="chat.v1.ChatService")
        assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        await server.start_serving()
        assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.SERVING
    await server.stop(0)
