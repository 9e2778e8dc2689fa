"""The gateway process as `python -m gateway` starts it."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import GatewaySettings
from tests.support.imports import packages_loaded_by

SECRET = "s" * 32


def settings(**values: Any) -> GatewaySettings:
    base: dict[str, Any] = {"service_token": "t", "supabase_jwt_secret": SECRET, "jwt_issuer": "i"}
    return GatewaySettings(**{**base, **values})


def test_gateway_process_serves_on_uvloop_and_keeps_idle_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gateway.__main__ as entry

    seen: dict[str, Any] = {}
    monkeypatch.setattr(entry.uvicorn, "run", lambda app, **options: seen.update(options))
    monkeypatch.setattr(entry, "configure_logging", lambda *args: None)
    monkeypatch.setattr(entry, "start_metrics", lambda port: seen.update(metrics_port=port))
    monkeypatch.setenv("MEMORY_LAYER_SERVICE_TOKEN", "t")
    monkeypatch.setenv("GATEWAY_SUPABASE_JWT_SECRET", SECRET)
    monkeypatch.setenv("GATEWAY_JWT_ISSUER", "i")
    monkeypatch.setenv("GATEWAY_KEEPALIVE_SECONDS", "90")
    assert entry.main() == 0
    assert seen["timeout_keep_alive"] == 90
    assert (seen["loop"], seen["http"]) == ("uvloop", "httptools")
    # Metrics on their own port, never on the API's.
    assert seen["metrics_port"] == 9100 != seen["port"]
    monkeypatch.delenv("GATEWAY_KEEPALIVE_SECONDS")
    assert settings().keepalive_seconds == 65


# Builds the app as `python -m gateway` does, in local mode, and names the packages loaded.
STARTUP = """
from gateway.app import create_app
from gateway.config import GatewaySettings
create_app(GatewaySettings(service_token="t", supabase_jwt_secret="s" * 32, jwt_issuer="i"))
"""


def test_the_gateway_starts_without_the_mcp_sdk_or_an_http_client() -> None:
    # Both load when first needed (/mcp, a Supabase key set): idle, the gateway holds neither.
    loaded = packages_loaded_by(STARTUP)
    assert {"fastapi", "jose"} <= loaded
    assert loaded & {"mcp", "mcp_types", "httpx"} == set()
