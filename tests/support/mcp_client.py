"""MCP clients for the tests: the official SDK's session over Streamable HTTP to a gateway,
with a bearer token, recording the HTTP status of every answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


@dataclass
class McpConnection:
    session: ClientSession
    statuses: list[int] = field(default_factory=list)


@asynccontextmanager
async def mcp_session(
    base_url: str, token: str | None, headers: dict[str, str] | None = None
) -> AsyncIterator[McpConnection]:
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    async with (
        httpx2.AsyncClient(
            headers=all_headers, timeout=30.0, event_hooks={"response": [record]}
        ) as http,
        streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        yield McpConnection(session, statuses)
