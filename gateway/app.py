"""The gateway's FastAPI application: middleware, routes, and the clients its lifespan opens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import Depends, FastAPI

from gateway.api_keys import KeyResolver, within_key_scope
from gateway.auth import AuthMiddleware, JwksCache, TokenVerifier
from gateway.clients import ChatClient, MemoryClient
from gateway.config import GatewaySettings
from gateway.cors import OriginListCors
from gateway.dashboard import mount_dashboard
from gateway.docs import DOCS_ASSETS, create_documented_app
from gateway.errors import install_error_handlers
from gateway.mcp_http import (
    MCP_PATH,
    PROTECTED_RESOURCE_PATH,
    McpOriginGuard,
    challenge_for,
    mount_mcp,
)
from gateway.ratelimit import ConcurrencyLimit, RateLimits, UserRateLimitMiddleware
from gateway.request_context import RequestContextMiddleware
from gateway.routes import admin, chat, health, keys, memories, saves, search, well_known
from gateway.routes import limits as stated_limits

PROBES = frozenset({"/healthz", "/readyz"})
PUBLIC_PATHS = PROBES | {
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
    "/app",
    stated_limits.LIMITS_PATH,
    PROTECTED_RESOURCE_PATH,
    PROTECTED_RESOURCE_PATH + MCP_PATH,
}
# The dashboard's files and the docs' scripts; the page signs in once loaded.
PUBLIC_PREFIXES = ("/app/", f"{DOCS_ASSETS}/")
EXPOSED_HEADERS = [
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "X-Request-ID",
]


class State(TypedDict):
    memory: MemoryClient
    # None when GATEWAY_CHAT_ADDR is unset: the chat routes answer 503.
    chat: ChatClient | None


def create_app(settings: GatewaySettings) -> FastAPI:
    assert settings.service_token is not None
    service_token = settings.service_token.get_secret_value()
    jwks = None
    if settings.jwks_url:
        jwks = JwksCache(
            settings.jwks_url,
            max_age=settings.jwks_cache_seconds,
            cooldown=settings.jwks_refetch_cooldown_seconds,
            fetch_timeout=settings.jwks_fetch_timeout_seconds,
        )
    verifier = TokenVerifier(settings, jwks)
    key_resolver = KeyResolver()
    limits = RateLimits(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        if jwks is not None:
            await jwks.open()
        memory = MemoryClient.connect(
            settings.memory_addr, service_token, settings.grpc_timeout_seconds
        )
        key_resolver.memory = memory
        chat_client = None
        if settings.chat_addr:
            chat_client = ChatClient.connect(
                settings.chat_addr, service_token, settings.chat_timeout_seconds
            )
        try:
            async with mcp_endpoint.running():
                yield {"memory": memory, "chat": chat_client}
        finally:
            if chat_client is not None:
                await chat_client.close()
            await memory.close()
            if jwks is not None:
                await jwks.close()

    app = create_documented_app(
        title="Memory Layer",
        summary="Memories of your AI chats: save, search, build context, chat with them.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.verifier = verifier
    app.state.limits = limits
    app.state.exports = ConcurrencyLimit(settings.exports_per_user)
    app.state.key_resolver = key_resolver
    install_error_handlers(app, settings.retry_after_seconds)
    for module in (saves, search, chat, memories, admin, health, well_known, keys, stated_limits):
        app.include_router(module.router, dependencies=[Depends(within_key_scope)])
    mcp_endpoint = mount_mcp(app, settings)
    mount_dashboard(app, settings)

    # add_middleware wraps what is already there, so the last added runs first: CORS, the
    # MCP Origin check, authentication (with the per-address limit for requests without a
    # valid token), per-user limit, request id and body cap.
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        path_body_bytes={saves.BATCH_PATH: settings.max_batch_body_bytes},
    )
    app.add_middleware(UserRateLimitMiddleware, limits=limits, exempt=PUBLIC_PATHS)
    app.add_middleware(
        AuthMiddleware,
        verifier=verifier,
        public=PUBLIC_PATHS,
        limits=limits,
        probes=PROBES,
        challenge=challenge_for(settings),
        public_prefixes=PUBLIC_PREFIXES,
        keys=key_resolver,
    )
    app.add_middleware(McpOriginGuard, settings=settings)
    app.add_middleware(
        OriginListCors,
        allow_origins=settings.cors_origins,
        allow_credentials=False,
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "X-Request-ID",
            "Mcp-Protocol-Version",
        ],
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )
    return app
