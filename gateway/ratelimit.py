"""Rate limits with the `limits` library: per client IP before authentication, per user
after it, and a stricter per-user budget for chat.

Counts live in this process unless GATEWAY_REDIS_URL is set, in which case replicas share
them. A fixed window keyed by the first hit is used: one atomic INCR per request, so two
gateways sharing Redis admit exactly the configured number per window.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from gateway.config import GatewaySettings

log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_after)
        return headers


def build_storage(redis_url: str | None) -> Storage:
    if not redis_url:
        return MemoryStorage()
    scheme, sep, rest = redis_url.partition("://")
    if not sep or scheme not in ("redis", "rediss"):
        raise ValueError("GATEWAY_REDIS_URL must be a redis:// or rediss:// URL")
    return RedisStorage(f"async+{scheme}://{rest}", implementation="redispy")


class RateLimits:
    def __init__(self, settings: GatewaySettings, storage: Storage | None = None) -> None:
        self.storage = storage or build_storage(settings.redis_url)
        self.limiter = FixedWindowRateLimiter(self.storage)
        self.per_ip = parse(settings.rate_limit_ip)
        self.per_user = parse(settings.rate_limit_user)
        self.per_user_chat = parse(settings.rate_limit_chat)
        self.trusted: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(proxy, strict=False) for proxy in settings.trusted_proxies
        )

    async def hit(self, item: RateLimitItem, scope: str, key: str) -> Decision:
        try:
            allowed = await self.limiter.hit(item, scope, key)
            stats = await self.limiter.get_window_stats(item, scope, key)
        except Exception:
            # A limiter outage must not take the API down with it; the refusal is logged.
            log.exception("rate limiter storage failed; admitting the request")
            return Decision(True, item.amount, item.amount, item.get_expiry())
        reset_after = max(1, math.ceil(stats.reset_time - time.time()))
        if not allowed:
            metrics.RATE_LIMITED.labels(scope).inc()
        return Decision(allowed, item.amount, stats.remaining, reset_after)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def client_ip(self, scope: Scope) -> str:
        """The socket's peer, or, behind a trusted proxy, the first untrusted forwarded hop."""
        peer = scope["client"][0] if scope.get("client") else "unknown"
        if not self.trusted or not self._is_trusted(peer):
            return peer
        forwarded = Headers(scope=scope).get("x-forwarded-for", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer


def too_many_requests(decision: Decision) -> JSONResponse:
    return JSONResponse(
        {"detail": "Too many requests, retry later"}, status_code=429, headers=decision.headers()
    )


def _exempt(scope: Scope, paths: Iterable[str]) -> bool:
    return scope["type"] != "http" or scope["path"] in paths


class IpRateLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: RateLimits, exempt: frozenset[str]) -> None:
        self.app = app
        self.limits = limits
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _exempt(scope, self.exempt):
            return await self.app(scope, receive, send)
        ip = self.limits.client_ip(scope)
        decision = await self.limits.hit(self.limits.per_ip, "ip", ip)
        if not decision.allowed:
            return await too_many_requests(decision)(scope, receive, send)
        await self.app(scope, receive, send)


class UserRateLimitMiddleware:
    """Runs after authentication; its headers go on every answer so clients can pace."""

    def __init__(self, app: ASGIApp, limits: RateLimits, exempt: frozenset[str]) -> None:
        self.app = app
        self.limits = limits
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        identity = scope.get("state", {}).get("identity")
        if _exempt(scope, self.exempt) or identity is None:
            return await self.app(scope, receive, send)
        decision = await self.limits.hit(self.limits.per_user, "user", identity.user_id)
        if decision.allowed and scope["path"].startswith("/chat"):
            decision = await self.limits.hit(self.limits.per_user_chat, "chat", identity.user_id)
        if not decision.allowed:
            return await too_many_requests(decision)(scope, receive, send)
        extra = [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
