"""The real stack for the reliability tests: memory_service as a child process (so it can be
killed) or in process on a private event loop, and the gateway on uvicorn over loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jose import jwt
from pydantic import SecretStr

from gateway.app import create_app
from gateway.config import GatewaySettings
from memory_service.config import MemorySettings
from memory_service.embedder import Embedder
from memory_service.server import MemoryServer, create_server
from memory_service.torch_encoder import TorchEncoder
from tests.support.ports import free_port

SERVICE_TOKEN = "reliability-service-token"
HS_SECRET = "reliability-hs256-secret-0123456789abcdef"
ISSUER = "http://127.0.0.1/auth/v1"
REPO_ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")


def token(user: str) -> str:
    now = int(time.time())
    claims = {"sub": user, "aud": "authenticated", "iss": ISSUER, "iat": now, "exp": now + 3600}
    return str(jwt.encode(claims, HS_SECRET, algorithm="HS256"))


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user)}"}


def gateway_settings(memory_port: int, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "memory_addr": f"127.0.0.1:{memory_port}",
        "service_token": SERVICE_TOKEN,
        "supabase_jwt_secret": HS_SECRET,
        "jwt_issuer": ISSUER,
        "rate_limit_ip": "1000000/minute",
        "rate_limit_user": "1000000/minute",
        "grpc_timeout_seconds": 20.0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


def health_status(address: str, timeout: float = 2.0) -> int | None:
    """The overall grpc.health.v1 status, or None when nothing answers."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout).status)
        except grpc.RpcError:
            return None


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
    """The gateway app on uvicorn, bound to a free loopback port, on a LoopThread."""

    def __init__(self, loop: LoopThread, settings: GatewaySettings) -> None:
        self.loop = loop
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        self.url = ""
        self._done: asyncio.Future[None] | None = None

    def start(self) -> GatewayServer:
        async def _start() -> None:
            task = asyncio.ensure_future(self.server.serve())
            while not self.server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
            self._done = task

        self.loop.run(_start())
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._done is not None:
            done = self._done

            async def _wait() -> None:
                await done

            self.loop.run(_wait())

    def client(self, user: str | None = None, **kwargs: Any) -> httpx.Client:
        return self.client_for(self.url, user, **kwargs)

    @staticmethod
    def client_for(url: str, user: str | None = None, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 60.0)
        headers = bearer(user) if user else {}
        return httpx.Client(base_url=url, headers=headers, **kwargs)


def start_memory_in_process(
    loop: LoopThread, model: Any, model_name: str, data_dir: Path
) -> tuple[MemoryServer, Embedder]:
    async def _start() -> tuple[MemoryServer, Embedder]:
        embedder = Embedder(TorchEncoder(model, model_name), batch_size=32, max_wait_ms=2.0)
        server = await create_server(
            MemorySettings(
                host="127.0.0.1",
                port=0,
                data_dir=data_dir,
                service_token=SecretStr(SERVICE_TOKEN),
                metrics_port=-1,
            )
        )
        await server.start_serving(embedder)
        return server, embedder

    return loop.run(_start())


def stop_memory_in_process(loop: LoopThread, server: MemoryServer, embedder: Embedder) -> None:
    async def _stop() -> None:
        await server.stop(0)
        await embedder.stop()

    loop.run(_stop())


class MemoryProcess:
    """`python -m memory_service` on a fixed port and data dir, restartable after a kill."""

    def __init__(self, data_dir: Path, *, drain_seconds: float = 10.0, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="memory-service-", suffix=".log")  # noqa: SIM115
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MEMORY_")},
            "MEMORY_HOST": "127.0.0.1",
            "MEMORY_PORT": str(self.port),
            "MEMORY_DATA_DIR": str(data_dir),
            "MEMORY_METRICS_PORT": "-1",
            "MEMORY_LAYER_SERVICE_TOKEN": SERVICE_TOKEN,
            "MEMORY_LOG_LEVEL": "INFO",
            "MEMORY_DRAIN_SECONDS": str(drain_seconds),
            # One model thread each keeps a shared two-core machine usable.
            "MEMORY_TORCH_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            **env,
        }

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 180.0) -> MemoryProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "memory_service"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"memory_service exited:\n{self.log_tail()}")
            if health_status(self.address, 1.0) == health_pb2.HealthCheckResponse.SERVING:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"memory_service not serving after {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def export_all(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/export")
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False
