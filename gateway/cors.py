"""CORS for an explicit list of origins (the extension's `chrome-extension://<id>`)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send


class OriginListCors(CORSMiddleware):
    """Starlette's CORS, except that a request from an origin not on the list gets no CORS
    headers at all; Starlette would still answer its preflight with the allowed methods."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = Headers(scope=scope).get("origin")
            if origin is not None and not self.is_allowed_origin(origin):
                return await self.app(scope, receive, send)
        await super().__call__(scope, receive, send)
