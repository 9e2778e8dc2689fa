"""Every LLM API chat_service can call: a new one is a module plus one line here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chat_service.providers.interface import LlmProvider

if TYPE_CHECKING:
    import httpx

    from chat_service.config import ChatSettings


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    # The provider's public API; OpenAI-compatible servers put the version in it (.../v1).
    default_base_url: str
    needs_api_key: bool
    build: Callable[[httpx.AsyncClient, ChatSettings], LlmProvider]


# Each API's module (and httpx) is imported when its provider is built: the settings read
# this registry in every service, offline ones included.
def _openai(client: httpx.AsyncClient, settings: ChatSettings) -> LlmProvider:
    from chat_service.providers.openai import OpenAIProvider

    return OpenAIProvider(
        client, settings.base_url, settings.api_key or None, settings.llm_temperature
    )


def _anthropic(client: httpx.AsyncClient, settings: ChatSettings) -> LlmProvider:
    from chat_service.providers.anthropic import AnthropicProvider

    return AnthropicProvider(client, settings.base_url, settings.api_key, settings.llm_temperature)


PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            "openai",
            "https://api.openai.com/v1",
            needs_api_key=False,
            build=_openai,
        ),
        ProviderSpec(
            "anthropic",
            "https://api.anthropic.com",
            needs_api_key=True,
            build=_anthropic,
        ),
    )
}
