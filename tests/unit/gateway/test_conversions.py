"""Request conversions: which provider a chat names, and the time zone a search is asked in."""

from __future__ import annotations

from gateway import schemas
from gateway.conversions import chat_to_pb, llm_provider, query_to_pb


def test_chat_provider_passes_llm_apis_and_leaves_other_sites_to_the_server() -> None:
    assert llm_provider("ChatGPT") == "chatgpt"
    assert llm_provider(" claude ") == "claude"
    assert llm_provider("anthropic") == "anthropic"
    assert llm_provider("none") == "none"
    assert llm_provider("gemini") is None
    assert llm_provider("perplexity") is None
    assert llm_provider(None) is None


def test_the_time_zone_asked_in_goes_to_the_search_and_none_means_utc() -> None:
    berlin = {"time_zone": "Europe/Berlin"}
    assert query_to_pb(schemas.SearchQuery(query="q", **berlin)).time_zone == "Europe/Berlin"
    assert query_to_pb(schemas.ContextQuery(prompt="q", **berlin)).time_zone == "Europe/Berlin"
    assert chat_to_pb(schemas.ChatQuery(message="q", **berlin)).time_zone == "Europe/Berlin"
    assert query_to_pb(schemas.ContextQuery(prompt="q")).time_zone == ""
    assert chat_to_pb(schemas.ChatQuery(message="q")).time_zone == ""
