"""Pieces of the gateway that need no network: settings, context budget, client IP, error map."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import grpc
import pytest
from pydantic import ValidationError

from gateway.config import GatewaySettings
from gateway.context import CHARS_PER_TOKEN, HEADER, build_context
from gateway.conversions import llm_provider
from gateway.errors import HTTP_STATUS, grpc_error
from gateway.ratelimit import RateLimits
from gateway.schemas import ScoredMemory

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


def scored(text: str, score: float = 1.0) -> ScoredMemory:
    return ScoredMemory(
        id="00000000-0000-0000-0000-000000000001",
        user_id="u",
        kind="prompt",
        text=text,
        provider="claude",
        conversation_id="",
        message_id="",
        url="",
        metadata={},
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
        prompt_id="",
        response_id="",
        score=score,
    )


def test_context_keeps_whole_memories_in_rank_order_within_the_budget() -> None:
    results = [scored("a" * 100), scored("b" * 100), scored("c" * 100)]
    context = build_context(results, max_tokens=(len(HEADER) + 2 * 140) // CHARS_PER_TOKEN)
    assert [m.text[0] for m in context.memories] == ["a", "b"]
    assert context.context.startswith(HEADER)
    assert "- [prompt · claude · 2026-01-02] " + "a" * 100 in context.context
    assert len(context.context) <= context.approx_tokens * CHARS_PER_TOKEN


def test_context_shortens_a_first_memory_that_alone_is_over_budget() -> None:
    context = build_context([scored("long " * 400)], max_tokens=50)
    assert len(context.context) <= 50 * CHARS_PER_TOKEN
    assert context.context.endswith("…")
    assert len(context.memories) == 1


def test_context_is_empty_without_memories() -> None:
    context = build_context([], max_tokens=100)
    assert (context.context, context.memories, context.approx_tokens) == ("", [], 0)


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


def test_grpc_codes_map_to_the_documented_statuses() -> None:
    assert {code.name: status for code, status in HTTP_STATUS.items()} == {
        "INVALID_ARGUMENT": 400,
        "OUT_OF_RANGE": 400,
        "NOT_FOUND": 404,
        "ALREADY_EXISTS": 409,
        "PERMISSION_DENIED": 403,
        "UNAUTHENTICATED": 401,
        "RESOURCE_EXHAUSTED": 429,
        "UNAVAILABLE": 503,
        "DEADLINE_EXCEEDED": 504,
    }
    assert grpc.StatusCode.INTERNAL not in HTTP_STATUS


def rpc_error(code: grpc.StatusCode, *trailing: tuple[str, str]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing))


def test_a_429_carries_the_providers_retry_after_when_it_is_usable() -> None:
    def retry_after(code: grpc.StatusCode, *trailing: tuple[str, str]) -> str | None:
        headers = grpc_error(rpc_error(code, *trailing), retry_after=2).headers
        return None if headers is None else headers["Retry-After"]

    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    in_30s = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert retry_after(exhausted, ("retry-after", "17")) == "17"
    assert retry_after(exhausted, ("retry-after", "0.2")) == "1"
    assert 28 <= int(retry_after(exhausted, ("retry-after", in_30s)) or 0) <= 31
    assert retry_after(exhausted, ("retry-after", "99999999")) == "3600"
    assert retry_after(exhausted, ("retry-after", "soon")) == "2"
    assert retry_after(exhausted, ("retry-after", "nan")) == "2"
    assert retry_after(exhausted) == "2"
    # Only a rate limit speaks for the provider's pace; an outage gets the gateway's own.
    assert retry_after(grpc.StatusCode.UNAVAILABLE, ("retry-after", "17")) == "2"
    assert retry_after(grpc.StatusCode.DEADLINE_EXCEEDED) is None


def test_chat_provider_passes_llm_apis_and_leaves_other_sites_to_the_server() -> None:
    assert llm_provider("ChatGPT") == "chatgpt"
    assert llm_provider(" claude ") == "claude"
    assert llm_provider("anthropic") == "anthropic"
    assert llm_provider("none") == "none"
    assert llm_provider("gemini") is None
    assert llm_provider("perplexity") is None
    assert llm_provider(None) is None


def test_gateway_process_serves_on_uvloop_and_keeps_idle_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gateway.__main__ as entry

    seen: dict[str, Any] = {}
    monkeypatch.setattr(entry.uvicorn, "run", lambda app, **options: seen.update(options))
    monkeypatch.setattr(entry, "configure_logging", lambda *args: None)
    monkeypatch.setenv("MEMORY_LAYER_SERVICE_TOKEN", "t")
    monkeypatch.setenv("GATEWAY_SUPABASE_JWT_SECRET", SECRET)
    monkeypatch.setenv("GATEWAY_JWT_ISSUER", "i")
    monkeypatch.setenv("GATEWAY_KEEPALIVE_SECONDS", "90")
    assert entry.main() == 0
    assert seen["timeout_keep_alive"] == 90
    assert (seen["loop"], seen["http"]) == ("uvloop", "httptools")
    monkeypatch.delenv("GATEWAY_KEEPALIVE_SECONDS")
    assert settings().keepalive_seconds == 65
