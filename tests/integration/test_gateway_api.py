"""The gateway over real sockets: uvicorn on loopback in front of a real MemoryService
(real model, embedded store), a real HTTP server serving the JWKS, real Redis."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any

import httpx
import pytest
from jose import jwt

from gateway.api_keys import KeyGrant, KeyResolver, new_key
from gateway.auth import MAX_JWKS_BYTES, UNAUTHORIZED_DETAIL
from gateway.cursors import INVALID_CURSOR
from gateway.routes.memories import TOO_MANY_EXPORTS
from memory_service.embedding.scheduler import Embedder
from tests.support.auth import (
    EXTENSION_ORIGIN,
    REDIS_URL,
    REJECTED_CASES,
    Keys,
    bearer,
    ec_key,
    memory_rpcs,
    new_user,
    rejected_tokens,
)
from tests.support.ports import free_port
from tests.support.stack import Gateway, StartGateway, start_memory

# --- authentication ---------------------------------------------------------------------


async def test_valid_es256_rs256_and_hs256_tokens_are_accepted(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    for token in (keys.es256("alice"), keys.rs256("alice"), keys.hs256("alice")):
        response = await api.get("/memories", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert "memories" in response.json()


async def test_every_rejected_token_gets_the_same_401_and_reaches_no_service(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    cases = rejected_tokens(keys)
    assert sorted(cases) == sorted(REJECTED_CASES)
    user_token = keys.es256("alice")
    # The tokens are judged on their own: a real one works through the same client.
    assert (await api.get("/memories", headers=bearer(user_token))).status_code == 200
    before = memory_rpcs()
    for name, headers in cases.items():
        for method, path, body in (
            ("GET", "/memories", None),
            ("POST", "/save-prompt", {"prompt": "should never be stored"}),
            ("POST", "/search", {"query": "anything"}),
        ):
            response = await api.request(method, path, headers=headers, json=body)
            assert response.status_code == 401, (name, path, response.text)
            assert response.json() == {"detail": UNAUTHORIZED_DETAIL}, name
            assert response.headers["www-authenticate"] == "Bearer", name
    assert memory_rpcs() == before
    listed = await api.get("/memories", headers=bearer(user_token))
    assert all(m["text"] != "should never be stored" for m in listed.json()["memories"])


async def test_token_within_leeway_is_accepted(api: httpx.AsyncClient, keys: Keys) -> None:
    now = int(time.time())
    token = keys.es256("alice", iat=now - 600, exp=now - 5)
    assert (await api.get("/memories", headers=bearer(token))).status_code == 200


async def test_unknown_kid_burst_fetches_jwks_once_per_cooldown_and_rotation_is_picked_up(
    start_gateway: StartGateway, keys: Keys
) -> None:
    gw = await start_gateway(jwks_refetch_cooldown_seconds=1.0)
    async with gw.client() as client:
        assert (await client.get("/memories", headers=bearer(keys.es256()))).status_code == 200
        fetches = keys.jwks.fetches
        burst = await asyncio.gather(
            *(
                client.get("/memories", headers=bearer(keys.es256(kid=f"made-up-{i}")))
                for i in range(40)
            )
        )
        assert {r.status_code for r in burst} == {401}
        assert keys.jwks.fetches - fetches <= 1

        rotated = ec_key("es-key-2")
        keys.jwks.keys.append(rotated.public_jwk)
        try:
            await asyncio.sleep(1.1)
            token = jwt.encode(
                keys.claims("alice"),
                rotated.private_pem.decode(),
                algorithm="ES256",
                headers={"kid": rotated.kid},
            )
            before = keys.jwks.fetches
            assert (await client.get("/memories", headers=bearer(token))).status_code == 200
            assert keys.jwks.fetches == before + 1
        finally:
            keys.jwks.keys.remove(rotated.public_jwk)


async def test_last_good_key_set_is_kept_when_the_jwks_fetch_fails(
    start_gateway: StartGateway, keys: Keys
) -> None:
    gw = await start_gateway(jwks_cache_seconds=0.2, jwks_refetch_cooldown_seconds=0.0)
    async with gw.client() as client:
        assert (await client.get("/memories", headers=bearer(keys.es256()))).status_code == 200
        keys.jwks.failing = True
        try:
            await asyncio.sleep(0.3)
            before = keys.jwks.fetches
            response = await client.get("/memories", headers=bearer(keys.rs256()))
            assert response.status_code == 200
            # The stale set is served at once; its refresh runs in the background.
            for _ in range(100):
                if keys.jwks.fetches > before:
                    break
                await asyncio.sleep(0.02)
            assert keys.jwks.fetches == before + 1
            again = await client.get("/memories", headers=bearer(keys.es256()))
            assert again.status_code == 200
        finally:
            keys.jwks.failing = False


async def test_a_known_kid_never_waits_for_a_stalled_or_trickling_key_server(
    start_gateway: StartGateway, keys: Keys
) -> None:
    gw = await start_gateway(
        jwks_cache_seconds=0.2, jwks_refetch_cooldown_seconds=0.0, jwks_fetch_timeout_seconds=30
    )
    # A refresh would hold these requests for up to 30 s; they must not wait for it.
    async with gw.client(timeout=1.0) as client:
        assert (await client.get("/memories", headers=bearer(keys.es256()))).status_code == 200
        release = threading.Event()
        keys.jwks.most_in_flight = 0
        try:
            for stalled, trickle in ((release, 0.0), (None, 0.5)):
                keys.jwks.stall, keys.jwks.trickle_seconds = stalled, trickle
                await asyncio.sleep(0.3)
                answers = await asyncio.gather(
                    *(client.get("/memories", headers=bearer(keys.es256())) for _ in range(8))
                )
                assert [r.status_code for r in answers] == [200] * 8
                assert keys.jwks.in_flight == 1
        finally:
            keys.jwks.stall, keys.jwks.trickle_seconds = None, 0.0
            release.set()
        # One refresh at a time, however many requests found the set stale.
        assert keys.jwks.most_in_flight == 1


async def test_a_key_set_over_the_size_cap_is_refused_and_the_last_good_one_kept(
    start_gateway: StartGateway, keys: Keys
) -> None:
    gw = await start_gateway(jwks_cache_seconds=0.2, jwks_refetch_cooldown_seconds=0.0)
    async with gw.client() as client:
        assert (await client.get("/memories", headers=bearer(keys.es256()))).status_code == 200
        rotated = ec_key("es-key-oversized")
        keys.jwks.keys.append(rotated.public_jwk)
        keys.jwks.padding = MAX_JWKS_BYTES
        try:
            token = jwt.encode(
                keys.claims("alice"),
                rotated.private_pem.decode(),
                algorithm="ES256",
                headers={"kid": rotated.kid},
            )
            # The new key is only in the oversized document, which is never used.
            assert (await client.get("/memories", headers=bearer(token))).status_code == 401
            assert (await client.get("/memories", headers=bearer(keys.es256()))).status_code == 200
        finally:
            keys.jwks.padding = 0
            keys.jwks.keys.remove(rotated.public_jwk)


async def test_admin_routes_need_the_admin_role(api: httpx.AsyncClient, keys: Keys) -> None:
    victim = new_user()
    saved = await api.post(
        "/save-prompt", json={"prompt": "a memory to wipe"}, headers=bearer(keys.es256(victim))
    )
    assert saved.status_code == 200
    plain = bearer(keys.es256("plain-user"))
    assert (await api.get("/admin/stats", headers=plain)).status_code == 403
    assert (await api.delete(f"/admin/users/{victim}", headers=plain)).status_code == 403

    by_claim = bearer(keys.es256("root", app_metadata={"role": "admin"}))
    stats = await api.get("/admin/stats", headers=by_claim)
    assert stats.status_code == 200
    assert stats.json()["dimension"] == 384 and stats.json()["total_memories"] >= 1
    by_setting = bearer(keys.hs256("listed-admin"))
    wiped = await api.delete(f"/admin/users/{victim}", headers=by_setting)
    assert wiped.json() == {"deleted": 1}
    left = await api.get("/memories", headers=bearer(keys.es256(victim)))
    assert left.json()["memories"] == []


# --- rate limits ------------------------------------------------------------------------


async def test_two_gateways_sharing_redis_admit_exactly_the_user_limit(
    start_gateway: StartGateway, keys: Keys
) -> None:
    first = await start_gateway(redis_url=REDIS_URL, rate_limit_user="7/minute")
    second = await start_gateway(redis_url=REDIS_URL, rate_limit_user="7/minute")
    headers = bearer(keys.es256(new_user()))
    async with first.client() as a, second.client() as b:
        responses = await asyncio.gather(
            *((a if i % 2 else b).get("/memories?limit=1", headers=headers) for i in range(20))
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 7
    assert statuses.count(429) == 13
    for response in responses:
        assert response.headers["ratelimit-limit"] == "7"
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.headers["ratelimit-remaining"] == "0"
            assert response.json() == {"detail": "Too many requests, retry later"}


async def test_users_behind_one_ip_have_separate_budgets(
    start_gateway: StartGateway, keys: Keys
) -> None:
    gw = await start_gateway(rate_limit_user="3/minute", rate_limit_ip="50/minute")
    alice, bob = bearer(keys.es256(new_user())), bearer(keys.es256(new_user()))
    async with gw.client() as client:
        first = [(await client.get("/memories", headers=alice)).status_code for _ in range(4)]
        second = [(await client.get("/memories", headers=bob)).status_code for _ in range(3)]
    assert first == [200, 200, 200, 429]
    assert second == [200, 200, 200]


async def test_a_flood_without_tokens_does_not_lock_out_signed_in_users_on_that_address(
    start_gateway: StartGateway, keys: Keys
) -> None:
    gw = await start_gateway(rate_limit_ip="3/minute")
    user = bearer(keys.es256(new_user()))
    async with gw.client() as client:
        flood = [(await client.get("/memories")).status_code for _ in range(6)]
        signed_in = [(await client.get("/memories", headers=user)).status_code for _ in range(4)]
        still_refused = await client.get("/memories", headers=bearer("not.a.token"))
    assert flood == [401, 401, 401, 429, 429, 429]
    assert signed_in == [200] * 4
    assert still_refused.status_code == 429


async def test_made_up_keys_stop_costing_lookups_once_their_address_is_limited(
    start_gateway: StartGateway, keys: Keys, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await start_gateway(rate_limit_ip="3/minute")
    resolver: KeyResolver = gw.app.state.key_resolver
    looked_up: list[bytes] = []
    lookup = resolver._lookup

    async def counted(digest: bytes) -> KeyGrant | None:
        looked_up.append(digest)
        return await lookup(digest)

    monkeypatch.setattr(resolver, "_lookup", counted)
    made = await api.post("/keys", json={"name": "real"}, headers=bearer(keys.es256(new_user())))
    real_key = made.json()["key"]
    async with gw.client() as client:
        real = await client.get("/memories", headers=bearer(real_key))
        flood = [
            (await client.get("/memories", headers=bearer(new_key().key))).status_code
            for _ in range(30)
        ]
    assert real.status_code == 200
    assert flood == [401] * 3 + [429] * 27
    # The real key and the three made-up keys answered 401; none after the address ran out.
    assert len(looked_up) == 4


async def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    start_gateway: StartGateway,
) -> None:
    untrusted = await start_gateway(rate_limit_ip="3/minute")
    async with untrusted.client() as client:
        statuses = [
            (await client.get("/memories", headers={"X-Forwarded-For": f"203.0.113.{i}"}))
            for i in range(5)
        ]
    assert [r.status_code for r in statuses] == [401, 401, 401, 429, 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in statuses[3:])

    behind_proxy = await start_gateway(rate_limit_ip="3/minute", trusted_proxies=["127.0.0.1"])
    async with behind_proxy.client() as client:
        spread = [
            (await client.get("/memories", headers={"X-Forwarded-For": f"198.51.100.{i}"}))
            for i in range(5)
        ]
        same = [
            (await client.get("/memories", headers={"X-Forwarded-For": "198.51.100.200"}))
            for _ in range(4)
        ]
    assert [r.status_code for r in spread] == [401] * 5
    assert [r.status_code for r in same] == [401, 401, 401, 429]


# --- CORS -------------------------------------------------------------------------------


async def test_cors_admits_the_configured_extension_origin_only(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    ok = await api.options("/save-prompt", headers={"Origin": EXTENSION_ORIGIN, **preflight})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == EXTENSION_ORIGIN
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()

    for origin in ("chrome-extension://someoneelse", "https://evil.example", "null"):
        refused = await api.options("/save-prompt", headers={"Origin": origin, **preflight})
        assert not any(h.startswith("access-control-") for h in refused.headers), origin
        plain = await api.get(
            "/memories", headers={"Origin": origin, **bearer(keys.es256("alice"))}
        )
        assert plain.status_code == 200
        assert not any(h.startswith("access-control-") for h in plain.headers), origin

    actual = await api.get(
        "/memories", headers={"Origin": EXTENSION_ORIGIN, **bearer(keys.es256("alice"))}
    )
    assert actual.headers["access-control-allow-origin"] == EXTENSION_ORIGIN
    exposed = actual.headers["access-control-expose-headers"].lower()
    for name in ("retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
        assert name in exposed
    assert "ratelimit-remaining" in actual.headers


# --- input validation -------------------------------------------------------------------


async def test_bad_input_gets_a_clear_4xx_and_stores_nothing(
    api: httpx.AsyncClient, keys: Keys, gateway: Gateway
) -> None:
    user = new_user()
    headers = bearer(keys.es256(user))
    limit = gateway.settings.max_body_bytes
    cases: list[tuple[str, str, Any, int]] = [
        ("/save-prompt", "json", {}, 422),
        ("/save-prompt", "json", {"provider": "claude"}, 422),
        ("/save-prompt", "json", {"prompt": "hi", "temperature": 1}, 422),
        ("/save-prompt", "json", {"prompt": ""}, 422),
        ("/save-prompt", "json", {"prompt": "   \n "}, 422),
        ("/save-prompt", "json", {"prompt": "x" * 50_001}, 422),
        ("/save-prompt", "json", {"prompt": "hi", "metadata": dict.fromkeys("abc" * 11)}, 422),
        ("/save-prompt", "content", b"prompt=hello", 422),
        ("/save-prompt", "content", b'{"prompt": "unterminated', 422),
        ("/save-prompt", "json", {"prompt": "x" * (limit + 10)}, 413),
        ("/save-response", "json", {"response": "an answer"}, 422),
        ("/save-response", "json", {"response": "", "message_id": "m1"}, 422),
        ("/search", "json", {"query": "x", "top_k": 0}, 422),
        ("/search", "json", {"query": "x", "top_k": 51}, 422),
        ("/search", "json", {"query": "x", "mode": "fuzzy"}, 422),
        ("/search", "json", {"query": "x", "mode": "rrf"}, 422),
        ("/search", "json", {"query": "x", "min_score": 1.5}, 422),
        ("/search", "json", {"query": "x", "min_score": -0.1}, 422),
        ("/context", "json", {"prompt": "x", "min_score": 2}, 422),
        ("/search", "json", {"top_k": 5}, 422),
        ("/context", "json", {"prompt": "x", "max_tokens": 100_000}, 422),
    ]
    for path, kind, body, status in cases:
        if kind == "json":
            response = await api.post(path, json=body, headers=headers)
        else:
            response = await api.post(
                path, content=body, headers={**headers, "Content-Type": "application/json"}
            )
        assert response.status_code == status, (path, str(body)[:80], response.text[:300])
        detail = response.json()["detail"]
        assert detail, (path, body)
        if status == 413:
            assert detail == f"Request body is larger than {limit} bytes"

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(limit // 1024 + 2):
            yield b"y" * 1024
        yield b'"}'

    streamed = await api.post(
        "/save-prompt", content=chunks(), headers={**headers, "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413

    unknown = await api.post("/search", json={"query": "x", "limit": 3}, headers=headers)
    assert unknown.json()["detail"][0]["type"] == "extra_forbidden"
    assert unknown.json()["detail"][0]["loc"] == ["body", "limit"]

    mismatch = await api.post(
        "/save-prompt", json={"prompt": "hello", "user_id": "someone-else"}, headers=headers
    )
    assert (mismatch.status_code, mismatch.json()) == (403, {"detail": "User ID mismatch"})

    missing = await api.post(
        "/save-response", json={"response": "an answer", "message_id": "nope"}, headers=headers
    )
    assert missing.status_code == 404
    assert "not found" in missing.json()["detail"]

    listed = await api.get("/memories", headers=headers)
    assert listed.json() == {"memories": [], "next_cursor": None}


# --- the extension's flows --------------------------------------------------------------


async def test_an_unknown_time_zone_is_a_422_that_names_it(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    headers = bearer(keys.es256(new_user()))
    for path, body in (
        ("/search", {"query": "what did I say yesterday"}),
        ("/context", {"prompt": "what did I say yesterday"}),
    ):
        for zone in ("Mars/Olympus", "../../etc/passwd", "", "x" * 100):
            response = await api.post(path, json={**body, "time_zone": zone}, headers=headers)
            assert response.status_code == 422, (path, zone, response.text[:300])
        response = await api.post(path, json={**body, "time_zone": "Mars/Olympus"}, headers=headers)
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", "time_zone"]
        assert "unknown time zone 'Mars/Olympus'" in error["msg"]
    for path, body in (
        ("/search", {"query": "what did I say yesterday"}),
        ("/context", {"prompt": "what did I say yesterday"}),
    ):
        response = await api.post(
            path, json={**body, "time_zone": "Europe/Berlin"}, headers=headers
        )
        assert response.status_code == 200, (path, response.text[:300])


async def test_list_cursors_are_the_servers_own_and_a_forged_one_is_400(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    alice, bob = bearer(keys.es256(new_user())), bearer(keys.es256(new_user()))
    items = [
        {
            "prompt": f"page item {n}",
            "message_id": f"page-{n}",
            "created_at": f"2024-0{n + 1}-01T00:00:00Z",
        }
        for n in range(3)
    ]
    saved = await api.post("/memories/batch", json={"items": items}, headers=alice)
    assert saved.json()["stored"] == 3
    first = (await api.get("/memories?limit=2", headers=alice)).json()
    cursor = first["next_cursor"]
    second = await api.get("/memories", params={"limit": 2, "cursor": cursor}, headers=alice)
    assert second.status_code == 200
    texts = [m["text"] for m in first["memories"] + second.json()["memories"]]
    assert sorted(texts) == [f"page item {n}" for n in range(3)], texts

    # A position memory_service would scroll ~100,000 records for, as a client could write it.
    forged = base64.urlsafe_b64encode(b"1e18/100000").decode().rstrip("=")
    position, _, mac = cursor.rpartition(".")
    refused = [
        forged,
        f"{forged}.{mac}",
        f"{position}.{'A' * len(mac)}",
        position,
        cursor + "x",
    ]
    for bad in refused:
        response = await api.get("/memories", params={"cursor": bad}, headers=alice)
        assert response.status_code == 400, bad
        assert response.json() == {"detail": INVALID_CURSOR}
    # A cursor is its user's: another user cannot replay it.
    borrowed = await api.get("/memories", params={"cursor": cursor}, headers=bob)
    assert borrowed.status_code == 400


PROVIDERS = ["claude", "claude", "gemini", "claude"]


async def test_memory_stats_count_per_provider_and_per_day_where_the_caller_is(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    auth = bearer(keys.es256(new_user()))
    now = datetime.now(UTC).replace(microsecond=0)
    # 23:30 UTC yesterday is yesterday in UTC, and the next day in UTC+1.
    late = datetime.combine(now.date() - timedelta(days=1), dt_time(23, 30), UTC)
    times = [now, late, now - timedelta(days=2), now - timedelta(days=90)]
    items = [
        {"prompt": text, "provider": provider, "created_at": at.isoformat()}
        for text, provider, at in zip("abcd", PROVIDERS, times, strict=True)
    ]
    saved = await api.post("/memories/batch", json={"items": items}, headers=auth)
    assert saved.json()["stored"] == 4, saved.text
    utc = (await api.get("/memories/stats", params={"days": 3}, headers=auth)).json()
    assert utc["total"] == 4
    assert utc["providers"] == [
        {"provider": "claude", "count": 3},
        {"provider": "gemini", "count": 1},
    ]
    today = now.date()
    days = [str(today - timedelta(days=n)) for n in (2, 1, 0)]
    assert utc["per_day"] == [
        {"day": days[0], "count": 1},
        {"day": days[1], "count": 1},
        {"day": days[2], "count": 1},
    ]
    east = await api.get("/memories/stats", params={"days": 3, "utc_offset": 60}, headers=auth)
    local_today = (now + timedelta(hours=1)).date()
    local_days = [local_today - timedelta(days=n) for n in (2, 1, 0)]
    local = [(at + timedelta(hours=1)).date() for at in times]
    assert east.json()["per_day"] == [
        {"day": str(day), "count": local.count(day)} for day in local_days
    ]
    assert sum(d["count"] for d in east.json()["per_day"]) == 3
    refused = await api.get("/memories/stats", params={"days": 400}, headers=auth)
    assert refused.status_code == 422


async def _export_held_open(gw: Gateway, token: str) -> asyncio.StreamWriter:
    """An export whose reader takes the headers and then reads nothing: once the socket
    buffers are full the gateway's stream waits, still running."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = gw.url.removeprefix("http://").split(":")
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    request = f"GET /export HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
    writer.write(request.encode())
    status = await reader.readline()
    assert status.startswith(b"HTTP/1.1 200"), status
    return writer


async def test_a_third_concurrent_export_of_one_user_is_429(
    start_gateway: StartGateway, keys: Keys, api: httpx.AsyncClient
) -> None:
    gw = await start_gateway(exports_per_user=2)
    token = keys.es256(new_user())
    # About 4 MB of export (labels cost no embedding), far more than socket buffers hold.
    labels = {f"label{n}": "x" * 500 for n in range(32)}
    for start in (0, 120):
        items = [
            {"prompt": f"export item {n}", "message_id": f"x{n}", "metadata": labels}
            for n in range(start, start + 120)
        ]
        saved = await api.post("/memories/batch", json={"items": items}, headers=bearer(token))
        assert saved.json()["stored"] == 120, saved.text
    held = [await _export_held_open(gw, token) for _ in range(2)]
    async with gw.client() as client:
        third = await client.get("/export", headers=bearer(token))
        other_user = await client.get("/export", headers=bearer(keys.es256(new_user())))
        assert third.status_code == 429
        assert third.json() == {"detail": TOO_MANY_EXPORTS}
        assert int(third.headers["Retry-After"]) >= 1
        assert other_user.status_code == 200
        for writer in held:
            writer.close()
        # The exports whose clients left give their places back.
        for _ in range(100):
            again = await client.get("/export", headers=bearer(token))
            if again.status_code != 429:
                break
            await asyncio.sleep(0.1)
    assert again.status_code == 200
    assert len(again.text.splitlines()) == 240


async def test_extension_flow_with_idempotent_saves_context_and_export(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    user = new_user()
    headers = bearer(keys.es256(user))
    body = {
        "user_id": user,
        "prompt": "How do I configure pnpm workspaces for a monorepo?",
        "provider": "ChatGPT",
        "conversation_id": "conv-1",
        "message_id": "msg-1",
        "url": "https://chatgpt.com/c/conv-1",
    }
    first = await api.post("/save-prompt", json=body, headers=headers)
    retried = await api.post("/save-prompt", json=body, headers=headers)
    assert first.status_code == retried.status_code == 200
    assert retried.json() == first.json()
    prompt = first.json()
    assert (prompt["user_id"], prompt["provider"], prompt["kind"]) == (user, "chatgpt", "prompt")

    keyed = {"prompt": "What is the capital of Australia?", "provider": "claude"}
    k1 = await api.post("/save-prompt", json=keyed, headers={**headers, "Idempotency-Key": "k-1"})
    k2 = await api.post("/save-prompt", json=keyed, headers={**headers, "Idempotency-Key": "k-1"})
    assert k1.json()["id"] == k2.json()["id"]

    answer = await api.post(
        "/save-response",
        json={
            "response": "Add a pnpm-workspace.yaml listing the packages directories.",
            "message_id": "msg-1",
            "provider": "chatgpt",
            "user_id": user,
        },
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["prompt_id"] == prompt["id"]
    linked = await api.get(f"/memories/{prompt['id']}", headers=headers)
    assert linked.json()["response_id"] == answer.json()["id"]

    found = await api.post(
        "/search", json={"query": "pnpm workspace monorepo", "top_k": 2}, headers=headers
    )
    assert found.status_code == 200
    ids = [r["id"] for r in found.json()["results"]]
    assert prompt["id"] in ids and k1.json()["id"] not in ids
    assert all(isinstance(r["score"], float) for r in found.json()["results"])
    assert all("contributions" not in r for r in found.json()["results"])
    explained = await api.post(
        "/search",
        json={"query": "pnpm workspace monorepo", "top_k": 2, "explain": True},
        headers=headers,
    )
    results = explained.json()["results"]
    assert [r["id"] for r in results] == ids
    # Each result's parts, summed, stand to the top's as its score to the top's.
    totals = [sum(r["contributions"].values()) for r in results]
    parts = {r["id"]: r["contributions"] for r in results}
    # The prompt holds the query's words; its answer gains from the question it answers.
    assert parts[prompt["id"]]["keyword"] > 0
    assert parts[answer.json()["id"]]["answer"] > 0
    for result, total in zip(results, totals, strict=True):
        assert result["score"] == pytest.approx(results[0]["score"] * total / totals[0], rel=1e-4)
    keyword = await api.post(
        "/search",
        json={"query": "Australia", "mode": "keyword", "filters": {"providers": ["claude"]}},
        headers=headers,
    )
    assert [r["id"] for r in keyword.json()["results"]] == [k1.json()["id"]]

    context = await api.post(
        "/context",
        json={"prompt": "pnpm monorepo setup", "top_k": 3, "max_tokens": 60},
        headers=headers,
    )
    assert context.status_code == 200
    block = context.json()
    assert len(block["context"]) <= 60 * 4
    assert block["approx_tokens"] <= 60
    assert block["memories"] and block["memories"][0]["id"] in (prompt["id"], answer.json()["id"])

    export = await api.get("/export", headers=headers)
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert {m["id"] for m in lines} == {prompt["id"], k1.json()["id"], answer.json()["id"]}

    outsider = bearer(keys.es256(new_user()))
    assert (await api.get(f"/memories/{prompt['id']}", headers=outsider)).status_code == 404
    assert (await api.delete(f"/memories/{prompt['id']}", headers=outsider)).status_code == 404
    assert (await api.get("/export", headers=outsider)).text == ""

    assert (await api.delete(f"/memories/{k1.json()['id']}", headers=headers)).status_code == 204
    assert (await api.get(f"/memories/{k1.json()['id']}", headers=headers)).status_code == 404
    assert (await api.get("/memories/not-a-uuid", headers=headers)).status_code == 404
    assert (await api.delete("/memories", headers=headers)).json() == {"deleted": 2}


async def test_the_same_text_saved_twice_is_one_memory_in_search_and_context(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    headers = bearer(keys.es256(new_user()))
    text = "Remind me: the storage unit code is 4471 and the unit is number 12."
    first = await api.post("/save-prompt", json={"prompt": text}, headers=headers)
    # Another tab captures it again, with different case, spacing and Unicode form.
    again = await api.post(
        "/save-prompt",
        json={"prompt": "  remind me:  the STORAGE unit code is 4471 and the unit is number 12. "},
        headers=headers,
    )
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["text"] == text
    # Re-sent with message ids of its own: kept as the client's, but returned once.
    for message_id in ("resend-1", "resend-2"):
        resent = await api.post(
            "/save-prompt", json={"prompt": text, "message_id": message_id}, headers=headers
        )
        assert resent.status_code == 200
    await api.post("/save-prompt", json={"prompt": "The gym opens at 6am."}, headers=headers)

    for mode in ("hybrid", "semantic", "keyword"):
        found = await api.post(
            "/search",
            json={"query": "storage unit code", "top_k": 5, "mode": mode},
            headers=headers,
        )
        texts = [r["text"] for r in found.json()["results"]]
        assert sum(t.lower().split() == text.lower().split() for t in texts) == 1, mode
    context = await api.post(
        "/context", json={"prompt": "what is my storage unit code?", "top_k": 5}, headers=headers
    )
    used = [m["text"] for m in context.json()["memories"]]
    assert used and used[0] == text
    assert sum(t == text for t in used) == 1
    assert context.json()["context"].count("4471") == 1


# --- downstream failure -----------------------------------------------------------------


async def test_memory_service_down_gives_503_and_the_gateway_recovers_by_itself(
    start_gateway: StartGateway, keys: Keys, embedder: Embedder, tmp_path: Path
) -> None:
    port = free_port()
    memory = await start_memory(embedder, tmp_path / "data", port)
    gw = await start_gateway(memory_port=port)
    headers = bearer(keys.es256(new_user()))
    async with gw.client() as client:
        saved = await client.post("/save-prompt", json={"prompt": "before"}, headers=headers)
        assert saved.status_code == 200
        ready = await client.get("/readyz")
        assert ready.json() == {"status": "ready", "memory": "serving", "chat": "not configured"}

        await memory.stop(0)
        for method, path, body in (
            ("POST", "/save-prompt", {"prompt": "during"}),
            ("POST", "/search", {"query": "before"}),
            ("GET", "/memories", None),
        ):
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 503, (path, response.text)
            assert int(response.headers["retry-after"]) >= 1
            assert response.json() == {"detail": "Service unavailable, retry later"}
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/healthz")).json() == {"status": "ok"}

        memory = await start_memory(embedder, tmp_path / "data", port)
        try:
            deadline = time.monotonic() + 20
            while True:
                response = await client.post("/search", json={"query": "before"}, headers=headers)
                if response.status_code == 200 or time.monotonic() > deadline:
                    break
                assert response.status_code == 503
                await asyncio.sleep(0.25)
            assert response.status_code == 200
            assert [r["text"] for r in response.json()["results"]] == ["before"]
        finally:
            await memory.stop(0)


async def test_probes_and_docs_need_no_token_and_metrics_are_not_on_the_api_port(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.json() == {"status": "ready", "memory": "serving", "chat": "not configured"}
    assert (await api.get("/metrics")).status_code == 401
    signed_in = await api.get("/metrics", headers=bearer(keys.es256("alice")))
    assert signed_in.status_code == 404
    spec = (await api.get("/openapi.json")).json()
    assert set(spec["paths"]) == {
        "/save-prompt",
        "/save-response",
        "/memories/batch",
        "/search",
        "/context",
        "/chat",
        "/chat/stream",
        "/memories",
        "/memories/stats",
        "/memories/{memory_id}",
        "/export",
        "/admin/stats",
        "/admin/users/{user_id}",
        "/keys",
        "/keys/{key_id}",
        "/healthz",
        "/readyz",
        "/limits",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    }
    schemes = spec["components"]["securitySchemes"]
    assert {name: (s["type"], s["scheme"]) for name, s in schemes.items()} == {
        "SupabaseBearer": ("http", "bearer")
    }
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            public = path in ("/healthz", "/readyz", "/limits") or path.startswith("/.well-known/")
            expected = [] if public else [{"SupabaseBearer": []}]
            assert operation.get("security", []) == expected, (method, path)
    assert (await api.get("/docs")).status_code == 200
