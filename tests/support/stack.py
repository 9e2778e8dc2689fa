"""The memory_service + chat_service + gateway stack, started the ways tests and benches need it.

In this process (the API, integration and reliability tests):
- `start_memory` runs memory_service's gRPC server on an event loop, `Gateway` the gateway app
  on uvicorn, both on free loopback ports;
- `LoopThread` and `GatewayServer` do the same for synchronous tests, on a private loop.

As child processes (the browser tests, crash tests and benches), each `python -m <service>`
on a free loopback port, stopped with SIGTERM (tests/support/processes.py):
- `MemoryProcess`, `ChatProcess`, `GatewayProcess`, one service each, restartable;
- `ProcessStack`, memory_service, optionally chat_service, and the gateway wired together.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from gateway.app import create_app
from gateway.config import GatewaySettings
from memory_service.config import MemorySettings
from memory_service.embedding.encoder import Encoder
from memory_service.embedding.scheduler import Embedder
from memory_service.server import MemoryServer, create_server
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess, grpc_serving, http_ready, service_env

SERVICE_TOKEN = "test-stack-service-token"
# Rate limits out of the way, for stacks that are not testing them.
NO_RATE_LIMITS = {
    "GATEWAY_RATE_LIMIT_IP": "1000000/minute",
    "GATEWAY_RATE_LIMIT_USER": "1000000/minute",
    "GATEWAY_RATE_LIMIT_CHAT": "1000000/minute",
}

T = TypeVar("T")


# ---- in this process ----------------------------------------------------------------------


async def start_memory(
    embedder: Embedder,
    data_dir: Path,
    port: int = 0,
    *,
    service_token: str = SERVICE_TOKEN,
    **settings: Any,
) -> MemoryServer:
    """memory_service's server on loopback (port 0: a free one), serving with embedder;
    `settings` are further MemorySettings fields (e.g. qdrant_url for the server store)."""
    server = await create_server(
        MemorySettings(
            host="127.0.0.1",
            port=port,
            data_dir=data_dir,
            service_token=service_token,
            metrics_port=-1,
            **settings,
        )
    )
    await server.start_serving(embedder)
    return server


class Gateway:
    """The gateway app on uvicorn, on a free loopback port, on the running event loop."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            # As in `python -m gateway`: the app alone decides whom to believe about the client.
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> Gateway:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("timeout", 30.0)
        return httpx.AsyncClient(base_url=self.url, **kwargs)


# The `start_gateway` fixture: a further Gateway on the session's memory service.
StartGateway = Callable[..., Awaitable[Gateway]]


class LoopThread:
    """An event loop on its own thread, so synchronous tests can drive async servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class GatewayServer:
    """A `Gateway` on a LoopThread, for synchronous tests."""

    def __init__(self, loop: LoopThread, settings: GatewaySettings) -> None:
        self.loop = loop
        self.gateway = Gateway(settings)
        self.url = ""

    def start(self) -> GatewayServer:
        async def _start() -> Gateway:
            return await self.gateway.start()

        self.url = self.loop.run(_start()).url
        return self

    def stop(self) -> None:
        self.loop.run(self.gateway.stop())


def start_memory_in_process(
    loop: LoopThread, encoder: Encoder, data_dir: Path
) -> tuple[MemoryServer, Embedder]:
    """memory_service's server and its own embedder on a LoopThread."""

    async def _start() -> tuple[MemoryServer, Embedder]:
        embedder = Embedder(encoder, batch_size=32, max_wait_ms=2.0)
        return await start_memory(embedder, data_dir), embedder

    return loop.run(_start())


def stop_memory_in_process(loop: LoopThread, server: MemoryServer, embedder: Embedder) -> None:
    async def _stop() -> None:
        await server.stop(0)
        await embedder.stop()

    loop.run(_stop())


# ---- as child processes -------------------------------------------------------------------


class MemoryProcess(ServiceProcess):
    """`python -m memory_service` on a free port and data_dir, with the embedded store.
    `settings` are MEMORY_* variables; `start()` returns once the service is SERVING."""

    def __init__(
        self,
        data_dir: Path,
        *,
        service_token: str = SERVICE_TOKEN,
        inherit_settings: bool = False,
        log_path: Path | None = None,
        **settings: str,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        env = service_env(
            inherit_settings=inherit_settings,
            MEMORY_HOST="127.0.0.1",
            MEMORY_PORT=str(self.port),
            MEMORY_DATA_DIR=str(self.data_dir),
            MEMORY_METRICS_PORT="-1",
            MEMORY_LAYER_SERVICE_TOKEN=service_token,
            **settings,
        )
        env.pop("MEMORY_QDRANT_URL", None)
        super().__init__(
            "memory_service", [sys.executable, "-m", "memory_service"], env, log_path=log_path
        )

    def ready(self) -> bool:
        return grpc_serving(self.address)()

    def start(self, timeout: float = 180.0) -> MemoryProcess:
        self.spawn()
        self.wait_ready(self.ready, timeout)
        return self


class ChatProcess(ServiceProcess):
    """`python -m chat_service` on a free port, answering from memory_addr. Without
    CHAT_LLM_* settings it runs in its offline mode."""

    def __init__(
        self,
        memory_addr: str,
        *,
        service_token: str = SERVICE_TOKEN,
        inherit_settings: bool = False,
        log_path: Path | None = None,
        **settings: str,
    ) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        env = service_env(
            inherit_settings=inherit_settings,
            CHAT_HOST="127.0.0.1",
            CHAT_PORT=str(self.port),
            CHAT_MEMORY_ADDR=memory_addr,
            CHAT_METRICS_PORT="-1",
            MEMORY_LAYER_SERVICE_TOKEN=service_token,
            **settings,
        )
        super().__init__(
            "chat_service", [sys.executable, "-m", "chat_service"], env, log_path=log_path
        )

    def ready(self) -> bool:
        return grpc_serving(self.address)()

    def start(self, timeout: float = 180.0) -> ChatProcess:
        self.spawn()
        self.wait_ready(self.ready, timeout)
        return self


class GatewayProcess(ServiceProcess):
    """`python -m gateway` on a free port, in front of memory_addr (and chat_addr), signing
    users in with an HS256 secret. `start()` returns once /readyz answers 200 (and, with a
    chat service, reports it serving)."""

    def __init__(
        self,
        memory_addr: str,
        *,
        jwt_secret: str,
        issuer: str,
        chat_addr: str | None = None,
        service_token: str = SERVICE_TOKEN,
        inherit_settings: bool = False,
        log_path: Path | None = None,
        **settings: str,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.with_chat = chat_addr is not None
        wiring = {"GATEWAY_CHAT_ADDR": chat_addr} if chat_addr is not None else {}
        env = service_env(
            inherit_settings=inherit_settings,
            GATEWAY_HOST="127.0.0.1",
            GATEWAY_PORT=str(self.port),
            GATEWAY_METRICS_PORT="-1",
            GATEWAY_MEMORY_ADDR=memory_addr,
            GATEWAY_SUPABASE_JWT_SECRET=jwt_secret,
            GATEWAY_JWT_ISSUER=issuer,
            MEMORY_LAYER_SERVICE_TOKEN=service_token,
            **wiring,
            **settings,
        )
        super().__init__("gateway", [sys.executable, "-m", "gateway"], env, log_path=log_path)

    def ready(self) -> bool:
        def serving(response: httpx.Response) -> bool:
            return not self.with_chat or response.json().get("chat") == "serving"

        return http_ready(f"{self.url}/readyz", serving)()

    def start(self, timeout: float = 180.0) -> GatewayProcess:
        self.spawn()
        self.wait_ready(self.ready, timeout)
        return self


class ProcessStack:
    """memory_service (embedded store under data_dir), chat_service when `chat` is given (its
    CHAT_* settings; empty: offline mode) and the gateway, each its own process on a free
    loopback port. `start()` spawns all three at once and returns when the gateway reports
    them ready; `stop()` sends each SIGTERM, the gateway first. Logs go to log_dir as
    <module>.log, or to temp files."""

    def __init__(
        self,
        data_dir: Path,
        *,
        jwt_secret: str,
        issuer: str,
        service_token: str = SERVICE_TOKEN,
        chat: dict[str, str] | None = None,
        memory: dict[str, str] | None = None,
        gateway: dict[str, str] | None = None,
        log_dir: Path | None = None,
        inherit_settings: bool = False,
    ) -> None:
        def log(module: str) -> Path | None:
            return None if log_dir is None else log_dir / f"{module}.log"

        common: dict[str, Any] = {
            "service_token": service_token,
            "inherit_settings": inherit_settings,
        }
        self.memory = MemoryProcess(
            data_dir, log_path=log("memory_service"), **common, **(memory or {})
        )
        self.chat = (
            None
            if chat is None
            else ChatProcess(self.memory.address, log_path=log("chat_service"), **common, **chat)
        )
        self.gateway = GatewayProcess(
            self.memory.address,
            jwt_secret=jwt_secret,
            issuer=issuer,
            chat_addr=None if self.chat is None else self.chat.address,
            log_path=log("gateway"),
            **common,
            **(gateway or {}),
        )
        self.url = self.gateway.url
        self.memory_addr = self.memory.address

    @property
    def processes(self) -> dict[str, ServiceProcess]:
        started: list[ServiceProcess] = [self.memory, self.gateway]
        if self.chat is not None:
            started.insert(1, self.chat)
        return {process.name: process for process in started}

    def start(self, timeout: float = 300.0) -> ProcessStack:
        try:
            for process in self.processes.values():
                process.spawn()

            def ready() -> bool:
                for process in self.processes.values():
                    process.check()
                return self.gateway.ready()

            self.gateway.wait_ready(ready, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    async def start_async(self, timeout: float = 300.0) -> ProcessStack:
        """start() on a worker thread, so this event loop keeps serving meanwhile."""
        return await asyncio.to_thread(self.start, timeout)

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            process.close()

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(
            f"--- {name}\n{process.log_tail(lines)}" for name, process in self.processes.items()
        )
