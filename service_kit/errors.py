"""Errors a service tells its caller about. Each knows its gRPC status; the server
interceptor turns any of them into that status, so servicers just raise."""

from __future__ import annotations

import logging

import grpc

# Trailing metadata carrying how long to wait before retrying (seconds or an HTTP date).
RETRY_AFTER_KEY = "retry-after"


class ServiceError(Exception):
    """Base of the errors a caller is told about."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    # What the caller reads; None: the exception's own message.
    public_message: str | None = None
    # Logged by the interceptor at this level; None: the caller's business, not logged.
    log_level: int | None = None

    def __init__(self, message: str = "", retry_after: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def details(self) -> str:
        return self.public_message if self.public_message is not None else str(self)


class InvalidArgumentError(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class PermissionDeniedError(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class UnauthenticatedError(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhaustedError(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(ServiceError):
    """A dependency is away; the caller may retry."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class MisconfiguredError(ServiceError):
    """Only an operator can fix it: logged in full, the caller reads a generic message."""

    code = grpc.StatusCode.INTERNAL
    public_message = "the service is misconfigured"
    log_level = logging.ERROR
