"""Probes; open to unauthenticated callers. Metrics are served on their own port."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.clients import ChatClient
from gateway.deps import MemoryClientDep
from gateway.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


async def _chat_state(client: ChatClient | None) -> str:
    if client is None:
        return "not configured"
    return "serving" if await client.serving() else "unavailable"


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request, memory: MemoryClientDep) -> JSONResponse:
    """Whether the downstream services answer their health checks. Only the memory service
    decides readiness: with chat down every other route still works, and taking the gateway
    out of rotation for it would take them down too."""
    memory_ok, chat = await asyncio.gather(memory.serving(), _chat_state(request.state.chat))
    ready = Readiness(
        status="ready" if memory_ok else "not ready",
        memory="serving" if memory_ok else "unavailable",
        chat=chat,
    )
    return JSONResponse(ready.model_dump(), status_code=200 if memory_ok else 503)
