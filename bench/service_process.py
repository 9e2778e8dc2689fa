"""The test harness's service processes (tests/support/), for benches run as
`python bench/<name>.py`: puts the repo root on sys.path, then re-exports what the benches use,
with memory_service as an async context manager and a token fresh for each run."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402

from memory_service.config import MemorySettings  # noqa: E402
from protos.memory.v1 import memory_pb2_grpc  # noqa: E402
from service_kit.identity import Identity, outgoing_metadata  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.processes import ServiceProcess, http_ready  # noqa: E402
from tests.support.stack import NO_RATE_LIMITS, MemoryProcess, ProcessStack  # noqa: E402

__all__ = [
    "NO_RATE_LIMITS",
    "REPO_ROOT",
    "SERVICE_TOKEN",
    "MemoryServiceProcess",
    "ProcessStack",
    "ServiceProcess",
    "call_metadata",
    "free_port",
    "http_ready",
    "status_lines",
]

# A fresh token per run: the bench owns both ends of every call.
SERVICE_TOKEN = secrets.token_urlsafe(24)


def service_precision() -> str:
    """The embedding precision a memory_service started from this process runs in
    (MEMORY_EMBED_PRECISION, inherited), for the bench's report."""
    return os.environ.get(
        "MEMORY_EMBED_PRECISION", str(MemorySettings.model_fields["embed_precision"].default)
    )


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


class MemoryServiceProcess(MemoryProcess):
    """memory_service in its own process on data_dir; `async with` waits until it is SERVING.

    The child inherits this environment, so MEMORY_* settings (say MEMORY_EMBED_BATCH_WAIT_MS)
    set when running a benchmark apply to the service; address, data dir, token, metrics
    port and log level are set here, and the store is always the embedded one.
    """

    def __init__(self, data_dir: Path, *, startup_timeout: float = 300.0) -> None:
        super().__init__(
            data_dir,
            service_token=SERVICE_TOKEN,
            inherit_settings=True,
            MEMORY_LOG_LEVEL="WARNING",
        )
        self.startup_timeout = startup_timeout

    def memory_status(self) -> dict[str, int]:
        return status_lines(self.pid)

    async def __aenter__(self) -> MemoryServiceProcess:
        self.spawn()
        try:
            await self.wait_ready_async(self.ready, self.startup_timeout)
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and self.process is not None:
            print(f"memory_service log (last lines):\n{self.log_tail(30)}", file=sys.stderr)
        self.close()

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address)

    def stub(self, channel: grpc.aio.Channel) -> memory_pb2_grpc.MemoryServiceStub:
        return memory_pb2_grpc.MemoryServiceStub(channel)
