"""Errors a chat caller is told about; each carries its gRPC status."""

from __future__ import annotations

import logging

import grpc

from service_kit.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    MisconfiguredError,
    ResourceExhaustedError,
    ServiceError,
    UnavailableError,
)


class InvalidChatRequestError(InvalidArgumentError):
    pass


class ProviderError(ServiceError):
    """The LLM provider did not produce an answer."""

    code = grpc.StatusCode.INTERNAL
    public_message: str | None = "internal error"
    log_level: int | None = logging.ERROR


class ProviderRateLimitedError(ProviderError, ResourceExhaustedError):
    """Carries the provider's Retry-After value as sent (seconds or an HTTP date), if any."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    public_message = None
    log_level = logging.WARNING


class ProviderUnavailableError(ProviderError, UnavailableError):
    """5xx, refused connection, broken stream or an answer that cannot be read."""

    code = grpc.StatusCode.UNAVAILABLE
    public_message = None
    log_level = logging.WARNING


class ProviderTimeoutError(ProviderError, DeadlineExceededError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    public_message = None
    log_level = logging.WARNING


class ProviderRejectedError(ProviderError, InvalidArgumentError):
    """The provider refused the request itself (bad model name, oversized prompt, ...).
    Its own words are logged for the operator, not passed to the user: they may describe
    the operator's account."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    public_message = "the LLM provider rejected the request"
    log_level = logging.WARNING


class ProviderAuthError(ProviderError, MisconfiguredError):
    """The provider refused this server's credentials: an operator has to fix them."""

    code = grpc.StatusCode.INTERNAL
    public_message = "the LLM provider is misconfigured"
    log_level = logging.ERROR


class MemoryUnavailableError(UnavailableError):
    """The memory service could not be searched; the chat goes on without memories."""
