"""Dependencies the routes declare: who is calling and the clients they need.

They are coroutines on purpose: FastAPI runs a plain `def` dependency in a worker thread,
a thread hop per dependency per request for what is a dictionary lookup."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from gateway.clients import Caller, ChatClient, MemoryClient
from gateway.config import GatewaySettings
from service_kit.identity import Identity

USER_ID_MISMATCH = "User ID mismatch"
CHAT_NOT_CONFIGURED = "Chat is not configured on this server (GATEWAY_CHAT_ADDR is unset)"


async def current_user(request: Request) -> Identity:
    identity = request.scope.get("state", {}).get("identity")
    if not isinstance(identity, Identity):
        # The auth middleware guards every non-public path; reaching here is a wiring bug.
        raise RuntimeError("route reached without an authenticated identity")
    return identity


async def current_caller(
    request: Request, identity: Annotated[Identity, Depends(current_user)]
) -> Caller:
    return Caller(identity, str(getattr(request.state, "request_id", "")))


async def admin_caller(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    if not caller.identity.is_admin:
        raise HTTPException(403, "Admin role required")
    return caller


async def memory_client(request: Request) -> MemoryClient:
    client: MemoryClient = request.state.memory
    return client


async def chat_client(request: Request) -> ChatClient:
    client: ChatClient | None = request.state.chat
    if client is None:
        raise HTTPException(503, CHAT_NOT_CONFIGURED)
    return client


async def settings(request: Request) -> GatewaySettings:
    value: GatewaySettings = request.app.state.settings
    return value


def check_user_id(caller: Caller, claimed: str | None) -> None:
    """Older extension builds send user_id in the body; it may only name the caller."""
    if claimed is not None and claimed != caller.identity.user_id:
        raise HTTPException(403, USER_ID_MISMATCH)


CurrentUser = Annotated[Identity, Depends(current_user)]
CurrentCaller = Annotated[Caller, Depends(current_caller)]
AdminCaller = Annotated[Caller, Depends(admin_caller)]
Memories = Annotated[MemoryClient, Depends(memory_client)]
Chat = Annotated[ChatClient, Depends(chat_client)]
Settings = Annotated[GatewaySettings, Depends(settings)]
