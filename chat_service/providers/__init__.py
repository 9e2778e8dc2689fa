"""LLM providers: one module per API, all behind the LlmProvider interface. The modules of
HTTP APIs (and httpx with them) load only when a provider of theirs is built."""

from chat_service.providers.interface import LlmProvider, StreamEvent

__all__ = ["LlmProvider", "StreamEvent"]
