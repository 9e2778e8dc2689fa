"""Innermost middleware: a request id for logs and the gRPC hop, a cap on body size, and
request latency metrics."""

from __future__ import annotations

import re
import time
import uuid

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from service_kit.identity import current_request_id

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def body_too_large_detail(limit: int) -> str:
    return f"Request body is larger than {limit} bytes"


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, max_body_bytes: int, path_body_bytes: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Paths whose bodies have a cap of their own (bulk saves).
        self.path_body_bytes = path_body_bytes or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        headers = Headers(scope=scope)
        offered = headers.get(REQUEST_ID_HEADER, "")
        request_id = offered if _CLIENT_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        reset = current_request_id.set(request_id)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", []),
                        (REQUEST_ID_HEADER.encode(), request_id.encode()),
                    ],
                }
            await send(message)

        try:
            cap = self.path_body_bytes.get(scope["path"], self.max_body_bytes)
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > cap:
                response = JSONResponse({"detail": body_too_large_detail(cap)}, status_code=413)
                return await response(scope, receive, send_with_id)
            await self.app(scope, self._capped(receive, cap), send_with_id)
        finally:
            route = scope.get("route")
            metrics.REQUEST_SECONDS.labels(
                scope["method"], getattr(route, "path", "unmatched"), str(status)
            ).observe(time.perf_counter() - started)
            current_request_id.reset(reset)

    def _capped(self, receive: Receive, cap: int) -> Receive:
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    # Raised while the route reads the body, so the usual handler answers 413.
                    raise HTTPException(413, body_too_large_detail(cap))
            return message

        return capped_receive
