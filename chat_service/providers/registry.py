"""Every LLM API chat_service can call: a new one is a module plus one line here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from chat_service.providers.anthropic import AnthropicProvider
from chat_service.providers.base import LlmProvider
from chat_service.providers.openai import OpenAIProvider

if TYPE_CHECKING:
    from chat_service.config import ChatSettings


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    # The provider's public API; OpenAI-compatible servers put the version in it (.../v1).
    default_base_url: str
    needs_api_key: bool
    build: Callable[[httpx.AsyncClient, ChatSettings], LlmProvider]


PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            "openai",
            "https://api.openai.com/v1",
            needs_api_key=False,
            build=lambda client, s: OpenAIProvider(
                client, s.base_url, s.api_key or None, s.llm_temperature
            ),
        ),
        ProviderSpec(
            "anthropic",
            "https://api.anthropic.com",
            needs_api_key=True,
            build=lambda client, s: AnthropicProvider(
                client, s.base_url, s.api_key, s.llm_temperature
            ),
        ),
    )
}
