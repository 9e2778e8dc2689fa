"""`/mcp`: the MCP Streamable HTTP endpoint, stateless with JSON answers so any replica can
serve any request, behind the API's own authentication and rate limits.

Also what MCP clients need around it: the 401 challenge that points them at the RFC 9728
metadata document, and the Origin check the transport requires against DNS rebinding.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from fastapi import FastAPI
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import Challenge
from gateway.config import GatewaySettings

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


def mount_mcp(
    app: FastAPI, server: MCPServer, settings: GatewaySettings
) -> StreamableHTTPSessionManager:
    """Serve `server` at /mcp; the returned manager must run inside the app's lifespan."""
    # Without sessions the transport ends one per request, and says so at INFO each time.
    transport_log = logging.getLogger("mcp.server.streamable_http")
    if transport_log.level == logging.NOTSET:
        transport_log.setLevel(logging.WARNING)
    server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        json_response=True,
        max_request_body_size=settings.max_body_bytes,
        # The Origin check is McpOriginGuard's, against the gateway's own settings; the SDK's
        # would also pin the Host header, which behind an ingress is whatever it forwards.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = server.session_manager
    # A Route whose endpoint is an ASGI app passes every method through to it unchanged.
    app.router.routes.append(Route(MCP_PATH, NoEventStream(StreamableHTTPASGIApp(manager))))
    return manager
