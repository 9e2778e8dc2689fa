"""Hybrid Search latency of memory_service over gRPC with 100,000 memories across 1,000 users.

The data dir is seeded straight through EdgeMemoryStore (see seed.py), then memory_service
runs on it as a child process and one client sends Search requests one after another, each
for a random user. The baseline is the same work in this process with nothing in between:
the service's encoder (ONNX Runtime) on the query + BM25 query vector +
EdgeMemoryStore.search on the same data dir, for the same (user, query) pairs. Service and
baseline alternate for --rounds rounds so that noise on a shared machine hits both.
Target: p50(service) / p50(baseline) <= 1.5.

The store keeps vectors and payloads on disk and pages them in when a search reads them, so
what a search costs depends on whether its user's data is in the OS page cache. --page-cache
warm reads the store's files once before each round, as a serving store's active users' data
is; cold takes them out of the cache before each round, and each search is then of a user no
search of that round read before (the default and BM25-only get users of their own), so every
search reads its user's data from disk.

The same service process also answers each query BM25-only (mode keyword), alternating
with the default so that load hits both: what the hybrid ranking costs over the cheapest
search there is. Target: p50(default) / p50(BM25-only) <= 1.5.

    python bench/bench_search_latency.py                      # 100k memories, 1k users
    python bench/bench_search_latency.py --memories 20000 --users 200 --queries 100
    python bench/bench_search_latency.py --data-dir /tmp/seeded   # keep the seeded dir
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import qdrant_edge
from corpus import query_texts
from encoders import service_encoder
from seed import SeedPlan, collection_spec, seed_data_dir, user_ids
from service_process import MemoryServiceProcess, call_metadata

from memory_service.models import SearchFilters, SearchMode, SparseVector
from memory_service.search import search_memories
from memory_service.store.embedded import EdgeMemoryStore
from protos.memory.v1 import memory_pb2 as pb

if TYPE_CHECKING:
    from memory_service.embedding.onnx_encoder import OnnxEncoder

TARGET_P50_RATIO = 1.5


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


SERVICE_MODES = {"default": pb.SEARCH_MODE_UNSPECIFIED, "keyword": pb.SEARCH_MODE_KEYWORD}


Pairs = list[tuple[str, str]]


def page_cache(data_dir: Path, state: str) -> None:
    """Puts the store's files in the OS page cache (warm) or takes them out of it (cold)."""
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        with path.open("rb") as file:
            if state == "warm":
                while file.read(1 << 20):
                    pass
            else:
                os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def round_pairs(
    rng: random.Random, users: list[str], queries: list[str], warmup: int, state: str
) -> dict[str, Pairs]:
    """Each mode's (user, query) pairs of one round, warm-up first: the same pairs for both
    when warm; when cold, users no other search of the round has."""
    asked = queries[:warmup] + queries
    if state == "warm":
        pairs = [(rng.choice(users), q) for q in asked]
        return {name: pairs for name in SERVICE_MODES}
    if len(users) < len(SERVICE_MODES) * len(asked):
        raise SystemExit(f"--page-cache cold needs {len(SERVICE_MODES) * len(asked)} users")
    fresh = rng.sample(users, len(SERVICE_MODES) * len(asked))
    return {
        name: list(zip(fresh[i * len(asked) :], asked, strict=False))
        for i, name in enumerate(SERVICE_MODES)
    }


async def service_latencies(
    data_dir: Path, pairs: dict[str, Pairs], top_k: int, warmup: int
) -> dict[str, list[float]]:
    """Each query searched the default way and BM25-only, in alternating order."""
    async with MemoryServiceProcess(data_dir) as service, service.channel() as channel:
        stub = service.stub(channel)

        async def search(user: str, query: str, mode: pb.SearchMode) -> int:
            request = pb.SearchRequest(query=query, top_k=top_k, mode=mode)
            reply = await stub.Search(request, metadata=call_metadata(user), timeout=30)
            return len(reply.results)

        for index in range(warmup):
            for name, mode in SERVICE_MODES.items():
                await search(*pairs[name][index], mode)
        latencies: dict[str, list[float]] = {name: [] for name in SERVICE_MODES}
        empty = 0
        measured = len(pairs["default"]) - warmup
        for index in range(warmup, warmup + measured):
            names = list(SERVICE_MODES) if index % 2 == 0 else list(reversed(SERVICE_MODES))
            for name in names:
                user, query = pairs[name][index]
                started = time.perf_counter()
                found = await search(user, query, SERVICE_MODES[name])
                latencies[name].append(time.perf_counter() - started)
                empty += name == "default" and found == 0
        if empty:
            print(f"  warning: {empty} of {measured} service searches found nothing")
        return latencies


async def baseline_latencies(
    data_dir: Path,
    model: OnnxEncoder,
    pairs: list[tuple[str, str]],
    top_k: int,
    warmup: int,
) -> list[float]:
    store = EdgeMemoryStore(data_dir, collection_spec(model))
    bm25 = qdrant_edge.Bm25()
    await store.open()
    try:

        async def search(user: str, query: str) -> int:
            (dense,) = model.encode([query], [True])
            vec = bm25.embed_query(query)
            results = await search_memories(
                store,
                user,
                dense=dense.tolist(),
                sparse=SparseVector(list(vec.indices), list(vec.values)),
                mode=SearchMode.HYBRID,
                filters=SearchFilters(),
                limit=top_k,
            )
            return len(results)

        for user, query in pairs[:warmup]:
            await search(user, query)
        latencies = []
        for user, query in pairs[warmup:]:
            started = time.perf_counter()
            await search(user, query)
            latencies.append(time.perf_counter() - started)
        return latencies
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--distinct-texts", type=int, default=3_000)
    parser.add_argument("--queries", type=int, default=300, help="measured queries per round")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--data-dir", type=Path, help="seed here and keep it (default: temp)")
    parser.add_argument(
        "--page-cache",
        choices=("warm", "cold"),
        default="warm",
        help="the store's files in the OS page cache before each round, or out of it",
    )
    args = parser.parse_args()

    model = service_encoder()
    plan = SeedPlan(memories=args.memories, users=args.users, distinct_texts=args.distinct_texts)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        print(f"seeding {plan.memories} memories for {plan.users} users into {data_dir} ...")
        seconds = seed_data_dir(data_dir, model, plan)
        print(f"  {'reused existing seed' if seconds == 0 else f'took {seconds:.0f}s'}")

        rng = random.Random(5)
        users = user_ids(plan.users)
        queries = query_texts(args.queries)
        service: list[float] = []
        keyword: list[float] = []
        baseline: list[float] = []
        round_ratios = []
        for r in range(args.rounds):
            pairs = round_pairs(rng, users, queries, args.warmup, args.page_cache)
            page_cache(data_dir, args.page_cache)
            measured = asyncio.run(service_latencies(data_dir, pairs, args.top_k, args.warmup))
            s, k = measured["default"], measured["keyword"]
            page_cache(data_dir, args.page_cache)
            b = asyncio.run(
                baseline_latencies(data_dir, model, pairs["default"], args.top_k, args.warmup)
            )
            service += s
            keyword += k
            baseline += b
            round_ratios.append(statistics.median(s) / statistics.median(b))
            print(
                f"  round {r + 1}: service p50 {statistics.median(s) * 1e3:.1f} ms, "
                f"BM25-only {statistics.median(k) * 1e3:.1f} ms, "
                f"baseline p50 {statistics.median(b) * 1e3:.1f} ms"
            )

    report(args, plan, service, keyword, baseline, round_ratios)


def report(
    args: argparse.Namespace,
    plan: SeedPlan,
    service: list[float],
    keyword: list[float],
    baseline: list[float],
    round_ratios: list[float],
) -> None:
    p50_ratio = percentile(service, 50) / percentile(baseline, 50)
    p99_ratio = percentile(service, 99) / percentile(baseline, 99)
    print()
    print(
        f"Hybrid search, top_k={args.top_k}, {plan.memories:,} memories / {plan.users:,} users, "
        f"{len(service)} queries each side ({args.rounds} rounds), sequential single client, "
        f"page cache {args.page_cache}"
    )
    print(f"{'':44} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    rows = [
        ("memory_service Search over gRPC (default)", service),
        ("the same, BM25-only (mode keyword)", keyword),
        ("baseline: in-process encode + search_memories", baseline),
    ]
    for name, samples in rows:
        print(
            f"{name:44} {percentile(samples, 50) * 1e3:9.2f} {percentile(samples, 99) * 1e3:9.2f}"
            f" {statistics.fmean(samples) * 1e3:9.2f}"
        )
    print(f"{'ratio service / baseline':44} {p50_ratio:9.2f} {p99_ratio:9.2f}")
    print(f"per-round p50 ratios: {', '.join(f'{r:.2f}' for r in round_ratios)}")
    verdict = "MET" if p50_ratio <= TARGET_P50_RATIO else "NOT MET"
    print(f"target p50 ratio <= {TARGET_P50_RATIO}: {p50_ratio:.2f} -> {verdict}")
    keyword_ratio = percentile(service, 50) / percentile(keyword, 50)
    verdict = "MET" if keyword_ratio <= TARGET_P50_RATIO else "NOT MET"
    print(
        f"default against BM25-only over gRPC, target p50 ratio <= {TARGET_P50_RATIO}: "
        f"{keyword_ratio:.2f} -> {verdict}"
    )


if __name__ == "__main__":
    main()
