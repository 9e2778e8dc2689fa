"""MCP clients for the tests, the official SDK's: a session over Streamable HTTP to a
gateway's /mcp with a bearer token (recording the HTTP status of every answer), and a session
over stdio with `memory-layer mcp` started as a real process."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent


@dataclass
class McpConnection:
    session: ClientSession
    statuses: list[int] = field(default_factory=list)

    async def call(self, tool: str, **arguments: Any) -> CallToolResult:
        return await self.session.call_tool(tool, arguments)

    async def ok(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """The structured answer of a call that must succeed."""
        result = await self.call(tool, **arguments)
        assert not result.is_error, text_of(result)
        assert result.structured_content is not None
        return result.structured_content


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


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


@asynccontextmanager
async def bridge_session(
    *cli_args: str, env: dict[str, str] | None = None
) -> AsyncIterator[McpConnection]:
    """`memory-layer mcp ARGS` as a child process, as a desktop app starts it, with ENV added
    to its environment."""
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "memory_layer_cli", "mcp", *cli_args],
        # The child imports this tree's code, as the test process does.
        env={
            **{k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "PATH", "HOME")},
            **(env or {}),
        },
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        yield McpConnection(session)


def mcp_request(method: str, params: dict[str, Any] | None = None) -> str:
    """One JSON-RPC request as an MCP client POSTs it."""
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})


MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@asynccontextmanager
async def discovering_client(base_url: str, token: str) -> AsyncIterator[Client]:
    """The SDK's high-level client, which discovers the newest protocol the server speaks
    before falling back to the initialize handshake."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30.0) as http,
        Client(streamable_http_client(f"{base_url}/mcp", http_client=http), mode="auto") as client,
    ):
        yield client
