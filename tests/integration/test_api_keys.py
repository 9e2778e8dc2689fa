"""API keys over real HTTP and /mcp: a real gateway and MemoryService with the embedded
store. A key made with a session token saves and searches for its owner, within its scopes,
never reaches admin routes or /keys, and stops working once revoked; the per-user limit holds
under concurrent requests with either store (the server store behind two replicas)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from mcp.shared.exceptions import MCPError
from pydantic import SecretStr

from gateway.auth import UNAUTHORIZED_DETAIL
from memory_service.embedding.scheduler import Embedder
from tests.support.auth import Keys, bearer, new_user
from tests.support.mcp_client import MCP_HEADERS, mcp_request, mcp_session
from tests.support.qdrant_stand_in import QdrantStandIn
from tests.support.stack import Gateway, StartGateway, start_memory

UNAUTHORIZED = {"detail": UNAUTHORIZED_DETAIL}


async def _create(
    api: httpx.AsyncClient, token: str, name: str = "laptop", **body: object
) -> dict[str, object]:
    response = await api.post("/keys", json={"name": name, **body}, headers=bearer(token))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_a_key_saves_and_searches_over_http_and_mcp_until_revoked(
    gateway: Gateway, keys: Keys, api: httpx.AsyncClient
) -> None:
    user = new_user()
    session = keys.es256(user)
    created = await _create(api, session, "Claude Desktop")
    key = str(created["key"])
    assert key.startswith("mlk_") and len(key) >= 4 + 43
    assert created["prefix"] == key[:12]
    assert created["scopes"] == ["read", "write"]
    assert created["expires_at"] is None

    saved = await api.post(
        "/save-prompt", json={"prompt": "My cat Ziggy eats tuna"}, headers=bearer(key)
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["user_id"] == user
    found = await api.post("/search", json={"query": "what does my cat eat"}, headers=bearer(key))
    assert found.status_code == 200
    assert found.json()["results"][0]["id"] == saved.json()["id"]

    async with mcp_session(gateway.url, key) as mcp:
        await mcp.session.initialize()
        stored = await mcp.ok("save_memory", text="I play the cello on Sundays")
        assert stored["user_id"] == user
        results = await mcp.ok("search_memories", query="which instrument do I play")
        assert results["results"][0]["id"] == stored["id"]

    listed = await api.get("/keys", headers=bearer(session))
    assert listed.status_code == 200
    [entry] = listed.json()["keys"]
    assert entry["id"] == created["id"]
    assert entry["name"] == "Claude Desktop"
    assert entry["prefix"] == created["prefix"]
    assert entry["last_used_at"] is not None
    assert key not in listed.text and "key" not in entry

    revoked = await api.delete(f"/keys/{created['id']}", headers=bearer(session))
    assert revoked.status_code == 204
    refused = await api.post("/search", json={"query": "cat"}, headers=bearer(key))
    assert refused.status_code == 401
    assert refused.json() == UNAUTHORIZED
    over_mcp = await api.post(
        "/mcp", content=mcp_request("tools/list"), headers={**MCP_HEADERS, **bearer(key)}
    )
    assert over_mcp.status_code == 401
    async with mcp_session(gateway.url, key) as mcp:
        with pytest.raises(MCPError):
            await mcp.session.initialize()
        assert 401 in mcp.statuses
    assert (await api.get("/keys", headers=bearer(session))).json() == {"keys": []}
    again = await api.delete(f"/keys/{created['id']}", headers=bearer(session))
    assert again.status_code == 404


async def test_a_read_key_reads_but_never_writes(
    gateway: Gateway, keys: Keys, api: httpx.AsyncClient
) -> None:
    user = new_user()
    session = bearer(keys.es256(user))
    memory = await api.post("/save-prompt", json={"prompt": "I live in Lyon"}, headers=session)
    memory_id = memory.json()["id"]
    read = bearer(str((await _create(api, keys.es256(user), scopes=["read"]))["key"]))
    missing = {"detail": "This API key lacks the 'write' scope"}
    for method, path, body in [
        ("POST", "/save-prompt", {"prompt": "x"}),
        ("POST", "/save-response", {"response": "y", "prompt_id": memory_id}),
        ("POST", "/memories/batch", {"items": [{"prompt": "z"}]}),
        ("PATCH", f"/memories/{memory_id}", {"text": "I live in Paris"}),
        ("DELETE", f"/memories/{memory_id}", None),
        ("DELETE", "/memories", None),
    ]:
        response = await api.request(method, path, json=body, headers=read)
        assert (response.status_code, response.json()) == (403, missing), (method, path)
    assert (await api.post("/search", json={"query": "Lyon"}, headers=read)).status_code == 200
    got = await api.get(f"/memories/{memory_id}", headers=read)
    assert got.json()["text"] == "I live in Lyon"
    assert (await api.get("/memories", headers=read)).status_code == 200
    assert (await api.get("/export", headers=read)).status_code == 200
    assert (await api.post("/context", json={"prompt": "Lyon"}, headers=read)).status_code == 200

    async with mcp_session(gateway.url, read["Authorization"].split()[1]) as mcp:
        await mcp.session.initialize()
        refused = await mcp.call("save_memory", text="nope")
        assert refused.is_error
        assert "lacks the 'write' scope" in str(refused.content)
        assert (await mcp.ok("get_memory", memory_id=memory_id))["id"] == memory_id

    write = bearer(str((await _create(api, keys.es256(user), scopes=["write"]))["key"]))
    response = await api.post("/search", json={"query": "Lyon"}, headers=write)
    assert (response.status_code, response.json()) == (
        403,
        {"detail": "This API key lacks the 'read' scope"},
    )


async def test_no_key_reaches_admin_routes_or_keys(keys: Keys, api: httpx.AsyncClient) -> None:
    admin = "listed-admin"
    key = bearer(str((await _create(api, keys.es256(admin)))["key"]))
    for method, path in [
        ("GET", "/admin/stats"),
        ("DELETE", f"/admin/users/{new_user()}"),
        ("GET", "/keys"),
        ("POST", "/keys"),
        ("DELETE", "/keys/00000000-0000-0000-0000-000000000000"),
    ]:
        body = {"name": "another"} if method == "POST" else None
        response = await api.request(method, path, json=body, headers=key)
        assert response.status_code == 403, (method, path)
        assert "API keys cannot be used here" in response.json()["detail"]
    # The same admin's session token does reach them.
    assert (await api.get("/admin/stats", headers=bearer(keys.es256(admin)))).status_code == 200


async def test_a_key_sees_only_its_owners_memories(keys: Keys, api: httpx.AsyncClient) -> None:
    alice, bob = new_user(), new_user()
    await api.post(
        "/save-prompt", json={"prompt": "Alice's bank PIN hint"}, headers=bearer(keys.es256(alice))
    )
    bob_key = bearer(str((await _create(api, keys.es256(bob)))["key"]))
    found = await api.post("/search", json={"query": "bank PIN hint"}, headers=bob_key)
    assert found.status_code == 200 and found.json()["results"] == []
    assert (await api.get("/memories", headers=bob_key)).json()["memories"] == []
    # Bob's key cannot be revoked by Alice: 404, as for any id that is not hers.
    bob_key_id = (await api.get("/keys", headers=bearer(keys.es256(bob)))).json()["keys"][0]["id"]
    stolen = await api.delete(f"/keys/{bob_key_id}", headers=bearer(keys.es256(alice)))
    assert stolen.status_code == 404
    assert (await api.get("/memories", headers=bob_key)).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x" * 101},
        {"name": "tab\tname"},
        {"name": "   "},
        {"name": "ok", "scopes": []},
        {"name": "ok", "scopes": ["admin"]},
        {"name": "ok", "scopes": ["read", "read", "write"]},
        {"name": "ok", "expires_in_days": 0},
        {"name": "ok", "expires_in_days": 3651},
        {"name": "ok", "expires_in_days": "soon"},
        {"name": "ok", "owner": "someone-else"},
    ],
)
async def test_invalid_key_requests_are_422(
    keys: Keys, api: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await api.post("/keys", json=body, headers=bearer(keys.es256(new_user())))
    assert response.status_code == 422, response.text


async def test_names_keep_any_script_and_expiry_is_reported(
    keys: Keys, api: httpx.AsyncClient
) -> None:
    created = await _create(api, keys.es256(new_user()), "Téléphone — 日本", expires_in_days=30)
    assert created["name"] == "Téléphone — 日本"
    assert created["expires_at"] is not None


async def test_at_most_fifty_live_keys(keys: Keys, api: httpx.AsyncClient) -> None:
    token = keys.es256(new_user())
    made = [await _create(api, token, f"key {i}") for i in range(50)]
    beyond = await api.post("/keys", json={"name": "one more"}, headers=bearer(token))
    assert beyond.status_code == 409
    assert "at most 50" in beyond.json()["detail"]
    await api.delete(f"/keys/{made[0]['id']}", headers=bearer(token))
    assert (await api.post("/keys", json={"name": "now"}, headers=bearer(token))).status_code == 201


async def test_openapi_documents_keys_on_the_bearer_scheme(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    [scheme] = spec["components"]["securitySchemes"].values()
    assert scheme["scheme"] == "bearer" and "mlk_" in scheme["description"]
    create = spec["paths"]["/keys"]["post"]
    assert set(create["responses"]) >= {"201", "409", "422"}
    assert spec["paths"]["/keys/{key_id}"]["delete"]["responses"].keys() >= {"204", "404"}


@pytest.fixture(params=["embedded", "server"])
async def key_gateways(
    request: pytest.FixtureRequest,
    gateway: Gateway,
    start_gateway: StartGateway,
    embedder: Embedder,
    tmp_path: Path,
) -> AsyncIterator[list[Gateway]]:
    """Gateways in front of one set of keys: the session's (embedded store), or two, each in
    front of its own memory_service replica, both on one Qdrant server."""
    if request.param == "embedded":
        yield [gateway]
        return
    qdrant = QdrantStandIn().start()
    replicas = [
        await start_memory(
            embedder,
            tmp_path / f"unused-{n}",
            qdrant_url=qdrant.url,
            # Replicas of one deployment share the key their text ids are made with.
            id_key=SecretStr("key-replicas-test-id-key"),
        )
        for n in range(2)
    ]
    try:
        yield [await start_gateway(memory_port=replica.port) for replica in replicas]
    finally:
        for replica in replicas:
            await replica.stop(0)
        qdrant.stop()


async def test_concurrent_creates_stop_exactly_at_fifty(
    keys: Keys, key_gateways: list[Gateway]
) -> None:
    token = keys.es256(new_user())
    clients = [each.client() for each in key_gateways]
    try:
        for i in range(45):
            await _create(clients[i % len(clients)], token, f"key {i}")
        answers = await asyncio.gather(
            *(
                clients[i % len(clients)].post(
                    "/keys", json={"name": f"racing {i}"}, headers=bearer(token)
                )
                for i in range(20)
            )
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [201] * 5 + [409] * 15
        listed = await clients[-1].get("/keys", headers=bearer(token))
        assert len(listed.json()["keys"]) == 50
    finally:
        for client in clients:
            await client.aclose()
