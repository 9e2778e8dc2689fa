"""Harness of the browser tests: memory_service and the gateway as processes on loopback,
real tokens, and Chromium pages whose requests and console errors are recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from jose import jwt
from playwright.sync_api import Browser, ConsoleMessage, Page, Request

from gateway.tokens import mint_token
from tests.support.ports import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVICE_TOKEN = "browser-tests-service-token"
HS_SECRET = "browser-tests-hs256-secret-0123456789abcdef"
ISSUER = "memory-layer-local"
# Supabase's anon key is public by design; the page sends it to the auth server.
ANON_KEY = "browser-tests-anon-key"
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO_ROOT / "docs" / "dashboard.png"


def token(user: str, *, ttl_seconds: int = 3600, admin: bool = False) -> str:
    return mint_token(HS_SECRET, user, issuer=ISSUER, ttl_seconds=ttl_seconds, admin=admin)


def expired_token(user: str) -> str:
    return mint_token(HS_SECRET, user, issuer=ISSUER, now=time.time() - 7200, ttl_seconds=3600)


def forged_token(user: str) -> str:
    """Well formed and unexpired, signed with a secret the server does not know."""
    now = int(time.time())
    claims = {"sub": user, "aud": "authenticated", "iss": ISSUER, "iat": now, "exp": now + 3600}
    return str(jwt.encode(claims, "not-the-servers-secret-0123456789abcdef", algorithm="HS256"))


class Process:
    def __init__(self, name: str, module: str, env: dict[str, str]) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def check(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


def base_env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "MEMORY_", "CHAT_"))
    }
    env.update(
        {
            "MEMORY_LAYER_SERVICE_TOKEN": SERVICE_TOKEN,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        }
    )
    return env


def start_gateway(memory_addr: str, **settings: str) -> tuple[Process, str]:
    port = free_port()
    env = base_env()
    env.update(
        {
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_MEMORY_ADDR": memory_addr,
            "GATEWAY_SUPABASE_JWT_SECRET": HS_SECRET,
            "GATEWAY_JWT_ISSUER": ISSUER,
            "GATEWAY_RATE_LIMIT_IP": "100000/minute",
            "GATEWAY_RATE_LIMIT_USER": "100000/minute",
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_METRICS_PORT": "-1",
            **{f"GATEWAY_{k.upper()}": v for k, v in settings.items()},
        }
    )
    gateway = Process("gateway", "gateway", env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        gateway.check()
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return gateway, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    gateway.stop()
    raise RuntimeError(f"gateway not ready:\n{gateway.log_tail()}")


@dataclass
class Stack:
    url: str
    memory_addr: str

    def client(self, user: str, *, admin: bool = False) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token(user, admin=admin)}"},
            timeout=60.0,
        )

    def sign_in_url(self, user: str, *, admin: bool = False) -> str:
        return f"{self.url}/app/#access_token={token(user, admin=admin)}"


@dataclass
class Watched:
    """A page whose every request and console error is recorded; requests that would leave
    the server's origin are recorded and refused. One the page's own Content-Security-Policy
    stopped in the browser never left it, and is kept apart."""

    page: Page
    origins: set[str]
    foreign: list[str] = field(default_factory=list)
    stopped_by_policy: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.foreign == [], f"requests left the server's origin: {self.foreign}"
        assert self.console_errors == [], f"console errors: {self.console_errors}"


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@contextmanager
def watch(browser: Browser, stack_url: str, **context_options: Any) -> Iterator[Watched]:
    context = browser.new_context(accept_downloads=True, **context_options)
    page = context.new_page()
    watched = Watched(page, {origin(stack_url)})

    def on_request(request: Request) -> None:
        if request.url.startswith(("data:", "blob:")):
            return
        if origin(request.url) not in watched.origins:
            watched.foreign.append(request.url)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.console_errors.append(message.text)

    def on_failed(request: Request) -> None:
        if request.failure == "csp" and request.url in watched.foreign:
            watched.foreign.remove(request.url)
            watched.stopped_by_policy.append(request.url)

    page.on("request", on_request)
    page.on("requestfailed", on_failed)
    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.console_errors.append(str(error)))
    # Nothing may reach the network beyond this server, even if the page tried.
    context.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(("data:", "blob:"))
            or origin(route.request.url) in watched.origins
            else route.abort()
        ),
    )
    try:
        yield watched
    finally:
        context.close()


def start_memory(port: int, data_dir: Path) -> Process:
    env = base_env()
    env.update(
        {
            "MEMORY_HOST": "127.0.0.1",
            "MEMORY_PORT": str(port),
            "MEMORY_DATA_DIR": str(data_dir),
            "MEMORY_METRICS_PORT": "-1",
            # One model thread keeps a shared two-core machine usable for the browser.
            "MEMORY_TORCH_THREADS": "1",
        }
    )
    return Process("memory-service", "memory_service", env)
