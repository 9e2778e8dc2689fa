"""Local development tokens: HS256 JWTs shaped like Supabase access tokens, signed with the
secret `memory-layer up` generated. They pass the same verification as real ones.

Signed with the standard library alone (HS256 is an HMAC over two JSON documents): the CLI that
mints them, `up` included, then loads no JOSE or cryptography library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

LOCAL_ISSUER = "memory-layer-local"
AUDIENCE = "authenticated"


def mint_token(
    secret: str,
    user_id: str,
    *,
    issuer: str = LOCAL_ISSUER,
    ttl_seconds: int = 24 * 3600,
    admin: bool = False,
    now: float | None = None,
    email: str | None = None,
) -> str:
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "aud": AUDIENCE,
        "iss": issuer,
        "iat": issued,
        "exp": issued + ttl_seconds,
        "role": "authenticated",
    }
    if admin:
        claims["app_metadata"] = {"role": "admin"}
    if email:
        claims["email"] = email
    return _hs256_jws(claims, secret)


def _base64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _hs256_jws(claims: dict[str, Any], secret: str) -> str:
    """The compact serialization of a JWS (RFC 7515) signed with HMAC-SHA256."""
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = ".".join(
        _base64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_base64url(signature)}"
