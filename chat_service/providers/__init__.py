"""LLM providers: one module per API, all behind the LlmProvider interface."""

from chat_service.providers.base import LlmProvider, StreamEvent

__all__ = ["LlmProvider", "StreamEvent"]
