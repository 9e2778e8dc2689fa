"""Verify Supabase access tokens and turn them into the caller's identity.

python-jose 3.5.0 is used only through this module, which closes its known gaps: it
accepts a token without `aud`, ignores `kid` when handed a key set, and treats a string
`algorithms` as a substring match. Here the key is picked by `kid` before decoding, the
algorithm list is explicit per key type, and every claim the design requires is checked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from jose import jwk, jws
from jose.backends.base import Key
from jose.exceptions import JOSEError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import metrics
from gateway.api_keys import STATE_KEY, KeyResolver, is_api_key
from gateway.config import GatewaySettings
from gateway.errors import grpc_error_response
from gateway.ratelimit import Decision, RateLimits, too_many_requests
from service_kit.identity import Identity, is_valid_user_id

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 8 * 1024
# A JWK set of a few keys is a few KiB; nothing larger is read.
MAX_JWKS_BYTES = 64 * 1024
# The one body every authentication failure gets, so a caller learns nothing from it.
UNAUTHORIZED_DETAIL = "Invalid or missing credentials"
_SEGMENT = r"[A-Za-z0-9_-]+"
# An empty payload is a well-formed JWS; it fails later as a claim set.
_TOKEN_SHAPE = re.compile(rf"{_SEGMENT}\.[A-Za-z0-9_-]*\.{_SEGMENT}")
# Which JWK key type and curve may sign with which algorithm; nothing else is accepted.
_KEY_TYPES = {"ES256": ("EC", "P-256"), "RS256": ("RSA", None), "HS256": ("oct", None)}
# A key set is public: a symmetric key in it would let anyone who can read it sign tokens.
_ASYMMETRIC = frozenset({"ES256", "RS256"})
_ADMIN_ROLE = "admin"


class AuthError(Exception):
    """The request does not carry a token this gateway accepts."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    algorithm: str
    key: Key


def key_from_jwk(entry: Mapping[str, Any], *, asymmetric_only: bool = True) -> VerificationKey:
    """The verification key a JWK describes, with the one algorithm its type may sign with.

    Raises ValueError for a key meant for anything but verifying signatures, or of a type,
    curve or declared algorithm this gateway does not accept.
    """
    if entry.get("use", "sig") != "sig":
        raise ValueError("key is not for signatures")
    key_ops = entry.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise ValueError("key may not verify")
    for algorithm, (kty, crv) in _KEY_TYPES.items():
        if asymmetric_only and algorithm not in _ASYMMETRIC:
            continue
        if entry.get("kty") != kty or (crv and entry.get("crv") != crv):
            continue
        if entry.get("alg", algorithm) != algorithm:
            raise ValueError(f"a {kty} key may only sign with {algorithm}")
        try:
            return VerificationKey(algorithm, jwk.construct(dict(entry), algorithm))
        except (JOSEError, ValueError, TypeError) as exc:
            raise ValueError("unusable key material") from exc
    raise ValueError("key type not accepted")


def _parse_jwks(document: Any) -> dict[str, VerificationKey]:
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    keys: dict[str, VerificationKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("kid"), str):
            continue
        try:
            keys[entry["kid"]] = key_from_jwk(entry)
        except ValueError as exc:
            log.warning("skipping a key in the JWK set (kid %s): %s", entry["kid"], exc)
    return keys


class JwksCache:
    """The project's signing keys: fetched lazily, cached, refetched once for an unknown kid.

    A token whose kid is known never waits on the key server: a stale set is still served
    while one refresh runs in the background. A fetch that fails keeps the last good set;
    fetches, failed or not, are spaced by the cooldown so a flood of tokens with made-up
    kids cannot flood the key server, and each ends within `fetch_timeout` with at most
    `max_bytes` read, however slowly the server answers.
    """

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient | None = None,
        *,
        max_age: float,
        cooldown: float,
        fetch_timeout: float = 5.0,
        max_bytes: int = MAX_JWKS_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.http = http
        self._owns_http = False
        self.max_age = max_age
        self.cooldown = cooldown
        self.fetch_timeout = fetch_timeout
        self.max_bytes = max_bytes
        self.clock = clock
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._refresh: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open the HTTP client the fetches use (the app's lifespan calls this)."""
        # Imported here: only a gateway that fetches a key set (Supabase) needs an HTTP client.
        import httpx

        if self.http is None:
            self.http = httpx.AsyncClient(timeout=self.fetch_timeout, follow_redirects=False)
            self._owns_http = True

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        if self._owns_http and self.http is not None:
            await self.http.aclose()
            self.http, self._owns_http = None, False

    def _stale(self) -> bool:
        return self._fetched_at is None or self.clock() - self._fetched_at >= self.max_age

    def _may_fetch(self) -> bool:
        return self._attempted_at is None or self.clock() - self._attempted_at >= self.cooldown

    def _refreshing(self) -> asyncio.Task[None] | None:
        """The refresh in flight, or a new one if the cooldown allows it."""
        if self._refresh is not None and not self._refresh.done():
            return self._refresh
        if not self._may_fetch():
            return None
        self._attempted_at = self.clock()
        self._refresh = asyncio.create_task(self._fetch(), name="jwks-refresh")
        return self._refresh

    async def get(self, kid: str) -> VerificationKey | None:
        known = self._keys.get(kid)
        if known is not None:
            if self._stale():
                self._refreshing()
            return known
        refresh = self._refreshing()
        if refresh is not None:
            # Shielded: a caller that gives up must not cancel the fetch others wait on.
            await asyncio.shield(refresh)
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        import httpx

        try:
            async with asyncio.timeout(self.fetch_timeout):
                document = await self._download()
            keys = _parse_jwks(document)
        except (httpx.HTTPError, ValueError, TimeoutError, RuntimeError) as exc:
            metrics.JWKS_FETCHES.labels("error").inc()
            log.warning(
                "JWKS fetch from %s failed (%s); keeping the last good set",
                self.url,
                exc or type(exc).__name__,
            )
            return
        metrics.JWKS_FETCHES.labels("ok").inc()
        self._keys, self._fetched_at = keys, self.clock()

    async def _download(self) -> Any:
        if self.http is None:
            raise RuntimeError("the key set client is not open")
        async with self.http.stream("GET", self.url) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self.max_bytes:
                    raise ValueError(f"key set larger than {self.max_bytes} bytes")
        return json.loads(body)


def _b64_decode(segment: str) -> bytes:
    padded = segment + "=" * (-len(segment) % 4)
    decoded = base64.urlsafe_b64decode(padded)
    # Non-zero unused bits give a second spelling of the same bytes; only one is accepted.
    if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() != segment:
        raise ValueError("not canonical base64url")
    return decoded


def _b64_json(segment: str) -> Any:
    return json.loads(_b64_decode(segment))


def _protected_header(token: str) -> Mapping[str, Any]:
    if len(token.encode()) > MAX_TOKEN_BYTES or not _TOKEN_SHAPE.fullmatch(token):
        raise AuthError("malformed token")
    try:
        header = _b64_json(token.split(".", 1)[0])
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthError("malformed header") from exc
    if not isinstance(header, Mapping):
        raise AuthError("malformed header")
    if "crit" in header:
        # No extension is understood here, so any critical one must fail (RFC 7515 4.1.11).
        raise AuthError("critical header extension not understood")
    return header


def verify_signature(token: str, key: VerificationKey) -> bytes:
    """The payload of a compact JWS whose signature `key` verifies; AuthError otherwise.

    The header's `alg` must be the key's own algorithm: the library, handed a key object,
    would verify with whatever the header names.
    """
    if _protected_header(token).get("alg") != key.algorithm:
        raise AuthError("algorithm does not match the key")
    try:
        for segment in token.split(".")[1:]:
            _b64_decode(segment)
    except ValueError as exc:
        raise AuthError("malformed token") from exc
    try:
        payload = jws.verify(token, key.key, algorithms=[key.algorithm])
    except (JOSEError, ValueError, TypeError, KeyError) as exc:
        raise AuthError("signature rejected") from exc
    if not isinstance(payload, bytes):
        raise AuthError("signature rejected")
    return payload


def bearer_token(authorization: str | None) -> str:
    if not authorization or len(authorization) > MAX_TOKEN_BYTES + 16:
        raise AuthError("no usable Authorization header")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("not a bearer token")
    return token


def _is_number(value: object) -> bool:
    """A finite JSON number: NaN, Infinity and 1e999 (which parses as infinity) would make
    a token that never expires."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class TokenVerifier:
    def __init__(
        self,
        settings: GatewaySettings,
        jwks: JwksCache | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jwks = jwks
        secret = settings.supabase_jwt_secret
        self.hs256_key = (
            VerificationKey("HS256", jwk.construct(secret.get_secret_value(), "HS256"))
            if secret
            else None
        )
        self.issuer = settings.issuer
        self.audience = settings.jwt_audience
        self.leeway = settings.jwt_leeway_seconds
        self.admin_user_ids = frozenset(settings.admin_user_ids)
        self.clock = clock

    async def _key_for(self, header: Mapping[str, Any]) -> VerificationKey:
        algorithm = header.get("alg")
        if algorithm == "HS256" and self.hs256_key is not None:
            return self.hs256_key
        if algorithm in _ASYMMETRIC and self.jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise AuthError("asymmetric token without kid")
            found = await self.jwks.get(kid)
            if found is None or found.algorithm != algorithm:
                raise AuthError("no key for this kid and algorithm")
            return found
        raise AuthError("algorithm not accepted")

    async def verify(self, token: str) -> Identity:
        key = await self._key_for(_protected_header(token))
        payload = verify_signature(token, key)
        try:
            claims = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise AuthError("claims are not JSON") from exc
        if not isinstance(claims, Mapping):
            raise AuthError("claims are not a JSON object")
        self._check_times(claims)
        return self._identity(claims)

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self.clock()
        for claim in ("exp", "iat"):
            if not _is_number(claims.get(claim)):
                raise AuthError(f"{claim} missing or not a number")
        if claims["exp"] + self.leeway <= now:
            raise AuthError("expired")
        if claims["iat"] - self.leeway > now:
            raise AuthError("issued in the future")
        not_before = claims.get("nbf")
        if not_before is not None and (
            not _is_number(not_before) or not_before - self.leeway > now
        ):
            raise AuthError("not yet valid")

    def _identity(self, claims: Mapping[str, Any]) -> Identity:
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.audience not in audiences or claims.get("iss") != self.issuer:
            raise AuthError("wrong audience or issuer")
        subject = claims.get("sub")
        # The subject travels in gRPC metadata: printable ASCII only (Supabase's are UUIDs).
        if not is_valid_user_id(subject):
            raise AuthError("no usable subject")
        assert isinstance(subject, str)
        app_metadata = claims.get("app_metadata")
        role = app_metadata.get("role") if isinstance(app_metadata, Mapping) else None
        return Identity(
            user_id=subject, is_admin=role == _ADMIN_ROLE or subject in self.admin_user_ids
        )


def unauthorized(challenge: str = "Bearer") -> JSONResponse:
    return JSONResponse(
        {"detail": UNAUTHORIZED_DETAIL},
        status_code=401,
        headers={"WWW-Authenticate": challenge},
    )


Challenge = Callable[[Scope], str]


def plain_bearer(scope: Scope) -> str:
    return "Bearer"


@dataclass(frozen=True, slots=True)
class AuthMiddleware:
    """Every path outside `public` (exact) and `public_prefixes` needs a valid token; the
    identity goes into scope state.

    A request without a valid identity counts against its address's budget (a signed-in
    request counts against its user's, later), so a flood from one address without a
    token cannot lock out the signed-in users behind the same proxy. `probes` are neither
    authenticated nor counted. `challenge` gives a refused request's WWW-Authenticate value,
    so a path can point its clients at where to get a token.
    """

    app: ASGIApp
    verifier: TokenVerifier
    public: frozenset[str]
    limits: RateLimits
    probes: frozenset[str]
    challenge: Challenge = plain_bearer
    public_prefixes: tuple[str, ...] = ()
    keys: KeyResolver | None = None

    async def _identify(self, token: str, scope: Scope) -> Identity:
        """A JWT's identity, or an API key's owner (the key's grant kept in scope state)."""
        if self.keys is None or not is_api_key(token):
            return await self.verifier.verify(token)
        grant = await self.keys.resolve(token)
        if grant is None:
            raise AuthError("unknown, revoked or expired API key")
        scope.setdefault("state", {})[STATE_KEY] = grant
        return grant.identity

    async def _lookup_refused(self, token: str, scope: Scope) -> Decision | None:
        """An address already over its budget gets no key looked up for it (a flood of
        made-up keys would otherwise cost memory_service a read each); a key this replica
        remembers costs nothing and is answered as usual."""
        if self.keys is None or not is_api_key(token) or not self.keys.needs_lookup(token):
            return None
        decision = await self.limits.peek(self.limits.per_ip, "ip", self.limits.ip_bucket(scope))
        return None if decision.allowed else decision

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.probes:
            return await self.app(scope, receive, send)
        public = scope["path"] in self.public or scope["path"].startswith(self.public_prefixes)
        if not public:
            try:
                token = bearer_token(Headers(scope=scope).get("authorization"))
                refused = await self._lookup_refused(token, scope)
                if refused is not None:
                    return await too_many_requests(refused)(scope, receive, send)
                identity = await self._identify(token, scope)
            except AuthError as exc:
                metrics.AUTH_FAILURES.inc()
                log.debug("authentication failed: %s", exc)
            except grpc.aio.AioRpcError as exc:
                # memory_service could not say whose the key is: retry, not "wrong key".
                return await grpc_error_response(exc, 1)(scope, receive, send)
            else:
                scope.setdefault("state", {})["identity"] = identity
                return await self.app(scope, receive, send)
        decision = await self.limits.hit(self.limits.per_ip, "ip", self.limits.ip_bucket(scope))
        if not decision.allowed:
            return await too_many_requests(decision)(scope, receive, send)
        if not public:
            return await unauthorized(self.challenge(scope))(scope, receive, send)
        await self.app(scope, receive, send)
