"""Service processes for tests and benches: `python -m <module>` (or any command) as a child
with its output in a log file, waited on until a probe says it is ready, stopped with SIGTERM
so it drains as in production, killed only when it does not stop in time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_PREFIXES = ("GATEWAY_", "MEMORY_", "CHAT_")


def service_env(*, inherit_settings: bool = False, **variables: str) -> dict[str, str]:
    """This process's environment for a service child: the model from the local cache, never
    the hub; the repo importable; output unbuffered, so a log's tail is current. With
    inherit_settings, GATEWAY_/MEMORY_/CHAT_ variables set here reach the child (a benchmark
    run with MEMORY_... set measures that setting); otherwise the child sees only the
    settings passed in `variables`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if inherit_settings or not k.startswith(SERVICE_PREFIXES)
    }
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
    )
    env.update(variables)
    return env


def health_status(address: str, timeout: float = 2.0) -> int | None:
    """The overall grpc.health.v1 status, or None when nothing answers."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout).status)
        except grpc.RpcError:
            return None


def grpc_serving(address: str) -> Callable[[], bool]:
    """A probe: the gRPC server at address reports SERVING."""
    return lambda: health_status(address, 1.0) == health_pb2.HealthCheckResponse.SERVING


def http_ready(
    url: str, accept: Callable[[httpx.Response], bool] | None = None
) -> Callable[[], bool]:
    """A probe: GET url answers 200 (and, given accept, a response accept takes)."""

    def probe() -> bool:
        try:
            response = httpx.get(url, timeout=2.0)
        except httpx.TransportError:
            return False
        return response.status_code == 200 and (accept is None or accept(response))

    return probe


class ServiceProcess:
    """One child process; `spawn()` starts it, `wait_ready(probe)` blocks until the probe
    holds (failing with the log's tail if the child exits first), `stop()` sends SIGTERM and
    waits. Restartable: spawn() again after a stop or kill runs the same command."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: Mapping[str, str],
        *,
        log_path: Path | None = None,
        new_session: bool = False,
    ) -> None:
        self.name = name
        self.command = command
        self.env = dict(env)
        self.new_session = new_session
        self.process: subprocess.Popen[bytes] | None = None
        self._temp_log: IO[bytes] | None = None
        if log_path is None:
            self._temp_log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log")  # noqa: SIM115
            log_path = Path(self._temp_log.name)
        self.log_path = log_path

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def spawn(self) -> ServiceProcess:
        """Start the process (again, after it stopped); returns at once."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.new_session,
            )
        return self

    def check(self) -> None:
        """Raise, with the log's tail, if the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")

    def wait_ready(self, probe: Callable[[], bool], timeout: float = 180.0) -> ServiceProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if probe():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    async def wait_ready_async(self, probe: Callable[[], bool], timeout: float = 180.0) -> None:
        """wait_ready on a worker thread, so this event loop keeps serving meanwhile."""
        await asyncio.to_thread(self.wait_ready, probe, timeout)

    def terminate(self) -> None:
        """SIGTERM without waiting."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL (to the whole session when it has one), then reap it."""
        if self.process is None:
            return
        if self.new_session:
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, then wait for a graceful exit; SIGKILL if it takes longer than timeout."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def close(self) -> None:
        """Stop, and drop a temporary log."""
        self.stop()
        if self._temp_log is not None:
            self._temp_log.close()
            self._temp_log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
