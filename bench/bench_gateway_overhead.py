"""What the gateway costs on top of memory_service, measured against direct gRPC in one run.

memory_service and the gateway run as child processes on loopback (`python -m ...`), the
gateway with rate limits out of the way. The same work is sent two ways, interleaved so
noise on a shared machine hits both:

- `/search` latency, one request at a time: HTTP through the gateway vs the same Search RPC
  straight to memory_service, sent back to back for each query.
  Target: p50(gateway) / p50(gRPC) <= 1.3.
- The same `/search` requests through the gateway with an API key (`mlk_...`) instead of a
  JWT, interleaved with the two above. Target: p50(key) / p50(JWT) <= 1.1.
- Saves per second with 32 concurrent clients: POST /save-prompt vs SaveMemory over gRPC,
  back to back in each round, first side alternating; the ratio is the median of the
  per-round ratios. Rounds are long enough (640 saves a side) that the ramp-up and the
  tail, when fewer than 32 requests are left in flight, are a small part of each.
  Target: saves/s(gateway) / saves/s(gRPC) >= 0.8.

Both clients run in this process, on the same cores as the services, so each should cost
as little CPU as it can: grpcio's C core on one side, aiohttp on the other (httpx measured
about 2 ms of CPU per request here, more than the gateway spends on it).

    python bench/bench_gateway_overhead.py
    python bench/bench_gateway_overhead.py --memories 300 --queries 40 --saves 80 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
from service_process import NO_RATE_LIMITS, ProcessStack

from gateway.tokens import mint_token
from protos.memory.v1 import memory_pb2 as pb
from protos.memory.v1 import memory_pb2_grpc
from service_kit.identity import Identity, outgoing_metadata

SERVICE_TOKEN = "bench-gateway-service-token"  # noqa: S105 - a throwaway local stack
JWT_SECRET = "bench-gateway-jwt-secret-0123456789abcdef"  # noqa: S105
ISSUER = "memory-layer-bench"
TARGET_SEARCH_RATIO = 1.3
TARGET_SAVE_RATIO = 0.8
TARGET_KEY_RATIO = 1.1

WORDS = (  # noqa: SIM905
    "python script csv parse react component render sql query join orders kubernetes deploy "
    "bash loop files sourdough starter vegetarian dinner resume data engineer cover letter "
    "tcp udp photosynthesis revolution workout marathon landlord deposit birthday mystery "
    "lisbon rust borrow checker mortgage interest budget bakery terraform bucket email chess "
    "castling server shutdown fractions candles kanji regex tomato dockerfile podcast haiku "
    "gdpr kyoto asyncio statistics gradient salary wedding pandas burnout typescript config"
).split()


# Texts stay under the model window (in characters) so every save is one chunk: the
# figures compare the hop, not chunking.
MAX_TEXT_CHARS = 250


def texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    made = []
    for _ in range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30)))
        made.append(words[: MAX_TEXT_CHARS - 1].capitalize() + "?")
    return made


@contextlib.asynccontextmanager
async def gateway_stack(
    data_dir: Path, memory: dict[str, str] | None = None
) -> AsyncIterator[tuple[str, str]]:
    """memory_service (embedded store under data_dir) and the gateway as child processes on
    free ports, limits out of the way; yields their addresses once both are ready. `memory`:
    MEMORY_* settings for memory_service over those this process has. If anything fails, the
    tails of their logs go to stderr."""
    stack = ProcessStack(
        data_dir / "memory",
        jwt_secret=JWT_SECRET,
        issuer=ISSUER,
        service_token=SERVICE_TOKEN,
        memory={"MEMORY_LOG_LEVEL": "WARNING", **(memory or {})},
        gateway={"GATEWAY_LOG_LEVEL": "WARNING", **NO_RATE_LIMITS},
        log_dir=data_dir,
        inherit_settings=True,
    )
    try:
        await stack.start_async()
        yield stack.memory_addr, stack.url
    except BaseException:
        print(stack.log_tails(), file=sys.stderr)
        raise
    finally:
        stack.stop()


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def bench(args: argparse.Namespace, data_dir: Path) -> None:
    async with gateway_stack(data_dir) as (memory_addr, gateway_url):
        await measure(args, memory_addr, gateway_url)


async def measure(args: argparse.Namespace, memory_addr: str, gateway_url: str) -> None:
    users = [f"bench-user-{i}" for i in range(args.users)]
    tokens = {user: mint_token(JWT_SECRET, user, issuer=ISSUER) for user in users}
    # Idle connections are dropped by the client before the gateway would close them.
    connector = aiohttp.TCPConnector(limit=args.concurrency, keepalive_timeout=30)
    async with (
        grpc.aio.insecure_channel(memory_addr) as channel,
        aiohttp.ClientSession(
            base_url=gateway_url, connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        ) as http,
    ):
        stub = memory_pb2_grpc.MemoryServiceStub(channel)

        def md(user: str) -> tuple[tuple[str, str], ...]:
            return outgoing_metadata(Identity(user), SERVICE_TOKEN)

        def auth(user: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {tokens[user]}"}

        async def grpc_save(user: str, text: str) -> None:
            await stub.SaveMemory(pb.SaveMemoryRequest(text=text), metadata=md(user), timeout=60)

        async def http_save(user: str, text: str) -> None:
            body = {"prompt": text}
            async with http.post("/save-prompt", json=body, headers=auth(user)) as response:
                response.raise_for_status()
                await response.read()

        async def grpc_search(user: str, query: str) -> None:
            request = pb.SearchRequest(query=query, top_k=10, mode=pb.SEARCH_MODE_HYBRID)
            await stub.Search(request, metadata=md(user), timeout=30)

        async def http_search(user: str, query: str) -> None:
            body = {"query": query, "top_k": 10, "mode": "hybrid"}
            async with http.post("/search", json=body, headers=auth(user)) as response:
                response.raise_for_status()
                await response.read()

        api_keys: dict[str, str] = {}
        for user in users:
            body = {"name": "bench", "scopes": ["read"]}
            async with http.post("/keys", json=body, headers=auth(user)) as response:
                response.raise_for_status()
                api_keys[user] = (await response.json())["key"]

        async def key_search(user: str, query: str) -> None:
            body = {"query": query, "top_k": 10, "mode": "hybrid"}
            headers = {"Authorization": f"Bearer {api_keys[user]}"}
            async with http.post("/search", json=body, headers=headers) as response:
                response.raise_for_status()
                await response.read()

        print(f"seeding {args.memories} memories across {args.users} users over gRPC…")
        seed = texts(args.memories, seed=1)
        await run_concurrently(
            [(users[i % len(users)], text) for i, text in enumerate(seed)], grpc_save, 32
        )

        rng = random.Random(5)
        queries = [(rng.choice(users), q) for q in texts(args.queries, seed=2)]
        for user, query in queries[:20]:
            await grpc_search(user, query)
            await http_search(user, query)
            await key_search(user, query)
        direct: list[float] = []
        through: list[float] = []
        with_key: list[float] = []
        sides = [(direct, grpc_search), (through, http_search), (with_key, key_search)]
        for i, (user, query) in enumerate(queries * args.rounds):
            # Back to back, first side rotating: a noisy neighbour hits all alike.
            shift = i % len(sides)
            for samples, call in sides[shift:] + sides[:shift]:
                started = time.perf_counter()
                await call(user, query)
                samples.append(time.perf_counter() - started)

        save_rates: dict[str, list[float]] = {"grpc": [], "gateway": []}
        round_ratios = []
        save_sides = [("grpc", grpc_save), ("gateway", http_save)]
        for round_no in range(args.rounds):
            for name, call in save_sides if round_no % 2 else save_sides[::-1]:
                batch = texts(args.saves, seed=100 + 2 * round_no + (name == "gateway"))
                work = [(users[i % len(users)], t) for i, t in enumerate(batch)]
                started = time.perf_counter()
                await run_concurrently(work, call, args.concurrency)
                save_rates[name].append(len(work) / (time.perf_counter() - started))
            # A ratio per round, of two runs back to back, cancels slow drifts in load.
            round_ratios.append(save_rates["gateway"][-1] / save_rates["grpc"][-1])

    search_ratio = p50_ms(through) / p50_ms(direct)
    grpc_rate = statistics.median(save_rates["grpc"])
    gateway_rate = statistics.median(save_rates["gateway"])
    save_ratio = statistics.median(round_ratios)
    print(f"\n/search p50 over {len(direct)} queries per side ({args.memories} memories):")
    print(f"  direct gRPC      {p50_ms(direct):7.2f} ms")
    print(f"  through gateway  {p50_ms(through):7.2f} ms")
    verdict = "meets" if search_ratio <= TARGET_SEARCH_RATIO else "MISSES"
    print(f"  ratio            {search_ratio:7.2f}x  ({verdict} target <= {TARGET_SEARCH_RATIO}x)")
    key_ratio = p50_ms(with_key) / p50_ms(through)
    print(f"  gateway, API key {p50_ms(with_key):7.2f} ms")
    verdict = "meets" if key_ratio <= TARGET_KEY_RATIO else "MISSES"
    print(f"  key / JWT        {key_ratio:7.2f}x  ({verdict} target <= {TARGET_KEY_RATIO}x)")
    print(f"\nsaves/s, {args.concurrency} concurrent clients, {args.saves} per side per round:")
    rounds = ", ".join(f"{r:.1f}" for r in save_rates["grpc"])
    print(f"  direct gRPC      {grpc_rate:7.1f}   (rounds: {rounds})")
    rounds = ", ".join(f"{r:.1f}" for r in save_rates["gateway"])
    print(f"  through gateway  {gateway_rate:7.1f}   (rounds: {rounds})")
    verdict = "meets" if save_ratio >= TARGET_SAVE_RATIO else "MISSES"
    print(
        f"  ratio            {save_ratio:7.2f}x  (median of per-round ratios; "
        f"{verdict} target >= {TARGET_SAVE_RATIO}x)"
    )


async def run_concurrently(work: list[tuple[str, str]], call, concurrency: int) -> None:  # type: ignore[no-untyped-def]
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            user, text = queue.get_nowait()
            await call(user, text)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=1000)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--queries", type=int, default=80)
    parser.add_argument("--saves", type=int, default=640, help="saves per side per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    main()
