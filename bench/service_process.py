"""Run `python -m memory_service` as a child process on a free loopback port, and talk to it."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.memory.v1 import memory_pb2_grpc
from service_kit.identity import Identity, outgoing_metadata

# A fresh token per run: the bench owns both ends of every call.
SERVICE_TOKEN = secrets.token_urlsafe(24)
REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call_metadata(user_id: str) -> tuple[tuple[str, str], ...]:
    return outgoing_metadata(Identity(user_id), SERVICE_TOKEN)


def status_lines(pid: int) -> dict[str, int]:
    """The kB figures of /proc/<pid>/status (VmRSS, VmHWM, RssAnon, RssFile, ...)."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            figures[key] = int(parts[0])
    return figures


class MemoryServiceProcess:
    """memory_service in its own process on data_dir; `async with` waits until it is SERVING.

    The child inherits this environment, so MEMORY_* settings (say MEMORY_EMBED_BATCH_WAIT_MS)
    set when running a benchmark apply to the service; address, data dir, token, metrics
    port and log level are set here, and the store is always the embedded one.
    """

    def __init__(self, data_dir: Path, *, startup_timeout: float = 300.0) -> None:
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="memory-service-", suffix=".log")  # noqa: SIM115

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("memory_service is not running")
        return self.process.pid

    def memory_status(self) -> dict[str, int]:
        return status_lines(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _spawn(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "memory_service"],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def __aenter__(self) -> MemoryServiceProcess:
        env = dict(
            os.environ,
            MEMORY_PORT=str(self.port),
            MEMORY_HOST="127.0.0.1",
            MEMORY_DATA_DIR=str(self.data_dir),
            MEMORY_METRICS_PORT="-1",
            MEMORY_LAYER_SERVICE_TOKEN=SERVICE_TOKEN,
            MEMORY_LOG_LEVEL="WARNING",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
        )
        # Seeded data dirs and RSS figures are about the embedded store.
        env.pop("MEMORY_QDRANT_URL", None)
        self.process = self._spawn(env)
        try:
            await self._wait_serving()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and self.process is not None:
            print(f"memory_service log (last lines):\n{self.log_tail()}", file=sys.stderr)
        self.stop()

    async def _wait_serving(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"memory_service exited early:\n{self.log_tail()}")
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"memory_service not serving after {self.startup_timeout}s")

    def stop(self) -> None:
        """SIGTERM, then wait for the process to release the data dir."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._log.close()

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address)

    def stub(self, channel: grpc.aio.Channel) -> memory_pb2_grpc.MemoryServiceStub:
        return memory_pb2_grpc.MemoryServiceStub(channel)
