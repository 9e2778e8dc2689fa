"""Errors a chat caller is told about; the servicer maps each to one gRPC status code."""

from __future__ import annotations


class ChatError(Exception):
    """Base of the errors a caller is told about."""


class InvalidChatRequestError(ChatError):
    pass


class ProviderError(ChatError):
    """The LLM provider did not produce an answer."""


class ProviderRateLimitedError(ProviderError):
    def __init__(self, message: str, retry_after: str | None = None) -> None:
        super().__init__(message)
        # The provider's Retry-After value as sent (seconds or an HTTP date), if any.
        self.retry_after = retry_after


class ProviderUnavailableError(ProviderError):
    """5xx, refused connection, broken stream or an answer that cannot be read."""


class ProviderTimeoutError(ProviderError):
    pass


class ProviderRejectedError(ProviderError):
    """The provider refused the request itself (bad model name, oversized prompt, ...)."""


class ProviderAuthError(ProviderError):
    """The provider refused this server's credentials: an operator has to fix them."""


class MemoryUnavailableError(ChatError):
    """The memory service could not be searched; the chat goes on without memories."""
