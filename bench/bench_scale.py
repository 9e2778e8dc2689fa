"""memory_service at a million memories: search latency, resident memory, disk, start time,
save throughput against an empty store, and maintenance while it serves, in one run.

The store is seeded the way bench/seed.py does it (real model vectors for a sample of
distinct texts, reused): --memories across --users, plus one heavy user with --heavy of
their own. The service runs as a child process (ONNX Runtime, float32); the precision is
printed. What is measured, in order:

1. time from process start to SERVING on the seeded data dir, then until the service's own
   maintenance has sealed the seeded store (seeded in one go, it is one appendable segment,
   whose indexes the engine keeps in memory) into on-disk segments;
2. hybrid Search over gRPC, one at a time, for random users and for the heavy user: p50, p99;
3. resident memory after that traffic, and the data dir's disk use;
4. saves/s with --clients concurrent clients against this service and against one on an
   empty data dir, running side by side and saving in alternating rounds; the ratio is the
   median of the rounds' ratios;
5. searches and saves keep coming, first for a baseline window, then while half of the
   heavy user's memories are deleted and the service's own schedule
   (MEMORY_MAINTENANCE_INTERVAL_SECONDS=5 here) merges segments and drops them: the
   slowest search during maintenance against the baseline window's, failed requests, disk
   before and after (after the run that vacuums the deletions made after its copy);
6. time from a restart to SERVING.

    python bench/bench_scale.py                          # 1,000,000 + 100,000, ~40 min
    python bench/bench_scale.py --memories 50000 --users 500 --heavy 5000 --saves 300
    python bench/bench_scale.py --data-dir /var/tmp/scale   # on another disk
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from bench_save_throughput import save_rate
from corpus import prompt_texts, query_texts
from encoders import service_encoder
from seed import HEAVY_USER, SeedPlan, seed_data_dir, seeded_memory_id, user_ids
from service_process import MemoryServiceProcess, call_metadata

from memory_service.store.embedded.files import directory_bytes
from protos.memory.v1 import memory_pb2 as pb
from protos.memory.v1 import memory_pb2_grpc

PRECISION = "float32"
# The service checks every 5 s here (MEMORY_MAINTENANCE_INTERVAL_SECONDS below): a run due
# after the deletions starts well within this.
RERUN_WAIT_SECONDS = 30.0
TARGETS = {
    "search_p50_ms": 30.0,
    "p99_over_p50": 3.0,
    "rss_mb": 1200.0,
    "restart_s": 30.0,
    "saves_ratio": 0.9,
    "maintenance_slowest_ms": 200.0,
}


@dataclass
class Figures:
    first_start_s: float = 0.0
    seal_s: float = 0.0
    restart_s: float = 0.0
    search_ms: list[float] = field(default_factory=list)
    heavy_ms: list[float] = field(default_factory=list)
    rss_mb: float = 0.0
    hwm_mb: float = 0.0
    disk_bytes: int = 0
    rounds: list[tuple[float, float]] = field(default_factory=list)
    deleted: int = 0
    maintenance_s: float = 0.0
    # Search latencies (ms) under the same load, per phase: baseline, deleting, maintenance.
    searches: dict[str, list[float]] = field(default_factory=dict)
    saves_during: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    disk_before: int = 0
    disk_after: int = 0


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed_start(service: MemoryServiceProcess) -> float:
    started = time.perf_counter()
    await service.__aenter__()
    return time.perf_counter() - started


async def search_once(stub: memory_pb2_grpc.MemoryServiceStub, user: str, query: str) -> float:
    request = pb.SearchRequest(query=query, top_k=10, mode=pb.SEARCH_MODE_HYBRID)
    started = time.perf_counter()
    await stub.Search(request, metadata=call_metadata(user), timeout=30)
    return (time.perf_counter() - started) * 1000


def current_shards(data_dir: Path) -> list[str]:
    """The shard directories the store's manifest names, one per shard."""
    return list(json.loads((data_dir / "memory-layer.json").read_text())["shards"])


async def wait_for_seal(data_dir: Path, shards_before: list[str], limit_s: float) -> float:
    """Seconds until the service switched every shard to a maintained copy."""
    started = time.perf_counter()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not set(current_shards(data_dir)) & set(shards_before):
            # The old shard is closed and its memory released just after the switch.
            await asyncio.sleep(2)
            return time.perf_counter() - started
        await asyncio.sleep(0.2)
    raise TimeoutError("the service did not seal its store")


async def maintenance_under_load(
    args: argparse.Namespace, service: MemoryServiceProcess, data_dir: Path, figures: Figures
) -> None:
    """Searches and saves keep coming throughout: first for a baseline window, then while
    half of the heavy user's memories are deleted and the service's own maintenance runs,
    until it has switched to its optimized copy."""
    users = user_ids(args.users)
    queries = query_texts(200, seed=41)
    texts = prompt_texts(20_000, seed=43)
    rng = random.Random(42)
    collections = data_dir / "collections"
    state = {"phase": "baseline"}
    async with service.channel() as channel:
        stub = service.stub(channel)

        async def searcher() -> None:
            while state["phase"] != "done":
                user = HEAVY_USER if rng.random() < 0.1 else rng.choice(users)
                phase = state["phase"]
                try:
                    took = await search_once(stub, user, rng.choice(queries))
                except grpc.aio.AioRpcError as exc:
                    figures.failures[f"search {exc.code().name}"] += 1
                    continue
                # A search counts for the phase it started and ended in.
                if state["phase"] == phase:
                    figures.searches.setdefault(phase, []).append(took)
                await asyncio.sleep(0.01)

        async def saver() -> None:
            md = call_metadata(rng.choice(users))
            while state["phase"] != "done":
                request = pb.SaveMemoryRequest(text=rng.choice(texts), provider="chatgpt")
                try:
                    await stub.SaveMemory(request, metadata=md, timeout=60)
                except grpc.aio.AioRpcError as exc:
                    figures.failures[f"save {exc.code().name}"] += 1
                    continue
                if state["phase"] == "maintenance":
                    figures.saves_during += 1
                await asyncio.sleep(0.05)

        async def delete_then_watch() -> None:
            await asyncio.sleep(args.baseline_seconds)
            state["phase"] = "deleting"
            # The store no longer matches its seed plan: a later run seeds it again.
            (data_dir / "bench-seed.json").unlink(missing_ok=True)
            shards_before = current_shards(data_dir)
            copies_before = {p.name for p in collections.iterdir()}
            doomed = iter(seeded_memory_id(HEAVY_USER, j) for j in range(0, args.heavy, 2))
            heavy_md = call_metadata(HEAVY_USER)

            async def deleter() -> None:
                for memory_id in doomed:
                    await stub.DeleteMemory(
                        pb.DeleteMemoryRequest(id=memory_id), metadata=heavy_md, timeout=60
                    )
                    figures.deleted += 1

            deleting = asyncio.gather(*(deleter() for _ in range(8)))
            figures.disk_before = directory_bytes(data_dir)
            deadline = time.monotonic() + args.maintenance_timeout
            began = 0.0
            while time.monotonic() < deadline:
                if deleting.done():
                    deleting.result()
                    if not began:
                        figures.disk_before = directory_bytes(data_dir)
                names = {p.name for p in collections.iterdir()}
                if not began and names - copies_before:
                    state["phase"], began = "maintenance", time.perf_counter()
                    print("  maintenance started", flush=True)
                if current_shards(data_dir) != shards_before:
                    figures.maintenance_s = time.perf_counter() - (began or time.perf_counter())
                    state["phase"] = "done"
                    await deleting
                    return
                await asyncio.sleep(0.05)
            state["phase"] = "done"
            raise TimeoutError("maintenance did not finish")

        await asyncio.gather(delete_then_watch(), searcher(), saver(), saver())
        print(f"  deleted {figures.deleted} of {HEAVY_USER}'s memories", flush=True)
        # Deletions made after the copy was taken stay in it as deleted points and make the
        # shard due again: the disk is measured after the run that follows them (or, if
        # none starts within a few of the service's intervals, once no copy is left).
        settled = current_shards(data_dir)
        deadline = time.monotonic() + args.maintenance_timeout
        no_rerun_after = time.monotonic() + RERUN_WAIT_SECONDS
        while time.monotonic() < deadline:
            in_use = current_shards(data_dir)
            idle = {p.name for p in collections.iterdir()} == set(in_use)
            if idle and (in_use != settled or time.monotonic() > no_rerun_after):
                break
            await asyncio.sleep(0.5)
        if current_shards(data_dir) != settled:
            print("  maintenance ran again for the deletions made after its copy", flush=True)
        figures.disk_after = directory_bytes(data_dir)


async def run(args: argparse.Namespace, root: Path) -> Figures:
    figures = Figures()
    plan = SeedPlan(memories=args.memories, users=args.users, heavy_user_memories=args.heavy)
    scale_dir, empty_dir = root / "scale", root / "empty"
    print(f"loading the model to seed {args.memories} + {args.heavy} memories…", flush=True)
    model = await asyncio.to_thread(service_encoder)
    # seed_data_dir runs its own event loop.
    took = await asyncio.to_thread(seed_data_dir, scale_dir, model, plan)
    print(f"  seeded in {took:.0f} s" if took else "  already seeded", flush=True)
    del model
    shutil.rmtree(empty_dir, ignore_errors=True)

    big = MemoryServiceProcess(scale_dir, startup_timeout=600)
    shards_before = current_shards(scale_dir)
    figures.first_start_s = await timed_start(big)
    print(f"  SERVING after {figures.first_start_s:.1f} s", flush=True)
    try:
        figures.seal_s = await wait_for_seal(scale_dir, shards_before, args.maintenance_timeout)
        print(f"  sealed by the service's maintenance after {figures.seal_s:.0f} s", flush=True)
        users = user_ids(args.users)
        rng = random.Random(7)
        queries = query_texts(args.queries, seed=8)
        async with big.channel() as channel:
            stub = big.stub(channel)
            for q in queries[:20]:
                await search_once(stub, rng.choice(users), q)
            for q in queries:
                figures.search_ms.append(await search_once(stub, rng.choice(users), q))
            for q in queries[: args.queries // 3]:
                figures.heavy_ms.append(await search_once(stub, HEAVY_USER, q))
        status = big.memory_status()
        figures.rss_mb, figures.hwm_mb = status["VmRSS"] / 1024, status["VmHWM"] / 1024
        figures.disk_bytes = directory_bytes(scale_dir)
        print(
            f"  search p50 {pct(figures.search_ms, 0.5):.1f} ms, RSS {figures.rss_mb:.0f} MB",
            flush=True,
        )

        async with MemoryServiceProcess(empty_dir) as empty:
            texts = prompt_texts(args.saves * args.rounds * 2 + 256, seed=31)
            await save_rate(empty, texts[:128], args.clients, "warm-empty")
            await save_rate(big, texts[128:256], args.clients, "warm-big")
            offset = 256
            for r in range(args.rounds):
                part_a = texts[offset : offset + args.saves]
                part_b = texts[offset + args.saves : offset + 2 * args.saves]
                offset += 2 * args.saves
                sides = [("empty", empty, part_a), ("big", big, part_b)]
                rates: dict[str, float] = {}
                for name, service, part in sides if r % 2 == 0 else sides[::-1]:
                    rate, failed = await save_rate(service, part, args.clients, f"r{r}-{name}")
                    figures.failures += Counter({f"save {k}": v for k, v in failed.items()})
                    rates[name] = rate
                figures.rounds.append((rates["empty"], rates["big"]))
                print(
                    f"  round {r + 1}: empty {rates['empty']:.0f} saves/s, "
                    f"at size {rates['big']:.0f} saves/s",
                    flush=True,
                )

        await maintenance_under_load(args, big, scale_dir, figures)
    finally:
        big.stop()

    restarted = MemoryServiceProcess(scale_dir, startup_timeout=600)
    figures.restart_s = await timed_start(restarted)
    restarted.stop()
    return figures


def report(args: argparse.Namespace, f: Figures) -> None:
    total = args.memories + args.heavy
    p50, p99 = pct(f.search_ms, 0.5), pct(f.search_ms, 0.99)
    h50, h99 = pct(f.heavy_ms, 0.5), pct(f.heavy_ms, 0.99)
    ratio = statistics.median(big / empty for empty, big in f.rounds)
    base = f.searches.get("baseline", [0.0])
    during = f.searches.get("maintenance", [0.0])
    rows = [
        ("precision", PRECISION, "", None),
        ("start to SERVING (seeded)", f"{f.first_start_s:.1f} s", "", None),
        ("then until the store is sealed", f"{f.seal_s:.0f} s", "", None),
        ("restart to SERVING", f"{f.restart_s:.1f} s", "<= 30 s", f.restart_s <= 30),
        (
            f"search p50 / p99, {args.users} users",
            f"{p50:.1f} / {p99:.1f} ms",
            "p50 <= 30 ms, p99 <= 3x p50",
            p50 <= TARGETS["search_p50_ms"] and p99 <= TARGETS["p99_over_p50"] * p50,
        ),
        (f"search p50 / p99, {HEAVY_USER} ({args.heavy})", f"{h50:.1f} / {h99:.1f} ms", "", None),
        (
            "resident memory (VmRSS / VmHWM)",
            f"{f.rss_mb:.0f} / {f.hwm_mb:.0f} MB",
            "<= 1200 MB",
            f.rss_mb <= TARGETS["rss_mb"],
        ),
        ("disk", f"{f.disk_bytes / 2**30:.2f} GiB", "", None),
        (
            "saves/s at size vs empty",
            f"{statistics.median(b for _, b in f.rounds):.0f} vs "
            f"{statistics.median(e for e, _ in f.rounds):.0f} (ratio {ratio:.2f})",
            ">= 0.9",
            ratio >= TARGETS["saves_ratio"],
        ),
        (
            "slowest / p99 search, baseline window",
            f"{max(base):.0f} / {pct(base, 0.99):.0f} ms over {len(base)} searches",
            "",
            None,
        ),
        (
            "slowest / p99 search during maintenance",
            f"{max(during):.0f} / {pct(during, 0.99):.0f} ms over {len(during)} searches, "
            f"{f.saves_during} saves; took {f.maintenance_s:.0f} s",
            "slowest <= 200 ms",
            max(during) <= TARGETS["maintenance_slowest_ms"],
        ),
        ("failed requests", str(dict(f.failures) or 0), "none", not f.failures),
        (
            f"disk after deleting {f.deleted} and maintenance",
            f"{f.disk_before / 2**30:.2f} -> {f.disk_after / 2**30:.2f} GiB",
            "drops",
            f.disk_after < f.disk_before,
        ),
    ]
    print()
    print(
        f"Scale: {args.memories} memories across {args.users} users + {HEAVY_USER} "
        f"with {args.heavy} ({total} in all)"
    )
    for name, value, target, met in rows:
        verdict = "" if met is None else ("MET" if met else "NOT MET")
        print(f"  {name:<44} {value:<48} {target:<28} {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--heavy", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--saves", type=int, default=640, help="saves per side per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--maintenance-timeout", type=float, default=1800)
    parser.add_argument(
        "--baseline-seconds", type=float, default=20, help="searches and saves before deleting"
    )
    parser.add_argument("--data-dir", type=Path, help="where the stores go (default: a temp dir)")
    args = parser.parse_args()
    os.environ.update(MEMORY_MAINTENANCE_INTERVAL_SECONDS="5")
    if args.data_dir:
        figures = asyncio.run(run(args, args.data_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            figures = asyncio.run(run(args, Path(tmp)))
    report(args, figures)


if __name__ == "__main__":
    main()
