"""Local development tokens: HS256 JWTs shaped like Supabase access tokens, signed with the
secret `memory-layer up` generated. They pass the same verification as real ones."""

from __future__ import annotations

import time
from typing import Any

from jose import jwt

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
    return str(jwt.encode(claims, secret, algorithm="HS256"))
