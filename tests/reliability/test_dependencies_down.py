"""Dependencies that are down: Redis behind the rate limiter (the gateway counts in process
instead, and says so in its log, once) and the LLM provider behind chat (a fast 503, never
a hang)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from chat_service.config import ChatSettings
from chat_service.server import ChatServer
from chat_service.server import create_server as create_chat_server
from memory_service.server import MemoryServer
from tests.support.ports import free_port
from tests.support.reliability import client_for, gateway_settings
from tests.support.stack import (
    SERVICE_TOKEN,
    GatewayServer,
    LoopThread,
    start_memory_in_process,
    stop_memory_in_process,
)

REDIS_UP = "redis://127.0.0.1:6379/0"
USER_LIMIT = 3


@pytest.fixture(scope="module")
def stack(
    encoder: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LoopThread, MemoryServer]]:
    loop = LoopThread()
    memory, embedder = start_memory_in_process(loop, encoder, Path(tmp_path_factory.mktemp("deps")))
    yield loop, memory
    stop_memory_in_process(loop, memory, embedder)
    loop.close()


def _hammer(gateway: GatewayServer, user: str, times: int) -> tuple[list[int], float]:
    statuses = []
    slowest = 0.0
    with client_for(gateway.url, user, timeout=15.0) as client:
        for _ in range(times):
            started = time.monotonic()
            statuses.append(client.get("/memories").status_code)
            slowest = max(slowest, time.monotonic() - started)
    return statuses, slowest


def test_with_redis_down_limits_still_apply_in_process_without_hanging(
    stack: tuple[LoopThread, MemoryServer], caplog: pytest.LogCaptureFixture
) -> None:
    loop, memory = stack
    limit = f"{USER_LIMIT}/minute"
    up = GatewayServer(
        loop, gateway_settings(memory.port, redis_url=REDIS_UP, rate_limit_user=limit)
    ).start()
    down = GatewayServer(
        loop,
        gateway_settings(
            memory.port,
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            rate_limit_user=limit,
        ),
    ).start()
    try:
        user = f"redis-user-{time.time_ns()}"
        limited, _ = _hammer(up, user, USER_LIMIT + 2)
        with caplog.at_level("WARNING", logger="gateway.ratelimit"):
            admitted, slowest = _hammer(down, user + "-down", USER_LIMIT + 2)
        print(
            f"\nRedis up: {limited}; Redis down: {admitted}, slowest answer {slowest:.2f}s, "
            f"{len(caplog.records)} warnings logged"
        )
        # The same limit bites with Redis down: counted in this process, not switched off.
        assert limited == [200] * USER_LIMIT + [429, 429]
        assert admitted == [200] * USER_LIMIT + [429, 429]
        assert slowest < 5.0
        # At most one warning a minute, however many requests meet the outage.
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "counting in this process" in caplog.records[0].getMessage()
    finally:
        up.stop()
        down.stop()


async def _start_chat(memory_port: int, llm_port: int) -> ChatServer:
    server = await create_chat_server(
        ChatSettings(
            host="127.0.0.1",
            port=0,
            metrics_port=-1,
            memory_addr=f"127.0.0.1:{memory_port}",
            llm_provider="openai",
            llm_base_url=f"http://127.0.0.1:{llm_port}/v1",
            llm_api_key=SecretStr("not-used"),
            llm_model="test-model",
            service_token=SecretStr(SERVICE_TOKEN),
        )
    )
    await server.start_serving()
    return server


def test_with_the_llm_provider_down_chat_fails_fast_with_503(
    stack: tuple[LoopThread, MemoryServer],
) -> None:
    loop, memory = stack
    chat = loop.run(_start_chat(memory.port, free_port()))
    gateway = GatewayServer(
        loop, gateway_settings(memory.port, chat_addr=f"127.0.0.1:{chat.port}")
    ).start()
    try:
        timings = []
        with client_for(gateway.url, "chat-user", timeout=30.0) as client:
            saved = client.post("/save-prompt", json={"prompt": "my cat is called Miso"})
            assert saved.status_code == 200, saved.text
            for path in ("/chat", "/chat/stream"):
                started = time.monotonic()
                response = client.post(path, json={"message": "what is my cat called?"})
                timings.append(time.monotonic() - started)
                print(f"\n{path} with the provider down: {response.status_code} {response.text}")
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"].isdigit()
        print(f"answered in {', '.join(f'{t:.2f}s' for t in timings)}")
        assert all(t < 5.0 for t in timings)
    finally:
        gateway.stop()
        loop.run(chat.stop(0))
