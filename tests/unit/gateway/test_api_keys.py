"""The gateway's side of API keys: what a key looks like, and the resolver's short cache
(answers kept for its TTL, unknown keys too, one lookup for concurrent requests, revocation
through this replica at once)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from gateway.api_keys import KeyResolver, is_api_key, key_digest, new_key
from gateway.clients import MemoryClient
from protos.memory.v1 import memory_pb2 as pb
from protos.memory.v1 import memory_pb2_grpc


class MemoryStandIn(memory_pb2_grpc.MemoryServiceServicer):
    """Answers ResolveKey from a dict of hash -> owner, counting the calls."""

    def __init__(self, owners: dict[bytes, str]) -> None:
        self.owners = owners
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def ResolveKey(
        self, request: pb.ResolveKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApiKey:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        owner = self.owners.get(request.key_hash)
        if owner is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such API key")
        return pb.ApiKey(id=f"id-{owner}", user_id=owner, scopes=["read"])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_new_keys_are_random_prefixed_and_hashed() -> None:
    made = {new_key().key for _ in range(100)}
    assert len(made) == 100
    one = new_key()
    assert one.key.startswith("mlk_") and len(one.key) == 47
    assert one.prefix == one.key[:12]
    assert one.key_hash == key_digest(one.key) and len(one.key_hash) == 32
    assert is_api_key(one.key) and not is_api_key("eyJhbGciOi.x.y")


Resolvers = Callable[[dict[bytes, str]], Awaitable[tuple[KeyResolver, MemoryStandIn, Clock]]]


@pytest.fixture
async def make_resolver() -> AsyncIterator[Resolvers]:
    """A resolver whose MemoryClient calls a stand-in MemoryService on a loopback gRPC server."""
    servers: list[grpc.aio.Server] = []
    clients: list[MemoryClient] = []

    async def make(owners: dict[bytes, str]) -> tuple[KeyResolver, MemoryStandIn, Clock]:
        memory = MemoryStandIn(owners)
        server = grpc.aio.server()
        memory_pb2_grpc.add_MemoryServiceServicer_to_server(memory, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        clock = Clock()
        resolver = KeyResolver(ttl=2.0, clock=clock)
        resolver.memory = MemoryClient.connect(f"127.0.0.1:{port}", "token", timeout=10.0)
        clients.append(resolver.memory)
        return resolver, memory, clock

    yield make
    for client in clients:
        await client.close()
    for server in servers:
        await server.stop(None)


async def test_answers_are_kept_for_the_ttl_only(make_resolver: Resolvers) -> None:
    key = new_key()
    resolver, memory, clock = await make_resolver({key.key_hash: "alice"})
    grant = await resolver.resolve(key.key)
    assert grant is not None and grant.identity.user_id == "alice"
    assert grant.scopes == frozenset({"read"}) and not grant.identity.is_admin
    await resolver.resolve(key.key)
    assert memory.calls == 1
    # Revoked elsewhere: still served until the TTL runs out, then refused.
    del memory.owners[key.key_hash]
    clock.now += 1.9
    assert await resolver.resolve(key.key) is not None
    clock.now += 0.2
    assert await resolver.resolve(key.key) is None
    assert memory.calls == 2


async def test_unknown_keys_are_remembered_and_malformed_ones_never_looked_up(
    make_resolver: Resolvers,
) -> None:
    resolver, memory, _ = await make_resolver({})
    unknown = new_key().key
    assert await resolver.resolve(unknown) is None
    assert await resolver.resolve(unknown) is None
    assert memory.calls == 1
    for malformed in ("mlk_", "mlk_short", unknown + "x", unknown[:-1], "mlk_" + "!" * 43):
        assert await resolver.resolve(malformed) is None
    assert memory.calls == 1


async def test_concurrent_requests_share_one_lookup(make_resolver: Resolvers) -> None:
    key = new_key()
    resolver, memory, _ = await make_resolver({key.key_hash: "bob"})
    memory.gate = asyncio.Event()
    waiting = [asyncio.create_task(resolver.resolve(key.key)) for _ in range(20)]
    await asyncio.sleep(0.01)
    memory.gate.set()
    grants = await asyncio.gather(*waiting)
    assert {g.identity.user_id for g in grants if g is not None} == {"bob"}
    assert memory.calls == 1


@pytest.mark.parametrize("by", ["key_id", "user_id"])
async def test_forget_refuses_at_once_on_this_replica(by: str, make_resolver: Resolvers) -> None:
    key = new_key()
    resolver, memory, _ = await make_resolver({key.key_hash: "carol"})
    assert await resolver.resolve(key.key) is not None
    del memory.owners[key.key_hash]
    resolver.forget(**{by: "id-carol" if by == "key_id" else "carol"})
    assert await resolver.resolve(key.key) is None
