"""Client addresses for rate limiting."""

from __future__ import annotations

from typing import Any

from gateway.config import GatewaySettings
from gateway.ratelimit import RateLimits, bucket_for

SECRET = "s" * 32


def settings(**values: Any) -> GatewaySettings:
    base: dict[str, Any] = {"service_token": "t", "supabase_jwt_secret": SECRET, "jwt_issuer": "i"}
    return GatewaySettings(**{**base, **values})


def scope(peer: str, forwarded: str | None = None, *more: str) -> dict[str, Any]:
    lines = [forwarded, *more] if forwarded else []
    headers = [(b"x-forwarded-for", line.encode()) for line in lines]
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


def test_every_forwarded_for_line_is_read_and_the_rightmost_untrusted_hop_wins() -> None:
    proxied = RateLimits(settings(trusted_proxies=["10.0.0.0/8"]))
    # A second proxy appended a line of its own; the first line is the client's to forge.
    assert proxied.client_ip(scope("10.1.2.3", "6.6.6.6", "1.2.3.4, 10.0.0.9")) == "1.2.3.4"
    # Only trusted hops: the farthest one is the client.
    assert proxied.client_ip(scope("10.1.2.3", "10.4.4.4, 10.5.5.5")) == "10.4.4.4"
    # Garbage where the proxy's own hop should be: the closest trusted hop is used.
    assert proxied.client_ip(scope("10.1.2.3", "1.2.3.4, not-an-ip")) == "10.1.2.3"


def test_ipv6_clients_share_a_bucket_per_64() -> None:
    assert bucket_for("2001:db8:1:2:aaaa::1") == bucket_for("2001:db8:1:2:ffff::9")
    assert bucket_for("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert bucket_for("2001:db8:1:3::1") != bucket_for("2001:db8:1:2::1")
    assert bucket_for("::ffff:192.0.2.7") == "192.0.2.7"
    assert bucket_for("192.0.2.7") == "192.0.2.7"
