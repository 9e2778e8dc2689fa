"""`memory-layer mcp`, started by the official SDK's stdio client as a desktop app starts it,
against a real gateway and MemoryService: what goes through it lands in the same memories the
HTTP API serves, and a failure on the way comes back as the request's error."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from gateway.tokens import mint_token
from memory_layer_cli.local_auth import load_or_create_local_auth
from tests.support.auth import Keys, bearer, new_user
from tests.support.mcp_client import McpConnection, bridge_session
from tests.support.ports import free_port
from tests.support.stack import Gateway, StartGateway

TOOLS = {
    "save_memory",
    "search_memories",
    "get_context",
    "list_memories",
    "get_memory",
    "update_memory",
    "delete_memory",
}


async def save_and_search(bridge: McpConnection) -> dict[str, object]:
    await bridge.session.initialize()
    assert {tool.name for tool in (await bridge.session.list_tools()).tools} == TOOLS
    saved = await bridge.ok("save_memory", text="Our wifi password is on the fridge door")
    found = await bridge.ok("search_memories", query="where is the wifi password written")
    assert found["results"][0]["id"] == saved["id"]
    return saved


async def test_bridge_with_a_token_saves_and_searches(
    gateway: Gateway, keys: Keys, api: httpx.AsyncClient
) -> None:
    user = new_user()
    token = keys.es256(user)
    async with bridge_session("--url", gateway.url, "--token", token) as bridge:
        saved = await save_and_search(bridge)
    stored = await api.get(f"/memories/{saved['id']}", headers=bearer(token))
    assert stored.status_code == 200
    assert stored.json() == saved
    assert stored.json()["user_id"] == user


async def test_bridge_with_an_api_key_from_the_environment_saves_and_searches(
    gateway: Gateway, keys: Keys, api: httpx.AsyncClient
) -> None:
    user = new_user()
    session = bearer(keys.es256(user))
    created = await api.post("/keys", json={"name": "claude desktop"}, headers=session)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    async with bridge_session("--url", gateway.url, env={"MEMORY_LAYER_KEY": key}) as bridge:
        saved = await save_and_search(bridge)
    stored = await api.get(f"/memories/{saved['id']}", headers=session)
    assert stored.status_code == 200
    assert stored.json()["user_id"] == user
    listed = await api.get("/keys", headers=session)
    assert listed.json()["keys"][0]["last_used_at"] is not None


async def test_bridge_for_a_local_user_mints_its_tokens(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    auth = load_or_create_local_auth(tmp_path)
    gateway = await start_gateway(
        supabase_url=None, jwt_issuer=auth.issuer, supabase_jwt_secret=auth.jwt_secret
    )
    user = new_user()
    args = ("--url", gateway.url, "--user", user, "--data-dir", str(tmp_path))
    async with bridge_session(*args) as bridge:
        saved = await save_and_search(bridge)
    token = mint_token(auth.jwt_secret, user, issuer=auth.issuer)
    async with gateway.client() as client:
        listed = (await client.get("/memories", headers=bearer(token))).json()
    assert [m["id"] for m in listed["memories"]] == [saved["id"]]


async def test_bridge_answers_an_unreachable_gateway_with_an_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with bridge_session("--url", url, "--token", "any") as bridge:
        with pytest.raises(MCPError, match="Cannot reach the gateway"):
            await bridge.session.initialize()


async def test_bridge_answers_a_refused_token_with_an_error(gateway: Gateway) -> None:
    async with bridge_session("--url", gateway.url, "--token", "not-a-token") as bridge:
        with pytest.raises(MCPError, match=r"refused the token \(401\)"):
            await bridge.session.initialize()
