"""The web dashboard: static files under /app/, served with a Content-Security-Policy that
lets the page load and call nothing but this server (and the Supabase auth server when
sign-in through Supabase is configured)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from gateway.config import GatewaySettings

STATIC_DIR = Path(__file__).parent / "static" / "app"
PREFIX = "/app"


class DashboardConfig(BaseModel):
    """What the page needs before sign-in; the anon key is public by Supabase's design."""

    supabase_url: str | None
    supabase_anon_key: str | None


def content_security_policy(settings: GatewaySettings) -> str:
    connect = ["'self'"]
    if settings.supabase_url and settings.supabase_anon_key:
        connect.append(settings.supabase_url)
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            f"connect-src {' '.join(connect)}",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


class DashboardFiles(StaticFiles):
    def __init__(self, policy: str) -> None:
        super().__init__(directory=STATIC_DIR, html=True)
        self.headers = {
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            # The sign-in link carries the token in the fragment; keep the page out of
            # other sites' frames and its address out of Referer headers.
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            # Always revalidate so an upgraded server never runs an old script.
            "Cache-Control": "no-cache",
        }

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(self.headers)
        return response


def mount_dashboard(app: FastAPI, settings: GatewaySettings) -> None:
    config = DashboardConfig(
        supabase_url=settings.supabase_url if settings.supabase_anon_key else None,
        supabase_anon_key=settings.supabase_anon_key if settings.supabase_url else None,
    )

    @app.get(f"{PREFIX}/config.json", include_in_schema=False)
    async def dashboard_config() -> DashboardConfig:
        return config

    app.mount(PREFIX, DashboardFiles(content_security_policy(settings)), name="dashboard")
