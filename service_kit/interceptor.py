"""Server interceptor: checks the service token, sets the caller's identity and request id,
turns ServiceErrors into their status codes and records RPC latency."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from service_kit.errors import RETRY_AFTER_KEY, ServiceError
from service_kit.identity import (
    REQUEST_ID_KEY,
    PeerTokens,
    current_identity,
    current_request_id,
    identity_from_metadata,
)

log = logging.getLogger(__name__)

# Health checks and reflection are open: probes and tools carry no identity.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def status_for(exc: BaseException) -> grpc.StatusCode:
    return exc.code if isinstance(exc, ServiceError) else grpc.StatusCode.INTERNAL


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """`rpc_seconds`: a Histogram labelled (method, code) owned by the service."""

    def __init__(self, peers: PeerTokens, rpc_seconds: Any) -> None:
        self.peers = peers
        self.metric = rpc_seconds

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method  # type: ignore[attr-defined]
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        metadata = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}  # type: ignore[attr-defined]
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, metadata),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method, metadata),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _enter(self, metadata: dict[str, str]) -> None:
        current_request_id.set(metadata.get(REQUEST_ID_KEY) or uuid.uuid4().hex)
        current_identity.set(identity_from_metadata(metadata, self.peers))

    async def _fail(self, context: grpc.aio.ServicerContext, method: str, exc: Exception) -> None:
        if not isinstance(exc, ServiceError):
            log.exception("unexpected error in %s", method, exc_info=exc)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        assert isinstance(exc, ServiceError)
        if exc.log_level is not None:
            log.log(exc.log_level, "%s failed: %s", method, exc)
        trailing: tuple[tuple[str, str], ...] = ()
        if exc.retry_after:
            trailing = ((RETRY_AFTER_KEY, exc.retry_after),)
        await context.abort(exc.code, exc.details, trailing_metadata=trailing)

    @contextlib.asynccontextmanager
    async def _call(
        self, method: str, metadata: dict[str, str], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        """Identity in, a ServiceError out as its status, the latency recorded either way."""
        started = time.perf_counter()
        code = "OK"
        try:
            self._enter(metadata)
            yield
        except grpc.aio.AbortError:
            code = "ABORTED_BY_HANDLER"
            raise
        except Exception as exc:
            code = status_for(exc).name
            await self._fail(context, method, exc)
        finally:
            self.metric.labels(method, code).observe(time.perf_counter() - started)

    def _unary(self, behavior: Any, method: str, metadata: dict[str, str]) -> Any:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._call(method, metadata, context):
                return await behavior(request, context)

        return wrapped

    def _stream(self, behavior: Any, method: str, metadata: dict[str, str]) -> Any:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with self._call(method, metadata, context):
                async for item in behavior(request, context):
                    yield item

        return wrapped
