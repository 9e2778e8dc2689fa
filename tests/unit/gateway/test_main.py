"""The gateway process as `python -m gateway` starts it."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import GatewaySettings

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
