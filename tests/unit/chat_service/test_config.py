"""Chat settings: offline by default, complete providers only."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chat_service.config import ChatSettings
from chat_service.providers.registry import PROVIDERS
from service_kit.llm_apis import ALIASES, LLM_APIS, OFFLINE


def test_settings_default_to_offline_and_read_the_shared_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEMORY_LAYER_SERVICE_TOKEN", "shared")
    monkeypatch.setenv("CHAT_LLM_PROVIDER", "")
    settings = ChatSettings()
    assert settings.provider == "offline"
    assert settings.port == 50052
    assert settings.service_token is not None
    assert settings.service_token.get_secret_value() == "shared"


def test_settings_refuse_an_incomplete_provider() -> None:
    with pytest.raises(ValidationError, match="CHAT_LLM_MODEL"):
        ChatSettings(llm_provider="openai")
    with pytest.raises(ValidationError, match="CHAT_LLM_API_KEY"):
        ChatSettings(llm_provider="anthropic", llm_model="claude-x")
    local = ChatSettings(llm_provider="OpenAI", llm_model="llama3", llm_base_url="http://h/v1/")
    assert (local.provider, local.base_url) == ("openai", "http://h/v1")
    assert ChatSettings(llm_provider="anthropic", llm_model="m", llm_api_key="k").base_url == (
        "https://api.anthropic.com"
    )


def test_every_api_the_gateway_forwards_has_an_implementation() -> None:
    assert {*PROVIDERS, OFFLINE} == set(LLM_APIS)
    for alias, api in ALIASES.items():
        assert api in LLM_APIS, alias


def test_an_unknown_provider_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValidationError, match="openai, anthropic, offline"):
        ChatSettings(llm_provider="gemini", llm_model="m")
