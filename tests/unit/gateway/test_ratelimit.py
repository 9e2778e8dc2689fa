"""Client addresses for rate limiting."""

from __future__ import annotations

from typing import Any

from gateway.config import GatewaySettings
from gateway.ratelimit import RateLimits

SECRET = "s" * 32


def settings(**values: Any) -> GatewaySettings:
    base: dict[str, Any] = {"service_token": "t", "supabase_jwt_secret": SECRET, "jwt_issuer": "i"}
    return GatewaySettings(**{**base, **values})


def scope(peer: str, forwarded: str | None = None) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"type": "http", "client": (peer, 5000), "headers": headers}


def test_client_ip_trusts_forwarded_for_only_from_configured_proxies() -> None:
    direct = RateLimits(settings())
    assert direct.client_ip(scope("198.51.100.7", "1.2.3.4")) == "198.51.100.7"

    proxied = RateLimits(settings(trusted_proxies=["10.0.0.0/8"]))
    assert proxied.client_ip(scope("10.1.2.3", "1.2.3.4")) == "1.2.3.4"
    # The client may prepend anything; only the hop the proxy appended is believed.
    assert proxied.client_ip(scope("10.1.2.3", "6.6.6.6, 1.2.3.4, 10.9.9.9")) == "1.2.3.4"
    assert proxied.client_ip(scope("10.1.2.3")) == "10.1.2.3"
    assert proxied.client_ip(scope("198.51.100.7", "1.2.3.4")) == "198.51.100.7"
