from __future__ import annotations

import httpx
from jose import jwt

from gateway.tokens import LOCAL_ISSUER
from memory_layer_cli.mcp_bridge import LOCAL_TOKEN_MARGIN_SECONDS, LOCAL_TOKEN_SECONDS, LocalTokens

SECRET = "unit-test-hs256-secret-0123456789abcdef"


def claims(token: str) -> dict[str, object]:
    return dict(
        jwt.decode(
            token,
            SECRET,
            audience="authenticated",
            issuer=LOCAL_ISSUER,
            options={"verify_exp": False},
        )
    )


def test_local_tokens_are_renewed_before_they_expire() -> None:
    now = [1_000_000.0]
    tokens = LocalTokens(SECRET, "alice", LOCAL_ISSUER, clock=lambda: now[0])
    first = tokens.token()
    assert claims(first)["sub"] == "alice"
    assert claims(first)["exp"] == 1_000_000 + LOCAL_TOKEN_SECONDS

    now[0] += LOCAL_TOKEN_SECONDS - LOCAL_TOKEN_MARGIN_SECONDS - 1
    assert tokens.token() == first
    now[0] += 1
    renewed = tokens.token()
    assert renewed != first
    assert claims(renewed)["exp"] == int(now[0]) + LOCAL_TOKEN_SECONDS


def test_every_request_carries_the_current_token() -> None:
    tokens = LocalTokens(SECRET, "alice", LOCAL_ISSUER)
    request = next(tokens.auth_flow(httpx.Request("POST", "http://127.0.0.1/mcp")))
    assert request.headers["Authorization"] == f"Bearer {tokens.token()}"
