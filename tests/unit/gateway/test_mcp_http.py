from __future__ import annotations

from typing import Any

import pytest

from gateway.config import GatewaySettings
from gateway.mcp_http import origin_allowed, public_base
from gateway.tokens import LOCAL_ISSUER

SECRET = "unit-test-hs256-secret-0123456789abcdef"


def settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "service_token": "service-token",
        "supabase_url": "https://project.supabase.co",
        "cors_origins": ["chrome-extension://abc"],
    }
    values.update(overrides)
    return GatewaySettings(**values)


def local() -> GatewaySettings:
    return settings(supabase_url=None, supabase_jwt_secret=SECRET, jwt_issuer=LOCAL_ISSUER)


def scope(host: str | None, scheme: str = "http") -> dict[str, Any]:
    headers = [(b"host", host.encode())] if host is not None else []
    return {"type": "http", "scheme": scheme, "headers": headers, "server": ("10.0.0.5", 8080)}


@pytest.mark.parametrize(
    ("origin", "allowed_with_supabase", "allowed_locally"),
    [
        ("chrome-extension://abc", True, True),
        ("chrome-extension://abc/", True, True),
        ("chrome-extension://other", False, False),
        ("http://localhost:5173", False, True),
        ("https://127.0.0.1", False, True),
        ("http://[::1]:8080", False, True),
        ("http://localhost.evil.example", False, False),
        ("http://127.0.0.1.evil.example", False, False),
        ("file://localhost", False, False),
        ("http://localhost:notaport", False, False),
        ("null", False, False),
    ],
)
def test_origin_allowed(origin: str, allowed_with_supabase: bool, allowed_locally: bool) -> None:
    assert origin_allowed(origin, settings()) is allowed_with_supabase
    assert origin_allowed(origin, local()) is allowed_locally


def test_local_mode_is_the_local_issuer_without_supabase() -> None:
    assert local().local_mode
    assert not settings().local_mode
    assert not settings(supabase_url=None, supabase_jwt_secret=SECRET, jwt_issuer="x").local_mode


def test_public_base_is_the_setting_else_the_request() -> None:
    assert public_base(settings(public_url="https://m.example.com/"), scope("x")) == (
        "https://m.example.com"
    )
    assert public_base(settings(), scope("memory.example.com", "https")) == (
        "https://memory.example.com"
    )
    assert public_base(settings(), scope("[::1]:8080")) == "http://[::1]:8080"


@pytest.mark.parametrize("host", [None, "", 'evil" error="x', "a b", "host:99999999"])
def test_a_host_header_unfit_for_a_header_value_is_not_echoed(host: str | None) -> None:
    assert public_base(settings(), scope(host)) == "http://10.0.0.5:8080"
