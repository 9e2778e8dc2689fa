"""Rate limits with the `limits` library: signed-in requests count against their user,
everything else against the client's address, and chat routes against a stricter per-user
budget of their own.

Counts live in this process unless GATEWAY_REDIS_URL is set, in which case replicas share
them. A fixed window keyed by the first hit is used: one atomic INCR per request, so two
gateways sharing Redis admit exactly the configured number per window. When Redis cannot
be reached the counting moves into this process for a while rather than stopping.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request
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
TOO_MANY_REQUESTS = "Too many requests, retry later"
# A Redis that does not answer costs a request at most about this long, and only once per
# RETRY_SHARED_SECONDS: in between, counts are kept in process. Generous enough that a
# busy Redis (or a busy gateway opening its first connections) is not taken for a dead one.
SHARED_STORAGE_TIMEOUT_SECONDS = 1.0
RETRY_SHARED_SECONDS = 5.0
WARN_EVERY_SECONDS = 60.0
# One IPv6 subscriber usually holds a whole /64; per address, one client is many buckets.
IPV6_BUCKET_PREFIX = 64
# Where a route's decision waits for the user middleware to put its headers on the answer.
DECISION_KEY = "rate_limit_decision"


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


def build_storage(redis_url: str | None, password: str = "") -> Storage:
    if not redis_url:
        return MemoryStorage()
    scheme, sep, rest = redis_url.partition("://")
    if not sep or scheme not in ("redis", "rediss"):
        raise ValueError("GATEWAY_REDIS_URL must be a redis:// or rediss:// URL")
    uri = f"async+{scheme}://{rest}"
    timeout = SHARED_STORAGE_TIMEOUT_SECONDS
    if password:
        return RedisStorage(
            uri,
            implementation="redispy",
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            password=password,
        )
    return RedisStorage(
        uri, implementation="redispy", socket_timeout=timeout, socket_connect_timeout=timeout
    )


def bucket_for(address: str) -> str:
    """The rate-limit key of a client address: IPv4 as is, IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_BUCKET_PREFIX}", strict=False))
    return str(ip)


class RateLimits:
    def __init__(
        self,
        settings: GatewaySettings,
        storage: Storage | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        password = settings.redis_password.get_secret_value() if settings.redis_password else ""
        self.storage = storage or build_storage(settings.redis_url, password)
        self.limiter = FixedWindowRateLimiter(self.storage)
        self.shared = not isinstance(self.storage, MemoryStorage)
        self.local_limiter = FixedWindowRateLimiter(MemoryStorage())
        self.clock = clock
        self._shared_down_until = -math.inf
        self._warned_at = -math.inf
        self.per_ip = parse(settings.rate_limit_ip)
        self.per_user = parse(settings.rate_limit_user)
        self.per_user_chat = parse(settings.rate_limit_chat)
        self.per_user_batch_items = parse(settings.rate_limit_batch_items)
        self.trusted: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(proxy, strict=False) for proxy in settings.trusted_proxies
        )

    async def _count(
        self,
        limiter: FixedWindowRateLimiter,
        item: RateLimitItem,
        scope: str,
        key: str,
        cost: int = 1,
    ) -> tuple[bool, float, int]:
        async with asyncio.timeout(SHARED_STORAGE_TIMEOUT_SECONDS * 1.5):
            if cost:
                allowed = await limiter.hit(item, scope, key, cost=cost)
            else:
                allowed = await limiter.test(item, scope, key)
            stats = await limiter.get_window_stats(item, scope, key)
        return allowed, stats.reset_time, stats.remaining

    async def peek(self, item: RateLimitItem, scope: str, key: str) -> Decision:
        """Whether the budget has room for one more request, spending none of it."""
        return await self.hit(item, scope, key, cost=0)

    async def hit(self, item: RateLimitItem, scope: str, key: str, cost: int = 1) -> Decision:
        counted = None
        if not self.shared or self.clock() >= self._shared_down_until:
            try:
                counted = await self._count(self.limiter, item, scope, key, cost)
            except Exception as exc:
                if not self.shared:
                    raise
                self._shared_down_until = self.clock() + RETRY_SHARED_SECONDS
                self._warn(exc)
        if counted is None:
            # Limits still hold while Redis is away, per replica instead of shared.
            counted = await self._count(self.local_limiter, item, scope, key, cost)
        allowed, reset_time, remaining = counted
        reset_after = max(1, math.ceil(reset_time - time.time()))
        if not allowed:
            metrics.RATE_LIMITED.labels(scope).inc()
        return Decision(allowed, item.amount, remaining, reset_after)

    def _warn(self, exc: Exception) -> None:
        now = self.clock()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning(
                "rate-limit storage unreachable (%s); counting in this process for now",
                type(exc).__name__,
            )

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def client_ip(self, scope: Scope) -> str:
        """The socket's peer, or, behind a trusted proxy, the rightmost hop no trusted proxy
        added: a client can write anything to the left of what its proxies append."""
        peer = scope["client"][0] if scope.get("client") else "unknown"
        if not self.trusted or not self._is_trusted(peer):
            return peer
        # Proxies may append a header line of their own instead of extending the first.
        lines = Headers(scope=scope).getlist("x-forwarded-for")
        hops = [hop.strip() for line in lines for hop in line.split(",") if hop.strip()]
        closest = peer
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    # Not an address: nothing a trusted proxy wrote; the last one we trust.
                    return closest
            closest = hop
        return closest

    def ip_bucket(self, scope: Scope) -> str:
        return bucket_for(self.client_ip(scope))


class ConcurrencyLimit:
    """At most `limit` of something running at once per key, in this process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running: dict[str, int] = {}

    def try_acquire(self, key: str) -> bool:
        running = self._running.get(key, 0)
        if running >= self.limit:
            return False
        self._running[key] = running + 1
        return True

    def release(self, key: str) -> None:
        running = self._running.pop(key, 0) - 1
        if running > 0:
            self._running[key] = running


def too_many_requests(decision: Decision) -> JSONResponse:
    return JSONResponse({"detail": TOO_MANY_REQUESTS}, status_code=429, headers=decision.headers())


class UserRateLimitMiddleware:
    """Runs after authentication and before anything else looks at the request, so every
    signed-in request counts, whatever its answer (a refused scope, an invalid body); its
    headers go on every answer so clients can pace. Requests without an identity were
    counted by address in the auth middleware. Bulk paths also count their items against a
    budget of their own, in the route."""

    def __init__(self, app: ASGIApp, limits: RateLimits, exempt: frozenset[str]) -> None:
        self.app = app
        self.limits = limits
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        identity = scope.get("state", {}).get("identity")
        if scope["type"] != "http" or scope["path"] in self.exempt or identity is None:
            return await self.app(scope, receive, send)
        decision = await self.limits.hit(self.limits.per_user, "user", identity.user_id)
        if not decision.allowed:
            return await too_many_requests(decision)(scope, receive, send)
        state = scope.setdefault("state", {})
        state[DECISION_KEY] = decision

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A route's own budget (chat) may have replaced the decision meanwhile.
                shown: Decision = state.get(DECISION_KEY, decision)
                headers = [(k.lower().encode(), v.encode()) for k, v in shown.headers().items()]
                existing = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in headers if k not in existing]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def chat_rate_limit(request: Request) -> None:
    """The chat budget, declared by the routes that generate answers (each paid for)."""
    identity = request.scope.get("state", {}).get("identity")
    if identity is None:
        return
    limits: RateLimits = request.app.state.limits
    decision = await limits.hit(limits.per_user_chat, "chat", identity.user_id)
    request.scope.setdefault("state", {})[DECISION_KEY] = decision
    if not decision.allowed:
        raise HTTPException(429, TOO_MANY_REQUESTS, headers=decision.headers())
