"""Settings of the chat service, read from CHAT_* environment variables."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from service_kit.identity import Peer
from service_kit.limits import MAX_TOP_K
from service_kit.llm_apis import OFFLINE
from service_kit.settings import ServiceSettings, secret

# "offline" or a name in chat_service.providers.registry.PROVIDERS.
ProviderName = str


class ChatSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CHAT_")

    port: int = 50052
    """gRPC listen port."""
    metrics_port: int = 9102
    """Port of the Prometheus metrics endpoint; 0 picks a free one, -1 turns metrics off."""

    gateway_token: SecretStr | None = None
    """The token the gateway presents here."""
    own_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CHAT_SERVICE_TOKEN")
    )
    """chat_service's own token for memory_service; unset: the shared
    MEMORY_LAYER_SERVICE_TOKEN.
    """

    memory_addr: str = "127.0.0.1:50051"
    """memory_service's gRPC address (host:port)."""
    memory_timeout_seconds: float = Field(default=3.0, gt=0)
    """Memory lookups get at most this long (or the caller's remaining deadline if shorter), so
    a slow memory service leaves time for the answer itself; past it the answer is given
    without memories (context_unavailable).
    """
    default_top_k: int = Field(default=5, ge=1, le=MAX_TOP_K)
    """Memories looked up when a request says top_k: 0."""

    llm_provider: ProviderName | None = None
    """openai (any OpenAI-compatible API: OpenAI, Ollama, vLLM, llama.cpp, LM Studio),
    anthropic, or offline. Unset: offline mode, answers quote the most relevant memories.
    """
    llm_base_url: str | None = None
    """The provider API's base URL; unset: the provider's public API. OpenAI-style URLs include
    /v1 (Ollama: http://localhost:11434/v1).
    """
    llm_api_key: SecretStr | None = None
    """The provider's API key (required by hosted providers)."""
    llm_model: str | None = None
    """The model answers come from; required with a provider."""
    llm_temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature; unset: the provider's default."""
    llm_allowed_models: Annotated[list[str], NoDecode] = []
    """Models a request may ask for by name (comma-separated); unset: CHAT_LLM_MODEL only. Every
    answer is paid with the operator's key, so the choice is the operator's; any other model
    is refused before the provider is called.
    """

    llm_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    """Longest wait to connect to the provider."""
    llm_read_timeout_seconds: float = Field(default=60.0, gt=0)
    """Longest silence tolerated from the provider, between any two bytes of an answer."""
    llm_total_timeout_seconds: float = Field(default=120.0, gt=0)
    """Cap on a whole answer, streamed or not, when the caller's deadline is longer or absent."""
    llm_max_connections: int = Field(default=64, ge=1)
    """Most connections open to the provider at once."""

    context_window_tokens: int = Field(default=8192, ge=256)
    """The model's context window; the prompt plus CHAT_MAX_OUTPUT_TOKENS always fits in it. Set
    it to the model's real size (tokens are estimated on the high side).
    """
    max_output_tokens: int = Field(default=1024, ge=16)
    """Tokens kept for the answer; at most half the context window."""
    context_share: float = Field(default=0.5, gt=0, le=1)
    """Share of the prompt's room (after instructions and question) memories may take; history
    gets the rest.
    """

    @field_validator("llm_provider", "llm_base_url", "llm_model", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `CHAT_LLM_PROVIDER=` in a manifest or .env means "not configured".
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("llm_allowed_models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("llm_provider", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("llm_provider")
    @classmethod
    def _known_provider(cls, value: str | None) -> str | None:
        from chat_service.providers.registry import PROVIDERS

        if value is not None and value != OFFLINE and value not in PROVIDERS:
            names = ", ".join([*PROVIDERS, OFFLINE])
            raise ValueError(f"unknown LLM provider {value[:40]!r}: use one of {names}")
        return value

    @model_validator(mode="after")
    def _provider_is_complete(self) -> ChatSettings:
        from chat_service.providers.registry import PROVIDERS

        provider = self.provider
        if provider != OFFLINE and not self.llm_model:
            raise ValueError(f"CHAT_LLM_MODEL must be set when CHAT_LLM_PROVIDER={provider}")
        spec = PROVIDERS.get(provider)
        if spec is not None and spec.needs_api_key and not self.api_key:
            raise ValueError(f"CHAT_LLM_API_KEY must be set when CHAT_LLM_PROVIDER={provider}")
        if self.max_output_tokens * 2 > self.context_window_tokens:
            raise ValueError("CHAT_MAX_OUTPUT_TOKENS must be at most half of the context window")
        return self

    def caller_tokens(self) -> dict[str, Peer]:
        return {secret(self.gateway_token): Peer("gateway", may_grant_admin=True)}

    def memory_token(self) -> str:
        """The token presented to memory_service: chat_service's own, else the shared one."""
        token = secret(self.own_token) or secret(self.service_token)
        if not token:
            raise RuntimeError("set CHAT_SERVICE_TOKEN or MEMORY_LAYER_SERVICE_TOKEN")
        return token

    @property
    def allowed_models(self) -> frozenset[str]:
        models = set(self.llm_allowed_models)
        if self.llm_model:
            models.add(self.llm_model)
        return frozenset(models)

    @property
    def api_key(self) -> str:
        return self.llm_api_key.get_secret_value() if self.llm_api_key else ""

    @property
    def provider(self) -> ProviderName:
        return self.llm_provider or OFFLINE

    @property
    def base_url(self) -> str:
        from chat_service.providers.registry import PROVIDERS

        spec = PROVIDERS.get(self.provider)
        default = spec.default_base_url if spec is not None else ""
        return (self.llm_base_url or default).rstrip("/")

    @property
    def prompt_budget_tokens(self) -> int:
        """What the prompt may use: the window minus the room kept for the answer."""
        return self.context_window_tokens - self.max_output_tokens
