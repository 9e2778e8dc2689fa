"""`memory-layer import` and `export` as their own processes against a real gateway and
memory service: an interrupted import run again stores every message once, and an export
imported into a fresh instance gives back the same memories."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from memory_service.embedding.scheduler import Embedder
from memory_service.models import memory_point_id
from tests.support.auth import Keys, bearer, new_user
from tests.support.exports import START, chatgpt_export, run_cli, start_cli
from tests.support.stack import Gateway, StartGateway, start_memory

# Each starts the CLI as processes and imports a whole export.
pytestmark = pytest.mark.slow


async def all_memories(client: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    memories: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = await client.get(
            "/memories", params={"limit": 200, "cursor": cursor}, headers=headers
        )
        assert page.status_code == 200, page.text
        memories += page.json()["memories"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            return memories


async def test_an_import_killed_half_way_and_run_again_stores_every_message_once(
    gateway: Gateway, api: httpx.AsyncClient, keys: Keys, tmp_path: Path
) -> None:
    user = new_user()
    token = keys.es256(user)
    export = tmp_path / "conversations.json"
    message_ids = chatgpt_export(export, conversations=20, exchanges=15)
    assert len(message_ids) == 600
    command = (
        "import", str(export), "--url", gateway.url, "--token", token,
        "--data-dir", str(tmp_path / "cli"), "--batch-size", "10", "--in-flight", "2",
    )  # fmt: skip
    process = await start_cli(*command)
    count = 0
    while process.returncode is None and count < 200:
        await asyncio.sleep(0.05)
        count = len(await all_memories(api, bearer(token)))
    process.send_signal(signal.SIGKILL)
    await process.wait()
    killed_at = len(await all_memories(api, bearer(token)))
    assert 0 < killed_at < 600, "the import was not stopped half-way"

    code, output = await run_cli(*command)
    assert code == 0, output
    assert "Continuing an interrupted import" in output
    memories = await all_memories(api, bearer(token))
    assert len(memories) == 600
    assert sorted(m["id"] for m in memories) == sorted(
        memory_point_id(user, message_id) for message_id in message_ids
    )
    assert "Imported 600 messages from 20 conversations" in output
    # Each memory keeps the time its message was written.
    by_message = {m["message_id"]: m for m in memories}
    first = datetime.fromisoformat(by_message["c0-e0-user"]["created_at"])
    assert first == START
    answer = by_message["c0-e0-assistant"]
    assert answer["prompt_id"] == by_message["c0-e0-user"]["id"]


async def test_an_export_imported_into_a_fresh_instance_gives_the_same_memories(
    gateway: Gateway,
    api: httpx.AsyncClient,
    keys: Keys,
    embedder: Embedder,
    start_gateway: StartGateway,
    tmp_path: Path,
) -> None:
    user = new_user()
    token = keys.es256(user)
    auth = bearer(token)
    spring = "2023-04-12T10:15:30.123456+00:00"
    batch = await api.post(
        "/memories/batch",
        json={
            "items": [
                {
                    "prompt": "Where did we stay in Kyoto?",
                    "provider": "claude",
                    "conversation_id": "trip",
                    "message_id": "kyoto-q",
                    "url": "https://claude.ai/chat/trip",
                    "metadata": {"tab": "travel", "lang": "en"},
                    "created_at": spring,
                },
                {
                    "response": "A ryokan near Gion.",
                    "message_id": "kyoto-q",
                    "response_message_id": "kyoto-a",
                    "created_at": "2023-04-12T10:15:41+00:00",
                },
            ]
        },
        headers=auth,
    )
    assert batch.json()["stored"] == 2, batch.text
    # Saved without message ids: their ids are their user's own, and survive the trip too.
    lone = await api.post("/save-prompt", json={"prompt": "Pack an umbrella"}, headers=auth)
    reply = await api.post(
        "/save-response",
        json={"response": "Noted: umbrella.", "prompt_id": lone.json()["id"]},
        headers=auth,
    )
    assert reply.status_code == 200, reply.text

    out = tmp_path / "memories.ndjson"
    code, output = await run_cli(
        "export", "--out", str(out), "--url", gateway.url, "--token", token
    )
    assert code == 0, output
    assert "Exported 4 memories" in output
    original = sorted((json.loads(line) for line in out.read_text().splitlines()), key=_id)

    fresh_memory = await start_memory(embedder, tmp_path / "fresh")
    try:
        fresh = await start_gateway(memory_port=fresh_memory.port)
        code, output = await run_cli(
            "import", str(out), "--url", fresh.url, "--token", token,
            "--data-dir", str(tmp_path / "cli"),
        )  # fmt: skip
        assert code == 0, output
        assert "4 stored" in output
        async with fresh.client() as client:
            exported = await client.get("/export", headers=auth)
            copied = sorted((json.loads(line) for line in exported.text.splitlines()), key=_id)
            assert copied == original
            window = {
                "created_after": "2023-04-01T00:00:00Z",
                "created_before": "2023-05-01T00:00:00Z",
            }
            found = (await client.get("/memories", params=window, headers=auth)).json()
        assert sorted(m["message_id"] for m in found["memories"]) == ["kyoto-a", "kyoto-q"]
        prompt = next(m for m in copied if m["message_id"] == "kyoto-q")
        assert datetime.fromisoformat(prompt["created_at"]) == datetime.fromisoformat(spring)
    finally:
        await fresh_memory.stop(0)


def _id(memory: dict[str, Any]) -> str:
    return str(memory["id"])
