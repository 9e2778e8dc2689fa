"""`memory-layer extension --user` against a real gateway and MemoryService: the copy it writes
carries an API key for that user, made in the key store the dashboard's keys live in, not a
token that runs out."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from gateway.tokens import mint_token
from memory_layer_cli.local_auth import load_or_create_local_auth
from tests.support.auth import bearer, new_user
from tests.support.processes import REPO_ROOT, service_env
from tests.support.stack import StartGateway


async def test_user_gets_an_api_key_of_the_gateway_s_key_store(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    auth = load_or_create_local_auth(tmp_path / "data")
    gateway = await start_gateway(
        supabase_url=None, jwt_issuer=auth.issuer, supabase_jwt_secret=auth.jwt_secret
    )
    user = new_user()
    out = tmp_path / "ext"
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "memory_layer_cli", "extension", "--out", str(out),
        "--url", gateway.url, "--user", user, "--data-dir", str(tmp_path / "data"),
        "--browser", "firefox",
        cwd=REPO_ROOT, env=service_env(), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, output = await command.communicate()
    assert command.returncode == 0, output.decode()

    key = json.loads((out / "config.json").read_text())["key"]
    assert key.startswith("mlk_")
    session = bearer(mint_token(auth.jwt_secret, user, issuer=auth.issuer))
    async with gateway.client() as client:
        keys = (await client.get("/keys", headers=session)).json()["keys"]
        assert [(k["name"], k["scopes"], k["expires_at"]) for k in keys] == [
            ("Memory Layer extension for Firefox", ["read", "write"], None)
        ]
        assert key.startswith(keys[0]["prefix"])
        # The key is the user's: what the extension saves with it is theirs.
        saved = await client.post(
            "/save-prompt", json={"prompt": "Where did I park?"}, headers=bearer(key)
        )
        assert saved.status_code == 200, saved.text
        listed = (await client.get("/memories", headers=session)).json()["memories"]
        assert [m["id"] for m in listed] == [saved.json()["id"]]
