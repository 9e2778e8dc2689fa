"""The extension against the real stack: `memory-layer up` starts memory_service,
chat_service and the gateway as real processes on loopback; everything goes over HTTP with
real tokens. No LLM is configured, so chat runs in its offline mode."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.mcp_client import bridge_session
from tests.support.ports import free_port

CLI = [sys.executable, "-m", "memory_layer_cli"]
PROVIDERS = ("chatgpt", "claude")
TOPICS = [
    "How do I configure pnpm workspaces in a monorepo?",
    "Suggest a vegetarian lasagna recipe for six people",
    "What is the difference between TCP and UDP?",
    "Plan a three day trip to Lisbon in spring",
    "Explain Python's asyncio event loop simply",
]


class Stack:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{port}"
        self.printed = ""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GATEWAY_", "MEMORY_", "CHAT_"))
        }
        self.process = subprocess.Popen(
            [*CLI, "up", "--port", str(port), "--data-dir", str(data_dir)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 240.0) -> str:
        assert self.process.stdout is not None
        lines = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C to stop" in line:
                self.printed = "".join(lines)
                return self.printed
        raise AssertionError("stack did not come up:\n" + "".join(lines))

    def token(self, user: str) -> str:
        out = subprocess.run(
            [*CLI, "token", "--user", user, "--data-dir", str(self.data_dir)],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("stack"), free_port())
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def client(stack: Stack, user: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.url,
        headers={"Authorization": f"Bearer {stack.token(user)}"},
        timeout=60.0,
    )


def test_the_extension_round_trip_and_isolation_between_users(stack: Stack) -> None:
    assert stack.url in stack.printed
    assert "memory-layer token --user" in stack.printed
    ready = httpx.get(f"{stack.url}/readyz").json()
    assert ready == {"status": "ready", "memory": "serving", "chat": "serving"}

    with client(stack, "alice") as alice, client(stack, "bob") as bob:
        prompts = []
        for i in range(20):
            body = {
                "user_id": "alice",
                "prompt": f"{TOPICS[i % len(TOPICS)]} (variant {i})",
                "provider": PROVIDERS[i % 2],
                "conversation_id": f"conv-{i % 4}",
                "message_id": f"msg-{i}",
                "url": f"https://example.test/c/{i}",
            }
            saved = alice.post("/save-prompt", json=body)
            assert saved.status_code == 200, saved.text
            prompts.append(saved.json())
        assert len({p["id"] for p in prompts}) == 20
        assert alice.post("/save-prompt", json=body).json()["id"] == prompts[19]["id"]

        answer = alice.post(
            "/save-response",
            json={
                "response": "Create pnpm-workspace.yaml and list packages/* in it.",
                "message_id": "msg-0",
                "provider": "chatgpt",
                "user_id": "alice",
            },
        )
        assert answer.status_code == 200 and answer.json()["prompt_id"] == prompts[0]["id"]

        found = alice.post("/search", json={"query": "pnpm monorepo workspaces", "top_k": 5})
        assert found.status_code == 200
        hits = found.json()["results"]
        assert hits and "pnpm" in hits[0]["text"]
        claude_only = alice.post(
            "/search",
            json={"query": "lasagna recipe", "top_k": 10, "filters": {"providers": ["claude"]}},
        ).json()["results"]
        assert claude_only and {r["provider"] for r in claude_only} == {"claude"}

        context = alice.post(
            "/context", json={"prompt": "trip to Lisbon", "top_k": 5, "max_tokens": 200}
        ).json()
        assert "Lisbon" in context["context"] and len(context["context"]) <= 800

        seen: list[str] = []
        cursor = ""
        pages = 0
        while True:
            page = alice.get("/memories", params={"limit": 7, "cursor": cursor}).json()
            seen += [m["id"] for m in page["memories"]]
            pages += 1
            if not page["next_cursor"]:
                break
            cursor = page["next_cursor"]
        assert len(seen) == len(set(seen)) == 21 and pages >= 3

        victim = prompts[5]["id"]
        assert alice.delete(f"/memories/{victim}").status_code == 204
        assert alice.get(f"/memories/{victim}").status_code == 404

        exported = alice.get("/export")
        assert exported.headers["content-type"].startswith("application/x-ndjson")
        rows = [json.loads(line) for line in exported.text.splitlines()]
        assert len(rows) == 20 and victim not in {r["id"] for r in rows}

        # Bob sees none of it, by any route, even with Alice's ids in hand.
        target = prompts[0]["id"]
        assert bob.get("/memories").json() == {"memories": [], "next_cursor": None}
        assert bob.post("/search", json={"query": "pnpm monorepo", "top_k": 50}).json() == {
            "results": []
        }
        for mode in ("semantic", "keyword"):
            searched = bob.post("/search", json={"query": "Lisbon trip", "mode": mode})
            assert searched.json() == {"results": []}
        assert bob.post("/context", json={"prompt": "Lisbon"}).json()["memories"] == []
        assert bob.get("/export").text == ""
        assert bob.get(f"/memories/{target}").status_code == 404
        assert bob.delete(f"/memories/{target}").status_code == 404
        stolen = bob.post("/save-response", json={"response": "x", "prompt_id": target})
        assert stolen.status_code == 404
        assert bob.post("/save-prompt", json={"prompt": "hi", "user_id": "alice"}).json() == {
            "detail": "User ID mismatch"
        }
        assert bob.get("/admin/stats").status_code == 403
        assert bob.delete("/admin/users/alice").status_code == 403
        assert bob.delete("/memories").json() == {"deleted": 0}
        assert alice.get(f"/memories/{target}").json()["response_id"] == answer.json()["id"]

        assert alice.delete("/memories").json() == {"deleted": 20}
        assert alice.get("/memories").json() == {"memories": [], "next_cursor": None}


def test_chat_without_a_language_model_answers_from_memories(stack: Stack) -> None:
    assert "/chat runs offline" in stack.printed
    with client(stack, "carol") as carol, client(stack, "dave") as dave:
        saved = carol.post("/save-prompt", json={"prompt": "My cat is called Miso"})
        assert saved.status_code == 200
        dave.post("/save-prompt", json={"prompt": "My cat is called Pepper"})
        answer = carol.post("/chat", json={"message": "What is my cat called?", "top_k": 3})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["offline"] is True
    assert "No language model is configured" in body["notice"]
    assert "Miso" in body["response"] and "Pepper" not in body["response"]
    assert [m["id"] for m in body["context_used"]] == [saved.json()["id"]]


def test_import_of_chatgpt_and_claude_exports(stack: Stack) -> None:
    exports = Path(__file__).resolve().parents[1] / "data" / "exports"

    def run_import(name: str) -> subprocess.CompletedProcess[str]:
        command = [*CLI, "import", str(exports / name), "--user", "erin", "--url", stack.url]
        return subprocess.run(
            [*command, "--data-dir", str(stack.data_dir)],
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = run_import("chatgpt-conversations.json")
    assert first.returncode == 0, first.stderr
    assert "Imported 6 messages from 2 conversations" in first.stderr
    assert "6 stored, 0 already present, 0 refused." in first.stderr
    assert run_import("claude-conversations.json").returncode == 0
    with client(stack, "erin") as erin, client(stack, "frank") as frank:
        memories = erin.get("/memories", params={"limit": 50}).json()["memories"]
        assert len(memories) == 8
        assert {m["provider"] for m in memories} == {"chatgpt", "claude"}
        found = erin.post("/search", json={"query": "port wine lodges in Gaia", "top_k": 2})
        # The question and its answer, linked as the export links them.
        by_message = {r["message_id"]: r for r in found.json()["results"]}
        assert set(by_message) == {"n-cellars", "n-answer-cellars"}
        asked = by_message["n-cellars"]
        assert asked["conversation_id"] == "c0ffee00-0000-4000-8000-000000000001"
        assert asked["metadata"]["conversation_title"] == "Weekend in Porto"
        answer = erin.get(f"/memories/{asked['response_id']}").json()
        assert answer["message_id"] == "n-answer-cellars"
        assert answer["text"].startswith("Several lodges along the Gaia riverside")
        # Importing again stores nothing twice; nobody else sees the import.
        assert run_import("chatgpt-conversations.json").returncode == 0
        assert len(erin.get("/memories", params={"limit": 50}).json()["memories"]) == 8
        assert frank.get("/memories").json()["memories"] == []


async def test_a_desktop_app_reaches_its_memories_through_the_stdio_bridge(stack: Stack) -> None:
    command = f"memory-layer mcp --url {stack.url} --user alice --data-dir {stack.data_dir}"
    assert command in stack.printed
    args = ("--url", stack.url, "--user", "gina", "--data-dir", str(stack.data_dir))
    async with bridge_session(*args) as bridge:
        await bridge.session.initialize()
        saved = await bridge.ok("save_memory", text="I keep my passport in the blue folder")
        found = await bridge.ok("search_memories", query="where is my passport", top_k=3)
        context = await bridge.ok("get_context", prompt="Where did I put my passport?")
    assert found["results"][0]["id"] == saved["id"]
    assert "blue folder" in context["context"]
    with client(stack, "gina") as gina, client(stack, "alice") as alice:
        assert gina.get(f"/memories/{saved['id']}").json() == saved
        assert alice.get(f"/memories/{saved['id']}").status_code == 404


def test_up_prints_a_dashboard_link_that_signs_in(stack: Stack) -> None:
    [link] = re.findall(r"Dashboard: +(\S+)", stack.printed)
    page, _, access_token = link.partition("#access_token=")
    assert page == f"{stack.url}/app/"
    assert httpx.get(page).status_code == 200
    listed = httpx.get(f"{stack.url}/memories", headers={"Authorization": f"Bearer {access_token}"})
    assert listed.status_code == 200, listed.text


def test_ctrl_c_stops_every_service(stack: Stack) -> None:
    port = int(stack.url.rsplit(":", 1)[1])
    assert stack.stop() == 0
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    log_dir = stack.data_dir / "logs"
    assert {p.name for p in log_dir.iterdir()} == {
        "memory_service.log",
        "chat_service.log",
        "gateway.log",
    }
    # Memories, logs and the local secret are this user's alone.
    for path in (stack.data_dir, log_dir, stack.data_dir / "memory"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in (*log_dir.iterdir(), stack.data_dir / "local-auth.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "memory service shutting down" in (log_dir / "memory_service.log").read_text()
    assert "chat service shutting down" in (log_dir / "chat_service.log").read_text()
