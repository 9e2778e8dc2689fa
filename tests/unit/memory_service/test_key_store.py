"""The API key store: one suite run against both adapters (a file beside the embedded store,
a payload-only collection through qdrant-client's in-memory mode standing in for a server),
the per-user limit under concurrent adds (two server replicas over REST to one Qdrant), and
the domain rules on top of it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient

from memory_service.api_keys import ApiKeys
from memory_service.store.keys import KeyRecord, KeyStore, TooManyKeysError
from memory_service.store.keys.embedded import EmbeddedKeyStore
from memory_service.store.keys.server import ServerKeyStore
from service_kit.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from service_kit.identity import Identity
from tests.support.qdrant_stand_in import QdrantStandIn

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
GATEWAY = Identity("gateway-key-resolver", is_admin=True)


def digest(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def record(user: str, name: str, **changes: object) -> KeyRecord:
    values: dict[str, object] = {
        "id": f"{user}-{name}",
        "user_id": user,
        "name": name,
        "prefix": "mlk_abcdefgh",
        "key_hash": digest(f"{user}/{name}"),
        "scopes": ("read", "write"),
        "created_at": NOW,
    }
    values.update(changes)
    return KeyRecord(**values)  # type: ignore[arg-type]


@pytest.fixture(params=["embedded", "server"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyStore]:
    made: KeyStore
    if request.param == "embedded":
        made = EmbeddedKeyStore(tmp_path)
    else:
        client = AsyncQdrantClient(location=":memory:")
        made = ServerKeyStore(client, "test_api_keys")
    await made.open()
    yield made
    await made.close()


async def test_add_find_list_remove(store: KeyStore) -> None:
    first = record("alice", "laptop")
    second = record("alice", "phone", created_at=NOW + timedelta(1))
    other = record("bob", "laptop")
    for each in (second, first, other):
        await store.add(each, max_live=50, now=NOW)
    assert await store.find(first.key_hash) == first
    assert await store.find(digest("never issued")) is None
    assert await store.list("alice") == [first, second]
    assert await store.list("nobody") == []
    assert not await store.remove("bob", first.id)
    assert await store.remove("alice", first.id)
    assert await store.find(first.key_hash) is None
    assert await store.list("alice") == [second]
    assert await store.find(other.key_hash) == other


async def test_live_key_limit_ignores_expired_keys(store: KeyStore) -> None:
    await store.add(record("carol", "old", expires_at=NOW - timedelta(1)), max_live=2, now=NOW)
    await store.add(record("carol", "a", expires_at=NOW + timedelta(1)), max_live=2, now=NOW)
    await store.add(record("carol", "b"), max_live=2, now=NOW)
    with pytest.raises(TooManyKeysError):
        await store.add(record("carol", "c"), max_live=2, now=NOW)
    # Another user's count is their own.
    await store.add(record("dave", "a"), max_live=2, now=NOW)


@pytest.fixture(params=["embedded", "server-rest-replicas"])
async def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[KeyStore]]:
    """The stores that serve one set of keys: the embedded file (one process holds it), or two
    server adapters, as two memory_service replicas, over REST to one Qdrant."""
    if request.param == "embedded":
        made: list[KeyStore] = [EmbeddedKeyStore(tmp_path)]
        stand_in = None
    else:
        stand_in = QdrantStandIn().start()
        clients = [AsyncQdrantClient(url=stand_in.url, prefer_grpc=False) for _ in range(2)]
        made = [ServerKeyStore(client, "test_api_keys", timeout=30.0) for client in clients]
    for each in made:
        await each.open()
    yield made
    for each in made:
        await each.close()
        if isinstance(each, ServerKeyStore):
            await each.client.close()
    if stand_in is not None:
        stand_in.stop()


async def test_concurrent_adds_never_pass_the_live_key_limit(replicas: list[KeyStore]) -> None:
    for i in range(45):
        await replicas[0].add(record("judy", f"old {i}"), max_live=50, now=NOW)

    async def add(i: int) -> bool:
        try:
            await replicas[i % len(replicas)].add(record("judy", f"new {i}"), max_live=50, now=NOW)
        except TooManyKeysError:
            return False
        return True

    added = await asyncio.gather(*(add(i) for i in range(20)))
    assert added.count(True) == 5 and added.count(False) == 15
    for store in replicas:
        assert len(await store.list("judy")) == 50
    # The limit is the user's own, and a revoked key's place is free again.
    await replicas[-1].add(record("kim", "a"), max_live=50, now=NOW)
    assert await replicas[-1].remove("judy", "judy-old 0")
    await replicas[-1].add(record("judy", "after"), max_live=50, now=NOW)


async def test_touch_and_remove_user(store: KeyStore) -> None:
    key = record("erin", "laptop")
    await store.add(key, max_live=50, now=NOW)
    await store.add(record("erin", "phone"), max_live=50, now=NOW)
    await store.add(record("frank", "laptop"), max_live=50, now=NOW)
    await store.touch(key, NOW + timedelta(minutes=3))
    found = await store.find(key.key_hash)
    assert found is not None and found.last_used_at == NOW + timedelta(minutes=3)
    assert await store.remove_user("erin") == 2
    assert await store.list("erin") == []
    assert await store.remove_user("erin") == 0
    assert len(await store.list("frank")) == 1


async def test_the_embedded_file_survives_a_reopen_and_holds_no_key(tmp_path: Path) -> None:
    store = EmbeddedKeyStore(tmp_path)
    await store.open()
    key = record("gina", "laptop", expires_at=NOW + timedelta(days=30))
    await store.add(key, max_live=50, now=NOW)
    reopened = EmbeddedKeyStore(tmp_path)
    await reopened.open()
    assert await reopened.find(key.key_hash) == key
    path = tmp_path / "api_keys.json"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["keys"][0]["key_hash"] == key.key_hash.hex()
    assert [p.name for p in tmp_path.iterdir()] == ["api_keys.json"]


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


async def test_resolve_records_last_use_at_most_once_a_minute(tmp_path: Path) -> None:
    store = EmbeddedKeyStore(tmp_path)
    await store.open()
    clock = Clock()
    keys = ApiKeys(store, clock)
    alice = Identity("alice")
    made = await keys.create(
        alice,
        name="laptop",
        key_hash=digest("k"),
        prefix="mlk_abcdefgh",
        scopes=["write", "read"],
        expires_at=None,
    )
    assert made.scopes == ("read", "write")
    clock.now = NOW + timedelta(seconds=30)
    await keys.resolve(GATEWAY, digest("k"))
    [listed] = await keys.list(alice)
    assert listed.last_used_at == NOW
    clock.now = NOW + timedelta(seconds=50)
    await keys.resolve(GATEWAY, digest("k"))
    assert (await keys.list(alice))[0].last_used_at == NOW
    clock.now = NOW + timedelta(minutes=1, seconds=10)
    await keys.resolve(GATEWAY, digest("k"))
    assert (await keys.list(alice))[0].last_used_at == NOW + timedelta(minutes=1)

    with pytest.raises(PermissionDeniedError):
        await keys.resolve(alice, digest("k"))
    with pytest.raises(NotFoundError):
        await keys.resolve(GATEWAY, digest("unknown"))
    with pytest.raises(NotFoundError):
        await keys.resolve(GATEWAY, b"short")
    with pytest.raises(PermissionDeniedError):
        await keys.delete_user(alice, "alice")
    with pytest.raises(NotFoundError):
        await keys.revoke(Identity("bob"), made.id)


async def test_expired_keys_do_not_resolve(tmp_path: Path) -> None:
    store = EmbeddedKeyStore(tmp_path)
    await store.open()
    clock = Clock()
    keys = ApiKeys(store, clock)
    await keys.create(
        Identity("hal"),
        name="soon",
        key_hash=digest("s"),
        prefix="mlk_abcdefgh",
        scopes=["read"],
        expires_at=NOW + timedelta(days=1),
    )
    assert (await keys.resolve(GATEWAY, digest("s"))).user_id == "hal"
    clock.now = NOW + timedelta(days=1)
    with pytest.raises(NotFoundError):
        await keys.resolve(GATEWAY, digest("s"))


@pytest.mark.parametrize(
    "changes",
    [
        {"name": ""},
        {"name": "x" * 101},
        {"name": "line\nbreak"},
        {"key_hash": b"short"},
        {"prefix": "abc"},
        {"scopes": []},
        {"scopes": ["admin"]},
        {"expires_at": NOW},
        {"expires_at": NOW + timedelta(days=3660)},
    ],
)
async def test_create_checks_its_input_again(tmp_path: Path, changes: dict[str, object]) -> None:
    store = EmbeddedKeyStore(tmp_path)
    await store.open()
    keys = ApiKeys(store, Clock())
    values: dict[str, object] = {
        "name": "ok",
        "key_hash": digest("v"),
        "prefix": "mlk_abcdefgh",
        "scopes": ["read"],
        "expires_at": None,
    }
    values.update(changes)
    with pytest.raises(InvalidArgumentError):
        await keys.create(Identity("ivy"), **values)  # type: ignore[arg-type]
    assert await store.list("ivy") == []
