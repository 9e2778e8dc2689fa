"""The local stack: the three services as child processes on loopback, wired together,
started in order, watched until ready and stopped in reverse; none outlives this process,
however it ends (the kernel sends each one SIGTERM when it dies, SIGKILL included).

This process stays up as long as the services do, so it loads the standard library only (no
HTTP client, no TLS): what `up` idles at is the services' memory, not its own."""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from memory_layer_cli.local_auth import LocalAuth
from memory_layer_cli.ports import LOOPBACK

STARTUP_TIMEOUT_SECONDS = 300.0
STOP_TIMEOUT_SECONDS = 15.0
# Set in each service's environment to the pid of the `up` that started it, so that a later
# `up` can tell a leftover of its own (and its siblings) from any other process.
SUPERVISOR_VARIABLE = "MEMORY_LAYER_SUPERVISOR"
SERVICE_MODULES = ("memory_service", "chat_service", "gateway")

_PR_SET_PDEATHSIG = 1


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def private_dir(path: Path) -> Path:
    """A directory only this user may enter: memories, logs and the local secret live here."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def die_with_this_process() -> Callable[[], None] | None:
    """What a child runs between fork and exec so that the kernel sends it SIGTERM (a
    graceful stop) when this process dies, however it dies.

    The kernel sends that signal when the *thread* that forked the child ends, not the
    process: children are forked from the main thread only, which lives as long as the
    process. A parent that died before the child asked for the signal is caught by
    comparing the parent pid after asking. Elsewhere than Linux there is no such signal: None,
    and a killed `up` leaves its services running."""
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("services are started from the main thread only")
    # Loaded here, in the parent: the child between fork and exec only calls it.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def in_child() -> None:
        asked = prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
        if not asked or os.getppid() != parent:
            os._exit(1)

    return in_child


def start_service(name: str, module: str, env: dict[str, str], log_dir: Path) -> Service:
    log_path = log_dir / f"{name}.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as log:
        process = subprocess.Popen(  # noqa: S603 - argv is this interpreter and a module
            [sys.executable, "-m", module],
            env={**env, SUPERVISOR_VARIABLE: str(os.getpid())},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: Ctrl-C reaches only this command, which stops the services in order.
            start_new_session=True,
            # No other thread runs yet: forking from here is safe.
            preexec_fn=die_with_this_process(),
        )
    return Service(name, process, log_path)


def stop_services(services: list[Service]) -> None:
    for service in reversed(services):
        if service.process.poll() is None:
            service.process.send_signal(signal.SIGTERM)
            try:
                service.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()


def stack_ready(port: int) -> bool:
    """The gateway on loopback PORT is ready and sees chat_service serving (readiness alone
    leaves chat out). One HTTP/1.0 request: the gateway answers and closes."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2.0) as sock:
            sock.sendall(f"GET /readyz HTTP/1.0\r\nHost: {LOOPBACK}:{port}\r\n\r\n".encode())
            response = b"".join(iter(lambda: sock.recv(65536), b""))
        head, _, body = response.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)
        return status[1:2] == [b"200"] and json.loads(body).get("chat") == "serving"
    except (OSError, ValueError, AttributeError):
        return False


def wait_until_ready(port: int, services: list[Service]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        for service in services:
            if service.process.poll() is not None:
                raise RuntimeError(
                    f"{service.name} exited with code {service.process.returncode}:\n"
                    f"{service.log_tail()}"
                )
        if stack_ready(port):
            return
        time.sleep(0.25)
    raise RuntimeError(f"the services were not ready within {STARTUP_TIMEOUT_SECONDS:.0f} s")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def interrupt(signum: int, frame: FrameType | None) -> Any:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stack_environment(
    port: int, memory_port: int, chat_port: int, data_dir: Path, auth: LocalAuth | None
) -> dict[str, str]:
    env = dict(os.environ)
    # Everything the user exported reaches the services; only what wires them together
    # (addresses, the store location and the shared token) is set here.
    env.update(
        {
            "MEMORY_HOST": LOOPBACK,
            "MEMORY_PORT": str(memory_port),
            "MEMORY_DATA_DIR": str(data_dir / "memory"),
            "GATEWAY_HOST": LOOPBACK,
            "GATEWAY_PORT": str(port),
            "CHAT_HOST": LOOPBACK,
            "CHAT_PORT": str(chat_port),
            "CHAT_MEMORY_ADDR": f"{LOOPBACK}:{memory_port}",
            "GATEWAY_MEMORY_ADDR": f"{LOOPBACK}:{memory_port}",
            "GATEWAY_CHAT_ADDR": f"{LOOPBACK}:{chat_port}",
            "MEMORY_LAYER_SERVICE_TOKEN": secrets.token_urlsafe(32),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.setdefault("MEMORY_METRICS_PORT", "-1")
    env.setdefault("CHAT_METRICS_PORT", "-1")
    env.setdefault("GATEWAY_METRICS_PORT", "-1")
    if auth is not None:
        env["GATEWAY_SUPABASE_JWT_SECRET"] = auth.jwt_secret
        env["GATEWAY_JWT_ISSUER"] = auth.issuer
    return env
