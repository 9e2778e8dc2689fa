"""Local development tokens: what `memory-layer` mints, the gateway accepts as it accepts a
Supabase access token, and a standard JOSE library reads the same claims."""

from __future__ import annotations

import asyncio

import pytest
from jose import jwt

from gateway.auth import AuthError, TokenVerifier
from gateway.config import GatewaySettings
from gateway.tokens import AUDIENCE, LOCAL_ISSUER, mint_token

SECRET = "s€cret-" + "s" * 32
NOW = 1_800_000_000.0


def verifier(secret: str = SECRET) -> TokenVerifier:
    settings = GatewaySettings(
        service_token="t", supabase_jwt_secret=secret, jwt_issuer=LOCAL_ISSUER
    )
    return TokenVerifier(settings, None, clock=lambda: NOW)


def test_a_minted_token_is_accepted_by_the_gateway_with_its_user_and_role() -> None:
    identity = asyncio.run(verifier().verify(mint_token(SECRET, "alice", now=NOW)))
    assert (identity.user_id, identity.is_admin) == ("alice", False)
    admin = asyncio.run(verifier().verify(mint_token(SECRET, "root", admin=True, now=NOW)))
    assert (admin.user_id, admin.is_admin) == ("root", True)


def test_a_minted_token_reads_the_same_in_a_jose_library() -> None:
    token = mint_token(SECRET, "alice", ttl_seconds=600, now=NOW, email="a@example.com")
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(
        token, SECRET, audience=AUDIENCE, issuer=LOCAL_ISSUER, options={"verify_exp": False}
    )
    assert claims == {
        "sub": "alice",
        "aud": AUDIENCE,
        "iss": LOCAL_ISSUER,
        "iat": int(NOW),
        "exp": int(NOW) + 600,
        "role": "authenticated",
        "email": "a@example.com",
    }


def test_a_token_signed_with_another_secret_or_expired_is_refused() -> None:
    with pytest.raises(AuthError):
        asyncio.run(verifier().verify(mint_token("o" * 40, "alice", now=NOW)))
    with pytest.raises(AuthError, match="expired"):
        asyncio.run(verifier().verify(mint_token(SECRET, "alice", ttl_seconds=60, now=NOW - 3600)))
