"""Harness of the browser tests: the stack's processes configured for the dashboard, real
tokens, and Chromium pages whose requests and console errors are recorded."""

from __future__ import annotations

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
from tests.support.stack import NO_RATE_LIMITS, GatewayProcess, ProcessStack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HS_SECRET = "browser-tests-hs256-secret-0123456789abcdef"
ISSUER = "memory-layer-local"
# Supabase's anon key is public by design; the page sends it to the auth server.
ANON_KEY = "browser-tests-anon-key"
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO_ROOT / "docs" / "dashboard.png"


def token(
    user: str, *, ttl_seconds: int = 3600, admin: bool = False, email: str | None = None
) -> str:
    return mint_token(
        HS_SECRET, user, issuer=ISSUER, ttl_seconds=ttl_seconds, admin=admin, email=email
    )


SIGN_IN_DIALOG = "Sign in from this link?"


def open_signed_in(page: Page, link: str) -> None:
    """Open a sign-in link the page did not ask for (what `memory-layer open` opens) and, as
    the person would, confirm the account it names."""
    page.goto(link)
    page.get_by_role("dialog", name=SIGN_IN_DIALOG).get_by_role("button", name="Continue").click()


def expired_token(user: str) -> str:
    return mint_token(HS_SECRET, user, issuer=ISSUER, now=time.time() - 7200, ttl_seconds=3600)


def forged_token(user: str) -> str:
    """Well formed and unexpired, signed with a secret the server does not know."""
    now = int(time.time())
    claims = {"sub": user, "aud": "authenticated", "iss": ISSUER, "iat": now, "exp": now + 3600}
    return str(jwt.encode(claims, "not-the-servers-secret-0123456789abcdef", algorithm="HS256"))


def process_stack(data_dir: Path) -> ProcessStack:
    """memory_service and the gateway as processes, signing users in with HS_SECRET."""
    return ProcessStack(
        data_dir,
        jwt_secret=HS_SECRET,
        issuer=ISSUER,
        # One model thread keeps a shared two-core machine usable for the browser.
        memory={"MEMORY_EMBED_THREADS": "1"},
        gateway={"GATEWAY_LOG_LEVEL": "WARNING", **NO_RATE_LIMITS},
    )


def gateway_process(memory_addr: str, **settings: str) -> GatewayProcess:
    """A further gateway on memory_addr; settings are GatewaySettings fields."""
    return GatewayProcess(
        memory_addr,
        jwt_secret=HS_SECRET,
        issuer=ISSUER,
        GATEWAY_LOG_LEVEL="WARNING",
        **NO_RATE_LIMITS,
        **{f"GATEWAY_{k.upper()}": v for k, v in settings.items()},
    )


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
