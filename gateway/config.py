"""Settings of the gateway, read from GATEWAY_* environment variables."""

from __future__ import annotations

import ipaddress
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.tokens import LOCAL_ISSUER

# Supabase keys rotate; a cached key set older than this is fetched again.
MAX_JWKS_CACHE_SECONDS = 600.0
MIN_HS256_SECRET_CHARS = 32
# memory_service takes gRPC messages up to 4 MiB; a batch's JSON is no smaller than its proto.
MAX_BATCH_BODY_BYTES = 4 * 1024 * 1024

CommaList = Annotated[list[str], NoDecode]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _split(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", populate_by_name=True)

    host: str = "0.0.0.0"
    port: int = 8080
    # Prometheus metrics on a port of their own, never on the public API port; 0 picks a
    # free one, -1 turns them off.
    metrics_port: int = 9100

    memory_addr: str = "127.0.0.1:50051"
    # Unset: the gateway serves no chat routes and /readyz says chat is not configured.
    chat_addr: str | None = None
    # The gateway's own service token (deployments), else the shared one (local mode).
    service_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("GATEWAY_SERVICE_TOKEN", "MEMORY_LAYER_SERVICE_TOKEN"),
    )

    # Supabase project URL: ES256/RS256 tokens verified against its JWKS.
    supabase_url: str | None = None
    # Supabase's public "anon" key: with supabase_url set, the dashboard offers sign-in by
    # email link through the project's auth server.
    supabase_anon_key: str | None = None
    # Legacy HS256 secret (Supabase's JWT secret, or the one `memory-layer up` generates).
    supabase_jwt_secret: SecretStr | None = None
    # Expected `iss`; unset: `<supabase_url>/auth/v1`.
    jwt_issuer: str | None = None
    jwt_audience: str = "authenticated"
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_cache_seconds: float = Field(default=MAX_JWKS_CACHE_SECONDS, gt=0)
    jwks_refetch_cooldown_seconds: float = Field(default=30.0, ge=0)
    # A key set fetch, however slow the key server, ends within this.
    jwks_fetch_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    admin_user_ids: CommaList = []

    cors_origins: CommaList = []
    # The URL clients reach this gateway at, e.g. https://memory.example.com; unset: taken from
    # each request. MCP clients are sent to <public_url>/.well-known/oauth-protected-resource.
    public_url: str | None = None

    # Unset: counts live in this process only.
    redis_url: str | None = None
    # Kept out of the URL so the URL can sit in a ConfigMap and the password in a Secret.
    redis_password: SecretStr | None = None
    rate_limit_ip: str = "300/minute"
    rate_limit_user: str = "120/minute"
    rate_limit_chat: str = "20/minute"
    # Items per user through POST /memories/batch (imports, bulk clients), counted instead
    # of requests: the default takes a 20,000-message history in about a minute.
    rate_limit_batch_items: str = "20000/minute"
    # Peers whose X-Forwarded-For is believed (addresses or CIDR ranges).
    trusted_proxies: CommaList = []

    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # POST /memories/batch's own cap; at most what memory_service accepts in one message.
    max_batch_body_bytes: int = Field(
        default=MAX_BATCH_BODY_BYTES, ge=1024, le=MAX_BATCH_BODY_BYTES
    )
    # Deadline of one batch save: embedding up to 256 texts while other batches queue.
    batch_timeout_seconds: float = Field(default=120.0, gt=0)
    grpc_timeout_seconds: float = Field(default=10.0, gt=0)
    # Deadline of a whole chat answer, streamed or not: longer than chat_service's own cap
    # on the provider (CHAT_LLM_TOTAL_TIMEOUT_SECONDS, 120 s by default), so that cap, with
    # its clearer error, normally fires first.
    chat_timeout_seconds: float = Field(default=125.0, gt=0)
    retry_after_seconds: int = Field(default=2, ge=1)
    # How long an idle HTTP connection stays open. A client reusing a connection just as
    # the server closes it sees a dropped request; keeping connections longer than load
    # balancers and clients do (60 s for many) leaves the closing to them.
    keepalive_seconds: int = Field(default=65, ge=1)
    log_level: str = "INFO"

    _split_lists = field_validator(
        "admin_user_ids", "cors_origins", "trusted_proxies", mode="before"
    )(_split)

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard(cls, origins: list[str]) -> list[str]:
        if "*" in origins:
            raise ValueError("list the allowed origins explicitly; '*' is not accepted")
        return [origin.rstrip("/") for origin in origins]

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            ipaddress.ip_network(proxy, strict=False)
        return proxies

    @field_validator("supabase_url", "public_url")
    @classmethod
    def _https_unless_loopback(cls, url: str | None) -> str | None:
        if not url:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("GATEWAY_SUPABASE_URL must be an https:// URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            # Keys fetched in the clear could be swapped by anyone on the path.
            raise ValueError("GATEWAY_SUPABASE_URL must use https unless it is on loopback")
        return url.rstrip("/")

    @field_validator("jwks_cache_seconds")
    @classmethod
    def _cap_cache(cls, seconds: float) -> float:
        return min(seconds, MAX_JWKS_CACHE_SECONDS)

    @model_validator(mode="after")
    def _check_secrets(self) -> GatewaySettings:
        if self.service_token is None or not self.service_token.get_secret_value():
            raise ValueError("set GATEWAY_SERVICE_TOKEN or MEMORY_LAYER_SERVICE_TOKEN")
        secret = self.supabase_jwt_secret.get_secret_value() if self.supabase_jwt_secret else ""
        if not self.supabase_url and not secret:
            raise ValueError("set GATEWAY_SUPABASE_URL or GATEWAY_SUPABASE_JWT_SECRET")
        if secret and len(secret) < MIN_HS256_SECRET_CHARS:
            raise ValueError(
                f"GATEWAY_SUPABASE_JWT_SECRET must be at least {MIN_HS256_SECRET_CHARS} characters"
            )
        if not self.issuer:
            raise ValueError("set GATEWAY_JWT_ISSUER when GATEWAY_SUPABASE_URL is unset")
        return self

    @property
    def issuer(self) -> str:
        if self.jwt_issuer:
            return self.jwt_issuer
        return f"{self.supabase_url}/auth/v1" if self.supabase_url else ""

    @property
    def local_mode(self) -> bool:
        """Tokens come from `memory-layer up`'s own secret, not a Supabase project."""
        return not self.supabase_url and self.issuer == LOCAL_ISSUER

    @property
    def jwks_url(self) -> str | None:
        if not self.supabase_url:
            return None
        return f"{self.supabase_url}/auth/v1/.well-known/jwks.json"
