"""API keys at the gateway: minting one, telling one from a JWT, resolving it to its owner
and scopes through memory_service (with a short cache), and checking a route's scope.

A key is `mlk_` and 43 URL-safe characters (32 random bytes). Only its SHA-256 hash leaves
this process. A resolved key, and a key found unknown, is remembered for at most
`CACHE_SECONDS`: that is how long a key revoked through one replica may still work on
another (documented as the revocation bound).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request
from starlette.types import Scope

from gateway.clients import Caller, MemoryClient
from service_kit.api_keys import (
    DISPLAY_PREFIX_CHARS,
    KEY_PREFIX,
    KEY_RANDOM_BYTES,
    READ_SCOPE,
    WRITE_SCOPE,
)
from service_kit.identity import Identity

# A key is remembered this long after memory_service answered for it; the revocation bound.
CACHE_SECONDS = 2.0
# Most keys remembered at once; beyond it the cache starts over (a flood of made-up keys
# costs memory_service lookups only until its address is over the per-address limit: the
# auth middleware checks that budget before any lookup).
MAX_CACHED_KEYS = 10_000
_KEY_CHARS = len(base64.urlsafe_b64encode(bytes(KEY_RANDOM_BYTES)).rstrip(b"="))
_KEY_SHAPE = re.compile(rf"{KEY_PREFIX}[A-Za-z0-9_-]{{{_KEY_CHARS}}}")
# Who the gateway says it is when it asks whose a key is: it knows no user yet, and only a
# caller trusted with the admin role may resolve keys.
_RESOLVER = Caller(Identity(user_id="gateway-key-resolver", is_admin=True), "")
STATE_KEY = "api_key"

# What each user route needs from a key. A route not listed here refuses keys: admin routes,
# /keys, and any route added later until it is given a scope.
ROUTE_SCOPES: dict[tuple[str, str], str] = {
    ("POST", "/search"): READ_SCOPE,
    ("POST", "/context"): READ_SCOPE,
    ("GET", "/memories"): READ_SCOPE,
    ("GET", "/memories/stats"): READ_SCOPE,
    ("GET", "/memories/{memory_id}"): READ_SCOPE,
    ("GET", "/export"): READ_SCOPE,
    ("POST", "/chat"): READ_SCOPE,
    ("POST", "/chat/stream"): READ_SCOPE,
    ("POST", "/save-prompt"): WRITE_SCOPE,
    ("POST", "/save-response"): WRITE_SCOPE,
    ("POST", "/memories/batch"): WRITE_SCOPE,
    ("PATCH", "/memories/{memory_id}"): WRITE_SCOPE,
    ("DELETE", "/memories/{memory_id}"): WRITE_SCOPE,
    ("DELETE", "/memories"): WRITE_SCOPE,
}
# The same for the MCP tools.
TOOL_SCOPES: dict[str, str] = {
    "search_memories": READ_SCOPE,
    "get_context": READ_SCOPE,
    "list_memories": READ_SCOPE,
    "get_memory": READ_SCOPE,
    "save_memory": WRITE_SCOPE,
    "update_memory": WRITE_SCOPE,
    "delete_memory": WRITE_SCOPE,
}
KEYS_REFUSED = "API keys cannot be used here; sign in with a session token"


def missing_scope_detail(scope: str) -> str:
    return f"This API key lacks the '{scope}' scope"


@dataclass(frozen=True, slots=True)
class NewKey:
    key: str
    key_hash: bytes
    prefix: str


def new_key() -> NewKey:
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)
    return NewKey(key, key_digest(key), key[:DISPLAY_PREFIX_CHARS])


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def is_api_key(token: str) -> bool:
    """Whether the bearer token is meant as a key (it may still be a malformed one)."""
    return token.startswith(KEY_PREFIX)


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What a live key lets its holder do, and until when."""

    key_id: str
    identity: Identity
    scopes: frozenset[str]
    expires_at: float | None


class KeyResolver:
    """Resolve keys through memory_service, remembering each answer for `ttl` seconds and
    asking once for concurrent requests with the same key."""

    def __init__(
        self,
        ttl: float = CACHE_SECONDS,
        *,
        max_entries: int = MAX_CACHED_KEYS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self.wall_clock = wall_clock
        # Set by the app's lifespan, once the channel is open.
        self.memory: MemoryClient | None = None
        self._cache: dict[bytes, tuple[float, KeyGrant | None]] = {}
        self._pending: dict[bytes, asyncio.Future[KeyGrant | None]] = {}

    def needs_lookup(self, key: str) -> bool:
        """Whether resolving `key` now would ask memory_service: a well-formed key neither
        remembered nor already being looked up."""
        if not _KEY_SHAPE.fullmatch(key):
            return False
        digest = key_digest(key)
        cached = self._cache.get(digest)
        fresh = cached is not None and cached[0] > self.clock()
        return not fresh and digest not in self._pending

    async def resolve(self, key: str) -> KeyGrant | None:
        """The key's grant; None for a malformed, unknown, revoked or expired key. A failure
        to reach memory_service raises its gRPC error (the caller answers 503)."""
        if not _KEY_SHAPE.fullmatch(key):
            return None
        digest = key_digest(key)
        now = self.clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            grant = cached[1]
        else:
            pending = self._pending.get(digest)
            if pending is None:
                pending = asyncio.ensure_future(self._lookup(digest))
                self._pending[digest] = pending
                pending.add_done_callback(lambda _: self._pending.pop(digest, None))
            # Shielded: one caller giving up must not cancel the lookup others wait on.
            grant = await asyncio.shield(pending)
        if grant is None or grant.expires_at is None or grant.expires_at > self.wall_clock():
            return grant
        return None

    async def _lookup(self, digest: bytes) -> KeyGrant | None:
        if self.memory is None:
            raise RuntimeError("the key resolver has no memory client yet")
        found = await self.memory.resolve_key(_RESOLVER, digest)
        grant = None
        if found is not None:
            grant = KeyGrant(
                key_id=found.id,
                identity=Identity(user_id=found.user_id),
                scopes=frozenset(found.scopes),
                expires_at=None if found.expires_at is None else found.expires_at.timestamp(),
            )
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[digest] = (self.clock() + self.ttl, grant)
        return grant

    def forget(self, *, key_id: str | None = None, user_id: str | None = None) -> None:
        """Drop keys revoked through this replica at once (other replicas wait out the TTL):
        one key by id, or every key of a user."""
        for digest, (_, grant) in list(self._cache.items()):
            if grant is not None and (grant.key_id == key_id or grant.identity.user_id == user_id):
                del self._cache[digest]


def key_grant(scope: Scope) -> KeyGrant | None:
    """The key the request came with; None for a session token."""
    grant = scope.get("state", {}).get(STATE_KEY)
    return grant if isinstance(grant, KeyGrant) else None


def require_scope(scope: Scope, needed: str | None) -> None:
    """403 if the request came with a key that lacks `needed` (None: keys refused)."""
    grant = key_grant(scope)
    if grant is None:
        return
    if needed is None:
        raise HTTPException(403, KEYS_REFUSED)
    if needed not in grant.scopes:
        raise HTTPException(403, missing_scope_detail(needed))


async def within_key_scope(request: Request) -> None:
    """Route dependency: a key reaches a route only with the scope ROUTE_SCOPES names."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    require_scope(request.scope, ROUTE_SCOPES.get((request.method, path)))


async def session_only(request: Request) -> None:
    """Route dependency: the route needs a session token (JWT), never a key."""
    require_scope(request.scope, None)
