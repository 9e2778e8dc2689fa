"""RFC 9728 metadata: which authorization server issues the tokens this gateway accepts, so
MCP clients can sign the user in; open to unauthenticated callers."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gateway.deps import SettingsDep
from gateway.mcp_http import MCP_PATH, PROTECTED_RESOURCE_PATH, public_base
from gateway.schemas import ProtectedResource

router = APIRouter(tags=["mcp"])


def _metadata(resource: str, settings: SettingsDep, base: str) -> ProtectedResource:
    return ProtectedResource(
        resource=resource,
        authorization_servers=[settings.issuer],
        bearer_methods_supported=["header"],
        resource_name="Memory Layer",
        resource_documentation=f"{base}/docs",
    )


@router.get(PROTECTED_RESOURCE_PATH, response_model=ProtectedResource)
async def protected_resource(request: Request, settings: SettingsDep) -> ProtectedResource:
    """The gateway as a whole: one token serves the API and /mcp."""
    base = public_base(settings, request.scope)
    return _metadata(base, settings, base)


@router.get(PROTECTED_RESOURCE_PATH + MCP_PATH, response_model=ProtectedResource)
async def protected_mcp_resource(request: Request, settings: SettingsDep) -> ProtectedResource:
    """/mcp alone, where RFC 9728 places the document for a resource with a path."""
    base = public_base(settings, request.scope)
    return _metadata(base + MCP_PATH, settings, base)
