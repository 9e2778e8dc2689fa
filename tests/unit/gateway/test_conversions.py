"""Request conversions: which provider a chat names."""

from __future__ import annotations

from gateway.conversions import llm_provider


def test_chat_provider_passes_llm_apis_and_leaves_other_sites_to_the_server() -> None:
    assert llm_provider("ChatGPT") == "chatgpt"
    assert llm_provider(" claude ") == "claude"
    assert llm_provider("anthropic") == "anthropic"
    assert llm_provider("none") == "none"
    assert llm_provider("gemini") is None
    assert llm_provider("perplexity") is None
    assert llm_provider(None) is None
