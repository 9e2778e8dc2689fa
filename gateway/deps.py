"""Dependencies the routes declare: who is calling, the clients they need, and path ids
checked for what they are. Aliases end in `Dep` so they never read as the domain types.

They are coroutines on purpose: FastAPI runs a plain `def` dependency in a worker thread,
a thread hop per dependency per request for what is a dictionary lookup."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.clients import Caller, ChatClient, MemoryClient
from gateway.config import GatewaySettings
from service_kit.identity import Identity, is_valid_user_id

USER_ID_MISMATCH = "User ID mismatch"
CHAT_NOT_CONFIGURED = "Chat is not configured on this server (GATEWAY_CHAT_ADDR is unset)"
MEMORY_NOT_FOUND = "Memory not found"
INVALID_USER_ID = "must be 1 to 256 printable ASCII characters, without spaces"
# Declared for the OpenAPI document (the Authorize button of /docs, the security
# requirement of every route that needs a token). The auth middleware has already checked
# the token; auto_error=False keeps its one 401 body the only one.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="SupabaseBearer",
    description=(
        "A Supabase access token (or a `memory-layer token` in local mode), or an API key "
        "(`mlk_...`, made with POST /keys) within its scopes. Admin routes and /keys take "
        "session tokens only."
    ),
)


async def current_user(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Identity:
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


async def memory_id(
    memory_id: Annotated[str, Path(description="The memory's id, a UUID")],
) -> str:
    """Memory ids are UUIDs; anything else names no memory. The answer does not repeat
    what was sent, however long or odd it is."""
    try:
        return str(uuid.UUID(memory_id))
    except ValueError:
        raise HTTPException(404, MEMORY_NOT_FOUND) from None


async def path_user_id(
    user_id: Annotated[str, Path(description="A user id (a token's `sub`)")],
) -> str:
    if not is_valid_user_id(user_id):
        # Shaped like every other 422, so the documented schema holds; no input echoed.
        raise RequestValidationError(
            [{"type": "user_id", "loc": ("path", "user_id"), "msg": INVALID_USER_ID}]
        )
    return user_id


def check_user_id(caller: Caller, claimed: str | None) -> None:
    """Older extension builds send user_id in the body; it may only name the caller."""
    if claimed is not None and claimed != caller.identity.user_id:
        raise HTTPException(403, USER_ID_MISMATCH)


CurrentUserDep = Annotated[Identity, Depends(current_user)]
CurrentCallerDep = Annotated[Caller, Depends(current_caller)]
AdminCallerDep = Annotated[Caller, Depends(admin_caller)]
MemoryClientDep = Annotated[MemoryClient, Depends(memory_client)]
ChatClientDep = Annotated[ChatClient, Depends(chat_client)]
SettingsDep = Annotated[GatewaySettings, Depends(settings)]
MemoryIdDep = Annotated[str, Depends(memory_id)]
PathUserIdDep = Annotated[str, Depends(path_user_id)]
