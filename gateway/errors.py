"""The one place errors become HTTP answers: gRPC status codes from the services, and
anything unexpected (logged with the request id, answered with a generic body)."""

from __future__ import annotations

import logging

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway import metrics

log = logging.getLogger(__name__)

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.OUT_OF_RANGE: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
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
    grpc.StatusCode.PERMISSION_DENIED,
}
_FIXED_DETAIL = {
    grpc.StatusCode.UNAUTHENTICATED: "The service refused the gateway's credentials",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "Too many requests, retry later",
    grpc.StatusCode.UNAVAILABLE: "Service unavailable, retry later",
    grpc.StatusCode.DEADLINE_EXCEEDED: "The service did not answer in time",
}
INTERNAL_DETAIL = "Internal server error"


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def grpc_error_response(exc: grpc.aio.AioRpcError, retry_after: int) -> JSONResponse:
    code = exc.code()
    metrics.UPSTREAM_ERRORS.labels(code.name).inc()
    status = HTTP_STATUS.get(code)
    if status is None:
        log.error("unexpected gRPC status %s: %s", code.name, exc.details())
        return JSONResponse({"detail": INTERNAL_DETAIL}, status_code=500)
    if code is grpc.StatusCode.UNAUTHENTICATED:
        log.error("a service rejected the gateway's service token: %s", exc.details())
    detail = exc.details() if code in _PASS_DETAIL else _FIXED_DETAIL[code]
    headers = {"Retry-After": str(retry_after)} if status in (429, 503) else None
    return JSONResponse({"detail": detail or _FIXED_DETAIL.get(code, "")}, status, headers)


def install_error_handlers(app: FastAPI, retry_after: int) -> None:
    async def on_grpc_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, grpc.aio.AioRpcError)
        return grpc_error_response(exc, retry_after)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error (request %s)", request_id(request), exc_info=exc)
        return JSONResponse({"detail": INTERNAL_DETAIL}, status_code=500)

    app.add_exception_handler(grpc.aio.AioRpcError, on_grpc_error)
    app.add_exception_handler(Exception, on_unexpected)
