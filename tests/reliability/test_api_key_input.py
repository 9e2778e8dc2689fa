"""Hostile API keys through the real stack (memory_service with the embedded store on a
private loop, the gateway on uvicorn): malformed, truncated, altered, never issued, expired
and revoked keys all get the one 401 body a bad JWT gets, never a 5xx; a malformed key costs
no lookup, an unknown one costs exactly the one lookup a revoked one costs."""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api_keys import KeyResolver, new_key
from gateway.auth import UNAUTHORIZED_DETAIL
from memory_service.server import MemoryServer
from tests.support.auth import memory_rpcs
from tests.support.reliability import bearer, gateway_settings
from tests.support.stack import (
    GatewayServer,
    LoopThread,
    start_memory_in_process,
    stop_memory_in_process,
)

UNAUTHORIZED = (401, {"detail": UNAUTHORIZED_DETAIL})
URL_SAFE = string.ascii_letters + string.digits + "-_"


@dataclass
class Stack:
    loop: LoopThread
    memory: MemoryServer
    gateway: GatewayServer

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.gateway.url, timeout=60.0)

    @property
    def resolver(self) -> KeyResolver:
        resolver: KeyResolver = self.gateway.gateway.server.config.app.state.key_resolver
        return resolver


@pytest.fixture(scope="module")
def stack(encoder: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    loop = LoopThread()
    memory, embedder = start_memory_in_process(
        loop, encoder, Path(tmp_path_factory.mktemp("key-input"))
    )
    gateway = GatewayServer(loop, gateway_settings(memory.port)).start()
    yield Stack(loop, memory, gateway)
    gateway.stop()
    stop_memory_in_process(loop, memory, embedder)
    loop.close()


def _status(response: httpx.Response) -> tuple[int, Any]:
    return response.status_code, response.json()


def _key(client: httpx.Client, user: str, **body: Any) -> dict[str, Any]:
    created = client.post("/keys", json={"name": "test", **body}, headers=bearer(user))
    assert created.status_code == 201, created.text
    return dict(created.json())


def _search(client: httpx.Client, key: str | bytes) -> httpx.Response:
    raw = key if isinstance(key, bytes) else key.encode("latin-1")
    # A header value cannot end in whitespace on the wire.
    header = (b"Bearer " + raw).rstrip(b" \t")
    return client.post("/search", json={"query": "q"}, headers={"Authorization": header})


def test_malformed_truncated_and_altered_keys(stack: Stack) -> None:
    with stack.client() as client:
        key = _key(client, "hostile-owner")["key"]
        assert _search(client, key).status_code == 200
        altered = key[:-1] + ("A" if key[-1] != "A" else "B")
        cases = [
            "mlk_",
            "mlk_" + "A" * 42,
            "mlk_" + "A" * 44,
            "mlk_" + "A" * 4000,
            "mlk_" + "+" * 43,
            "mlk_" + "=" * 43,
            key[:-1],
            key[:12],
            key + "A",
            key + ".x.y",
            altered,
            key.upper(),
            "MLK_" + key[4:],
            "mlk-" + key[4:],
            key.replace("mlk_", "mlk_mlk_"),
        ]
        for case in cases:
            assert _status(_search(client, case)) == UNAUTHORIZED, case
        for raw in [b"mlk_\xff" * 11, b"mlk_" + bytes(range(0x80, 0xAB)), b"mlk_\t\x7e"]:
            assert _search(client, raw).status_code == 401
        # The real key still works after all of that.
        assert _search(client, key).status_code == 200


def test_never_issued_and_revoked_keys_cost_the_same_one_lookup(stack: Stack) -> None:
    with stack.client() as client:
        made = _key(client, "hostile-revoker")
        deleted = client.delete(f"/keys/{made['id']}", headers=bearer("hostile-revoker"))
        assert deleted.status_code == 204
        for key in (new_key().key, made["key"]):
            before = memory_rpcs()
            assert _status(_search(client, key)) == UNAUTHORIZED
            assert memory_rpcs() - before == 1
        malformed_before = memory_rpcs()
        assert _status(_search(client, "mlk_short")) == UNAUTHORIZED
        assert memory_rpcs() == malformed_before


def test_expired_keys(stack: Stack) -> None:
    with stack.client() as client:
        used = _key(client, "hostile-expiry", expires_in_days=1)["key"]
        unused = _key(client, "hostile-expiry", expires_in_days=1)["key"]
        assert _search(client, used).status_code == 200
        keys = stack.memory.servicer.keys
        resolver = stack.resolver
        real_clock, real_wall_clock = keys.clock, resolver.wall_clock
        later = real_clock() + timedelta(days=1, minutes=1)
        keys.clock = lambda: later
        try:
            # Never seen by this gateway: memory_service finds it expired.
            assert _status(_search(client, unused)) == UNAUTHORIZED
            # Still in the gateway's cache: the gateway sees its expiry itself.
            resolver.wall_clock = lambda: later.timestamp()
            assert _status(_search(client, used)) == UNAUTHORIZED
        finally:
            keys.clock, resolver.wall_clock = real_clock, real_wall_clock
        listed = client.get("/keys", headers=bearer("hostile-expiry")).json()["keys"]
        assert all(datetime.fromisoformat(k["expires_at"]) < later for k in listed)


def _header_safe(raw: bytes) -> str:
    """What an HTTP client can put in a header: tab, visible ASCII and bytes 0x80-0xff."""
    return bytes(c for c in raw if c == 9 or 0x20 <= c <= 0x7E or c >= 0x80).decode("latin-1")


@given(
    tail=st.one_of(
        st.text(alphabet=URL_SAFE, max_size=80),
        st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200),
        st.binary(max_size=100).map(_header_safe),
    ),
    prefix=st.sampled_from(["mlk_", "mlk", "MLK_", "", "mlk_mlk_"]),
)
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_any_key_string_gets_the_one_401(stack: Stack, prefix: str, tail: str) -> None:
    with stack.client() as client:
        response = _search(client, prefix + tail)
        # Only a string the header parser strips to nothing reads as no credentials at all.
        assert _status(response) == UNAUTHORIZED
