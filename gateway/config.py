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
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", extra="ignore", populate_by_name=True, use_attribute_docstrings=True
    )

    host: str = "0.0.0.0"
    """Address the HTTP server listens on."""
    port: int = 8080
    """HTTP listen port."""
    metrics_port: int = 9100
    """Port of the Prometheus metrics endpoint, never the public API port; 0 picks a free one,
    -1 turns metrics off (off under `memory-layer up` unless set).
    """

    memory_addr: str = "127.0.0.1:50051"
    """memory_service's gRPC address; calls are balanced round-robin over every address the name
    resolves to (e.g. dns:///memory-service:50051).
    """
    chat_addr: str | None = None
    """chat_service's gRPC address. Unset: the gateway serves no chat routes and /readyz says
    chat is not configured (/chat and /chat/stream answer 503).
    """
    service_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("GATEWAY_SERVICE_TOKEN", "MEMORY_LAYER_SERVICE_TOKEN"),
    )
    """The token the gateway presents to the services: its own (GATEWAY_SERVICE_TOKEN,
    deployments), else the shared one (MEMORY_LAYER_SERVICE_TOKEN, local mode).
    """

    supabase_url: str | None = None
    """Supabase project URL: ES256/RS256 tokens are verified against its JWKS
    (<url>/auth/v1/.well-known/jwks.json), issuer <url>/auth/v1. https unless on loopback.
    With it set, `memory-layer up` creates no local secret.
    """
    supabase_anon_key: str | None = None
    """Supabase's public anon key: with GATEWAY_SUPABASE_URL set, the dashboard offers sign-in
    by email link through the project's auth server.
    """
    supabase_jwt_secret: SecretStr | None = None
    """Legacy HS256 secret (Supabase's JWT secret, or the one `memory-layer up` generates); at
    least 32 characters.
    """
    jwt_issuer: str | None = None
    """Expected `iss` claim; unset: `<GATEWAY_SUPABASE_URL>/auth/v1`."""
    jwt_audience: str = "authenticated"
    """Expected `aud` claim."""
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    """Clock skew tolerated on `exp`, `iat` and `nbf`."""
    jwks_cache_seconds: float = Field(default=MAX_JWKS_CACHE_SECONDS, gt=0)
    """How long a fetched key set is used before it is fetched again (at most 600: Supabase keys
    rotate).
    """
    jwks_refetch_cooldown_seconds: float = Field(default=30.0, ge=0)
    """Least time between two refetches caused by a token with an unknown `kid`."""
    jwks_fetch_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    """A key set fetch, however slow the key server, ends within this; at most 64 KiB is read. A
    token whose `kid` is known never waits for a fetch: a stale set is served while one
    refresh runs in the background.
    """
    admin_user_ids: CommaList = []
    """Comma-separated user ids (`sub`) that have the admin role besides tokens whose
    app_metadata.role is admin.
    """

    cors_origins: CommaList = []
    """Comma-separated origins allowed to call the API from a browser, e.g.
    chrome-extension://<id>; '*' is refused. A request to /mcp with any other Origin gets 403
    (in local mode loopback origins are allowed too).
    """
    public_url: str | None = None
    """The URL clients reach this gateway at, e.g. https://memory.example.com; unset: taken from
    each request. MCP clients are sent to <public_url>/.well-known/oauth-protected-resource.
    Set it behind a proxy that terminates TLS.
    """

    redis_url: str | None = None
    """Redis for rate-limit counts shared by replicas; unset: counts live in this process only.
    If Redis does not answer within about a second, counting moves in-process for 5 s at a
    time.
    """
    redis_password: SecretStr | None = None
    """Redis password, kept out of the URL so the URL can sit in a ConfigMap and the password in
    a Secret.
    """
    rate_limit_ip: str = "300/minute"
    """Requests per client address (IPv6: per /64) without a valid token, counted before auth."""
    rate_limit_user: str = "120/minute"
    """Requests per user with a valid token, /mcp included."""
    rate_limit_chat: str = "20/minute"
    """Chat requests per user (/chat, /chat/stream), on top of the user limit."""
    rate_limit_batch_items: str = "20000/minute"
    """Items per user through POST /memories/batch (imports, bulk clients), counted on top of
    the request itself (GATEWAY_RATE_LIMIT_USER): the default takes a 20,000-message history in
    about a minute.
    """
    exports_per_user: int = Field(default=2, ge=1, le=64)
    """GET /export streams one user may have running at once on this replica; the next gets 429
    until one ends.
    """
    trusted_proxies: CommaList = []
    """Comma-separated peers (addresses or CIDR ranges) whose X-Forwarded-For is believed (the
    rightmost untrusted hop is the client); otherwise the socket peer is the client. Without
    it, every client behind an ingress shares one per-address budget.
    """

    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    """Largest request body, except batches; larger ones get 413."""
    max_batch_body_bytes: int = Field(
        default=MAX_BATCH_BODY_BYTES, ge=1024, le=MAX_BATCH_BODY_BYTES
    )
    """Largest POST /memories/batch body; at most what memory_service accepts in one message (4
    MiB).
    """
    batch_timeout_seconds: float = Field(default=120.0, gt=0)
    """Deadline of one batch save: embedding up to 256 texts while other batches queue."""
    grpc_timeout_seconds: float = Field(default=10.0, gt=0)
    """Deadline of every other call to the services (504 when exceeded)."""
    chat_timeout_seconds: float = Field(default=125.0, gt=0)
    """Deadline of a whole chat answer, streamed or not: longer than chat_service's own cap on
    the provider (CHAT_LLM_TOTAL_TIMEOUT_SECONDS), so that cap, with its clearer error,
    normally fires first.
    """
    retry_after_seconds: int = Field(default=2, ge=1)
    """Retry-After sent when a service is unavailable or busy."""
    keepalive_seconds: int = Field(default=65, ge=1)
    """How long an idle HTTP connection stays open; longer than load balancers and clients keep
    theirs (60 s for many), so the closing is left to them.
    """
    log_level: str = "INFO"
    """Logging level (DEBUG, INFO, WARNING, ...)."""

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
