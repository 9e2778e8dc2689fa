"""`/mcp`: the MCP Streamable HTTP endpoint, stateless with JSON answers so any replica can
serve any request, behind the API's own authentication and rate limits.

Also what MCP clients need around it: the 401 challenge that points them at the RFC 9728
metadata document, and the Origin check the transport requires against DNS rebinding.

The MCP SDK and the tools load with the first request to /mcp, not at startup: a gateway no
MCP client talks to never holds them (~18 MB resident); the first call waits for them once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio
from anyio.abc import TaskGroup, TaskStatus
from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import Challenge
from gateway.config import GatewaySettings

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

MCP_PATH = "/mcp"
PROTECTED_RESOURCE_PATH = "/.well-known/oauth-protected-resource"
ORIGIN_REFUSED = "Origin not allowed"
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# What a Host header may hold before it is echoed into a header value.
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


def public_base(settings: GatewaySettings, scope: Scope) -> str:
    """The gateway's URL as its clients reach it: GATEWAY_PUBLIC_URL, else this request's."""
    if settings.public_url:
        return settings.public_url
    host = Headers(scope=scope).get("host", "")
    if not _HOST.fullmatch(host):
        server_host, server_port = scope.get("server") or ("127.0.0.1", settings.port)
        host = f"{server_host}:{server_port}"
    return f"{scope.get('scheme', 'http')}://{host}"


def challenge_for(settings: GatewaySettings) -> Challenge:
    def challenge(scope: Scope) -> str:
        if scope["path"] != MCP_PATH:
            return "Bearer"
        metadata = public_base(settings, scope) + PROTECTED_RESOURCE_PATH
        return f'Bearer resource_metadata="{metadata}"'

    return challenge


def origin_allowed(origin: str, settings: GatewaySettings) -> bool:
    if origin.rstrip("/") in settings.cors_origins:
        return True
    if not settings.local_mode:
        return False
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.hostname in _LOOPBACK_HOSTS


class McpOriginGuard:
    """A browser page on another site must not reach /mcp through the user's own gateway
    (DNS rebinding): a request to it whose Origin is not allowed gets 403."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == MCP_PATH:
            origin = Headers(scope=scope).get("origin")
            if origin is not None and not origin_allowed(origin, self.settings):
                response = JSONResponse({"detail": ORIGIN_REFUSED}, status_code=403)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class NoEventStream:
    """Without sessions the server never has anything to push, so there is no event stream to
    GET: the transport would hold one open, for nothing, until the client leaves. The
    transport answers 405 itself, as the spec allows, for every other method but POST."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET":
            response = JSONResponse(
                {"detail": "No event stream: POST each message"},
                status_code=405,
                headers={"Allow": "POST"},
            )
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


class McpEndpoint:
    """/mcp: the tools' server and its session manager, built by the first request, whose
    sessions run in the app's lifespan (`running`) from then until the app stops."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._app: ASGIApp | None = None
        self._lock = anyio.Lock()
        self._sessions: TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as sessions:
            self._sessions = sessions
            try:
                yield
            finally:
                # A session manager runs once: a later lifespan builds its own.
                self._sessions, self._app = None, None
                sessions.cancel_scope.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app or await self._start()
        await app(scope, receive, send)

    async def _start(self) -> ASGIApp:
        async with self._lock:
            if self._app is None:
                if self._sessions is None:
                    raise RuntimeError("/mcp serves only while the app runs (its lifespan)")
                # The import takes a second: off the event loop, other requests go on.
                manager = await anyio.to_thread.run_sync(session_manager, self.settings)
                await self._sessions.start(_run_sessions, manager)
                from mcp.server.streamable_http_manager import StreamableHTTPASGIApp

                self._app = NoEventStream(StreamableHTTPASGIApp(manager))
            return self._app


async def _run_sessions(
    manager: StreamableHTTPSessionManager, *, task_status: TaskStatus[None]
) -> None:
    async with manager.run():
        task_status.started()
        await anyio.sleep_forever()


def session_manager(settings: GatewaySettings) -> StreamableHTTPSessionManager:
    """The tools' MCP server behind a stateless transport that answers in JSON."""
    from mcp.server.transport_security import TransportSecuritySettings

    from gateway.mcp_tools import create_mcp_server

    # Without sessions the transport ends one per request, and says so at INFO each time.
    transport_log = logging.getLogger("mcp.server.streamable_http")
    if transport_log.level == logging.NOTSET:
        transport_log.setLevel(logging.WARNING)
    server = create_mcp_server(settings)
    server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        json_response=True,
        max_request_body_size=settings.max_body_bytes,
        # The Origin check is McpOriginGuard's, against the gateway's own settings; the SDK's
        # would also pin the Host header, which behind an ingress is whatever it forwards.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return server.session_manager


def mount_mcp(app: FastAPI, settings: GatewaySettings) -> McpEndpoint:
    """Serve the MCP tools at /mcp; the returned endpoint must run inside the app's lifespan."""
    endpoint = McpEndpoint(settings)
    # A Route whose endpoint is an ASGI app passes every method through to it unchanged.
    app.router.routes.append(Route(MCP_PATH, endpoint))
    return endpoint
