"""Probes and metrics; open to unauthenticated callers."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.deps import Memories, Settings
from gateway.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(memory: Memories, settings: Settings) -> JSONResponse:
    """Whether the downstream services answer their health checks."""
    memory_ok = await memory.serving()
    ready = Readiness(
        status="ready" if memory_ok else "not ready",
        memory="serving" if memory_ok else "unavailable",
        chat="not configured" if settings.chat_addr is None else "not used by this version",
    )
    return JSONResponse(ready.model_dump(), status_code=200 if memory_ok else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
