"""What the reliability tests share: HS256 tokens the stack's gateway accepts, its settings,
clients signed in as a user, and memory_service as a process configured for them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from jose import jwt

from gateway.config import GatewaySettings
from tests.support.stack import SERVICE_TOKEN, MemoryProcess

HS_SECRET = "reliability-hs256-secret-0123456789abcdef"
ISSUER = "http://127.0.0.1/auth/v1"


def token(user: str) -> str:
    now = int(time.time())
    claims = {"sub": user, "aud": "authenticated", "iss": ISSUER, "iat": now, "exp": now + 3600}
    return str(jwt.encode(claims, HS_SECRET, algorithm="HS256"))


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user)}"}


def client_for(url: str, user: str | None = None, **kwargs: Any) -> httpx.Client:
    """A client of the gateway at url, signed in as user (anonymous without one)."""
    kwargs.setdefault("timeout", 60.0)
    headers = bearer(user) if user else {}
    return httpx.Client(base_url=url, headers=headers, **kwargs)


def gateway_settings(memory_port: int, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "memory_addr": f"127.0.0.1:{memory_port}",
        "service_token": SERVICE_TOKEN,
        "supabase_jwt_secret": HS_SECRET,
        "jwt_issuer": ISSUER,
        "rate_limit_ip": "1000000/minute",
        "rate_limit_user": "1000000/minute",
        "grpc_timeout_seconds": 20.0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


def memory_process(
    data_dir: Path, *, drain_seconds: float = 10.0, **settings: str
) -> MemoryProcess:
    """memory_service as a process that can be killed and restarted on the same port."""
    return MemoryProcess(
        data_dir,
        MEMORY_LOG_LEVEL="INFO",
        MEMORY_DRAIN_SECONDS=str(drain_seconds),
        # One model thread each keeps a shared two-core machine usable.
        MEMORY_EMBED_THREADS="1",
        **settings,
    )


def export_all(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/export")
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]
