"""Resident memory of memory_service: after loading the model on an empty data dir, and with
100,000 stored memories across 1,000 users; and of `memory-layer up` idle, all its processes.

memory_service runs as a child process; its VmRSS is read from /proc/<pid>/status once it
reports SERVING and again after the same traffic (concurrent saves, then searches) on each
data dir. The baseline is the empty data dir measured in the same run; the 100k data dir is
seeded straight through EdgeMemoryStore (see seed.py). `memory-layer up` (gateway,
memory_service, chat_service and the CLI process that supervises them) starts on an empty
data dir, idles --idle-seconds once ready, and the VmRSS of the process tree is
summed (the CLI process and all its descendants).
Targets: memory_service <= 350 MB after model load; <= +300 MB for the 100k memories (after
traffic); `memory-layer up` idle <= 400 MB for all its processes.

    python bench/bench_memory_rss.py                      # 100k memories, 1k users
    python bench/bench_memory_rss.py --memories 20000 --users 200
    python bench/bench_memory_rss.py --data-dir /tmp/seeded   # reuse a seeded dir
    python bench/bench_memory_rss.py --memories 0         # model load and `up` only
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
from corpus import prompt_texts, query_texts
from encoders import service_encoder
from seed import SeedPlan, seed_data_dir, user_ids
from service_process import (
    MemoryServiceProcess,
    ServiceProcess,
    call_metadata,
    free_port,
    http_ready,
    service_precision,
    status_lines,
)

from protos.memory.v1 import memory_pb2 as pb

TARGET_LOAD_MB = 350
TARGET_DELTA_MB = 300
TARGET_UP_MB = 400
SERVICE_NAMES = ("memory_service", "chat_service", "gateway")


@dataclass
class Reading:
    label: str
    serving: dict[str, int]
    after_traffic: dict[str, int]


async def traffic(
    service: MemoryServiceProcess, users: list[str], saves: int, searches: int
) -> None:
    """Concurrent saves from 32 clients, then sequential hybrid searches for random users."""
    rng = random.Random(1)
    texts = prompt_texts(saves, seed=21)
    async with service.channel() as channel:
        stub = service.stub(channel)
        work = iter(texts)

        failed: Counter[str] = Counter()

        async def saver() -> None:
            for text in work:
                user = rng.choice(users)
                request = pb.SaveMemoryRequest(text=text, provider="claude")
                try:
                    await stub.SaveMemory(request, metadata=call_metadata(user), timeout=120)
                except grpc.aio.AioRpcError as exc:
                    failed[exc.code().name] += 1

        await asyncio.gather(*(saver() for _ in range(32)))
        if failed:
            print(f"  warning: failed saves {dict(failed)}")
        for query in query_texts(searches, seed=23):
            request = pb.SearchRequest(query=query, top_k=10, mode=pb.SEARCH_MODE_HYBRID)
            await stub.Search(request, metadata=call_metadata(rng.choice(users)), timeout=30)


async def measure(
    label: str, data_dir: Path, users: list[str], saves: int, searches: int
) -> Reading:
    async with MemoryServiceProcess(data_dir) as service:
        serving = service.memory_status()
        await traffic(service, users, saves, searches)
        # Let the allocator settle after the last request.
        await asyncio.sleep(1.0)
        return Reading(label, serving, service.memory_status())


def mb(kib: int) -> float:
    return kib / 1024


def tree_rss(root: int) -> dict[str, int]:
    """VmRSS (kB) of a process and all its descendants, by role (the service a process runs,
    `up` for the root) and pid."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The fields after the command (which may hold spaces): state, then ppid.
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            parents[int(entry.name)] = int(stat[1])
    tree, grew = {root}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grew = bool(found)
    rss = {}
    for pid in sorted(tree):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            role = "up" if pid == root else next((a for a in argv if a in SERVICE_NAMES), argv[0])
            rss[f"{role} (pid {pid})"] = status_lines(pid)["VmRSS"]
        except (FileNotFoundError, KeyError):
            continue
    return rss


def up_idle_rss(data_dir: Path, idle_seconds: float) -> dict[str, int]:
    """`memory-layer up` on an empty data dir: the VmRSS of its processes once idle."""
    port = free_port()
    up = ServiceProcess(
        "memory-layer up",
        [sys.executable, "-m", "memory_layer_cli", "up", "--port", str(port),
         "--data-dir", str(data_dir)],
        os.environ,
        log_path=data_dir.parent / "up.log",
        new_session=True,
    )  # fmt: skip
    data_dir.mkdir(parents=True, exist_ok=True)
    up.spawn().wait_ready(http_ready(f"http://127.0.0.1:{port}/readyz"), timeout=300)
    try:
        time.sleep(idle_seconds)
        return tree_rss(up.pid)
    finally:
        up.stop(timeout=60)


def report_up(processes: dict[str, int], idle_seconds: float) -> None:
    print()
    print(
        f"`memory-layer up` idle ({idle_seconds:.0f} s after ready), embedding precision "
        f"{service_precision()}, VmRSS per process (MB)"
    )
    for name, kib in sorted(processes.items(), key=lambda item: -item[1]):
        print(f"  {mb(kib):7.0f}  {name}")
    total = mb(sum(processes.values()))
    verdict = "MET" if total <= TARGET_UP_MB else "NOT MET"
    print(f"target all processes <= {TARGET_UP_MB} MB: {total:.0f} MB -> {verdict}")


def report(plan: SeedPlan, args: argparse.Namespace, empty: Reading, full: Reading | None) -> None:
    print()
    print(
        f"memory_service resident memory (MB; /proc/<pid>/status), traffic = {args.saves} "
        f"saves from 32 clients + {args.searches} hybrid searches"
    )
    header = f"{'data dir':28} {'at SERVING':>11} {'after traffic':>14} {'RssAnon':>8}"
    print(header + f" {'RssFile':>8} {'VmHWM':>8}")
    for r in (empty, full) if full else (empty,):
        a = r.after_traffic
        print(
            f"{r.label:28} {mb(r.serving['VmRSS']):11.0f} {mb(a['VmRSS']):14.0f} "
            f"{mb(a['RssAnon']):8.0f} {mb(a['RssFile']):8.0f} {mb(a['VmHWM']):8.0f}"
        )
    load = mb(empty.serving["VmRSS"])
    load_ok = "MET" if load <= TARGET_LOAD_MB else "NOT MET"
    print(f"target after model load <= {TARGET_LOAD_MB} MB: {load:.0f} MB -> {load_ok}")
    if full is None:
        return
    delta = mb(full.after_traffic["VmRSS"] - empty.after_traffic["VmRSS"])
    delta_serving = mb(full.serving["VmRSS"] - empty.serving["VmRSS"])
    print(
        f"{'delta for the memories':28} {delta_serving:+11.0f} {delta:+14.0f}  "
        f"(baseline: the empty data dir, same run)"
    )
    delta_ok = "MET" if delta <= TARGET_DELTA_MB else "NOT MET"
    print(
        f"target {plan.memories:,} memories <= +{TARGET_DELTA_MB} MB: {delta:+.0f} MB "
        f"({delta / TARGET_DELTA_MB:.2f} of the budget) -> {delta_ok}"
    )


def main() -> None:
    print(f"embedding precision: {service_precision()}", flush=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--distinct-texts", type=int, default=3_000)
    parser.add_argument("--saves", type=int, default=256, help="saves in the traffic")
    parser.add_argument("--searches", type=int, default=100, help="searches in the traffic")
    parser.add_argument("--data-dir", type=Path, help="seed here and keep it (default: temp)")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()

    plan = SeedPlan(memories=args.memories, users=args.users, distinct_texts=args.distinct_texts)
    users = user_ids(plan.users)
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        up = up_idle_rss(Path(tmp) / "up" / "data", args.idle_seconds)
        empty = asyncio.run(measure("empty", Path(tmp) / "empty", users, args.saves, args.searches))
        if not plan.memories:
            report(plan, args, empty, None)
            report_up(up, args.idle_seconds)
            return
        data_dir = args.data_dir or Path(tmp) / "seeded"
        print(f"seeding {plan.memories} memories for {plan.users} users into {data_dir} ...")
        model = service_encoder()
        seconds = seed_data_dir(data_dir, model, plan)
        del model
        print(f"  {'reused existing seed' if seconds == 0 else f'took {seconds:.0f}s'}")
        label = f"{plan.memories:,} memories"
        full = asyncio.run(measure(label, data_dir, users, args.saves, args.searches))
    report(plan, args, empty, full)
    report_up(up, args.idle_seconds)


if __name__ == "__main__":
    main()
