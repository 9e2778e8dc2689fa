"""Gateway settings: secrets required, lists and Supabase URLs derived."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config import GatewaySettings
from service_kit.settings import describe_settings_error

SECRET = "s" * 32


def settings(**values: Any) -> GatewaySettings:
    base: dict[str, Any] = {"service_token": "t", "supabase_jwt_secret": SECRET, "jwt_issuer": "i"}
    return GatewaySettings(**{**base, **values})


def test_settings_refuse_to_run_without_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MEMORY_LAYER_SERVICE_TOKEN",
        "GATEWAY_SUPABASE_JWT_SECRET",
        "GATEWAY_SUPABASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match="MEMORY_LAYER_SERVICE_TOKEN"):
        GatewaySettings(supabase_jwt_secret=SECRET, jwt_issuer="i")
    with pytest.raises(ValidationError, match="SUPABASE"):
        GatewaySettings(service_token="t")
    with pytest.raises(ValidationError, match="at least 32"):
        settings(supabase_jwt_secret="short")
    with pytest.raises(ValidationError, match="GATEWAY_JWT_ISSUER"):
        GatewaySettings(service_token="t", supabase_jwt_secret=SECRET)
    with pytest.raises(ValidationError, match="explicitly"):
        settings(cors_origins="*")


def test_settings_read_lists_and_derive_supabase_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_LAYER_SERVICE_TOKEN", "tok")
    monkeypatch.setenv("GATEWAY_SUPABASE_URL", "https://proj.supabase.co/")
    monkeypatch.setenv("GATEWAY_CORS_ORIGINS", "chrome-extension://abc, https://app.example/")
    monkeypatch.setenv("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1")
    monkeypatch.setenv("GATEWAY_JWKS_CACHE_SECONDS", "3600")
    loaded = GatewaySettings()
    assert loaded.cors_origins == ["chrome-extension://abc", "https://app.example"]
    assert loaded.trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]
    assert loaded.issuer == "https://proj.supabase.co/auth/v1"
    assert loaded.jwks_url == "https://proj.supabase.co/auth/v1/.well-known/jwks.json"
    assert loaded.jwks_cache_seconds == 600


@pytest.mark.parametrize(
    "url",
    ["http://proj.supabase.co", "http://10.0.0.5:8000", "ftp://proj.supabase.co", "proj.co"],
)
def test_supabase_url_must_be_https_unless_on_loopback(url: str) -> None:
    with pytest.raises(ValidationError, match="GATEWAY_SUPABASE_URL"):
        settings(supabase_url=url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:54321", "http://localhost:54321", "http://[::1]:80"]
)
def test_a_loopback_supabase_may_use_http(url: str) -> None:
    assert settings(supabase_url=url).jwks_url == f"{url}/auth/v1/.well-known/jwks.json"


def test_settings_errors_name_the_setting_but_never_show_its_value() -> None:
    leaked = "sk-live-do-not-print-0123456789"
    with pytest.raises(ValidationError) as raised:
        settings(supabase_jwt_secret=SECRET, port=leaked, cors_origins=["*", leaked])
    described = describe_settings_error(raised.value)
    assert "port" in described
    assert leaked not in described
    assert leaked in str(raised.value)
