"""The one place errors become HTTP answers: gRPC status codes from the services, and
anything unexpected (logged with the request id, answered with a generic body)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import cast

import grpc
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from gateway import metrics
from service_kit.errors import RETRY_AFTER_KEY

log = logging.getLogger(__name__)

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    # 422 stays FastAPI's own: the body failed its schema, with a list of errors as detail.
    # A well-formed request a service refuses is a 400 with the service's sentence.
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    # What the caller holds forbids it now (e.g. as many API keys as allowed).
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# The caller may see the service's own words for these; they describe the request.
_PASS_DETAIL = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
}
_FIXED_DETAIL = {
    grpc.StatusCode.UNAUTHENTICATED: "The service refused the gateway's credentials",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "Too many requests, retry later",
    grpc.StatusCode.UNAVAILABLE: "Service unavailable, retry later",
    grpc.StatusCode.DEADLINE_EXCEEDED: "The service did not answer in time",
}
INTERNAL_DETAIL = "Internal server error"
# chat_service passes an LLM provider's own Retry-After in this trailing metadata key.

MAX_RETRY_AFTER_SECONDS = 3600


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


@dataclass(frozen=True, slots=True)
class HttpError:
    status: int
    detail: str
    headers: dict[str, str] | None

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, self.status, self.headers)


def upstream_retry_after(exc: grpc.aio.AioRpcError) -> int | None:
    """Whole seconds from the service's `retry-after` (seconds or an HTTP date), if usable."""
    pairs = cast(Iterable[tuple[str, str | bytes]], exc.trailing_metadata() or ())
    value = next((v for k, v in pairs if k == RETRY_AFTER_KEY), None)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(1, math.ceil(seconds)), MAX_RETRY_AFTER_SECONDS)


def grpc_error(exc: grpc.aio.AioRpcError, retry_after: int) -> HttpError:
    code = exc.code()
    metrics.UPSTREAM_ERRORS.labels(code.name).inc()
    status = HTTP_STATUS.get(code)
    if status is None:
        log.error("unexpected gRPC status %s: %s", code.name, exc.details())
        return HttpError(500, INTERNAL_DETAIL, None)
    if code is grpc.StatusCode.UNAUTHENTICATED:
        log.error("a service rejected the gateway's service token: %s", exc.details())
    detail = exc.details() if code in _PASS_DETAIL else _FIXED_DETAIL[code]
    headers = None
    if status in (429, 503):
        # A provider's own estimate beats a fixed guess: retrying sooner only fails again.
        wait = upstream_retry_after(exc) if status == 429 else None
        headers = {"Retry-After": str(wait or retry_after)}
    return HttpError(status, detail or _FIXED_DETAIL.get(code, ""), headers)


def grpc_error_response(exc: grpc.aio.AioRpcError, retry_after: int) -> JSONResponse:
    return grpc_error(exc, retry_after).response()


def install_error_handlers(app: FastAPI, retry_after: int) -> None:
    async def on_grpc_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, grpc.aio.AioRpcError)
        return grpc_error_response(exc, retry_after)

    async def on_invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # FastAPI's own answer without the `input` it would echo: a 50,000-character
        # prompt, or whatever odd bytes a client sent, does not come back.
        errors = [
            {key: value for key, value in error.items() if key not in ("input", "url")}
            for error in exc.errors()
        ]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error (request %s)", request_id(request), exc_info=exc)
        return JSONResponse({"detail": INTERNAL_DETAIL}, status_code=500)

    app.add_exception_handler(RequestValidationError, on_invalid_request)
    app.add_exception_handler(grpc.aio.AioRpcError, on_grpc_error)
    app.add_exception_handler(Exception, on_unexpected)
