"""API docs that work offline: Swagger UI and ReDoc from files shipped in a package."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse
from fastapi_offline import FastAPIOffline

DOCS_ASSETS = "/docs/assets"


def create_documented_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app whose /docs and /redoc load their scripts from this server, not a CDN."""
    app = FastAPIOffline(static_url=DOCS_ASSETS, redoc_url=None, **kwargs)

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        # ReDoc's sidebar always shows its vendor's logo from a CDN; this keeps the browser
        # from asking for it (the logo hides itself when it cannot load).
        page.headers["Content-Security-Policy"] = "img-src 'self' data:"
        return page

    return app
