"""One user's search latency while another floods memory_service with maximum-size queries.

memory_service runs as a child process on a fresh data dir holding a few memories of each
user. A "quiet" user sends hybrid Search requests one after another; a "flooding" user keeps
--flood-streams requests of MAX_TEXT_CHARS (50,000) CJK characters in flight, the costliest
query a client can send (one token per character). The baseline is the quiet user's p50 with
nothing else running, measured in the same run; idle and flooded rounds alternate so that
noise on a shared machine hits both. Target: p50(flooded) / p50(idle) <= 2.

    python bench/bench_fairness.py
    python bench/bench_fairness.py --rounds 3 --queries 60 --flood-streams 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from corpus import query_texts
from service_process import MemoryServiceProcess, call_metadata

from protos.memory.v1 import memory_pb2 as pb
from protos.memory.v1 import memory_pb2_grpc
from service_kit.limits import MAX_TEXT_CHARS

TARGET_RATIO = 2.0
QUIET, FLOODING = "quiet-user", "flooding-user"
# Common CJK characters: one token each, so the query is as large as a query can be.
CJK = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动"
    "同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自"
    "二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日"
    "那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变"
    "条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总"
    "次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指"
    "几九区强放决西被干做必战先回则任取据处府研质"
)
MAX_QUERY = (CJK * (MAX_TEXT_CHARS // len(CJK) + 1))[:MAX_TEXT_CHARS]


def p50_ms(samples: list[float]) -> float:
    return float(np.percentile(np.asarray(samples), 50)) * 1000


async def seed(stub: memory_pb2_grpc.MemoryServiceStub) -> None:
    for user in (QUIET, FLOODING):
        for i, text in enumerate(query_texts(40, seed=7)):
            request = pb.SaveMemoryRequest(text=f"{text} (note {i})", provider="chatgpt")
            await stub.SaveMemory(request, metadata=call_metadata(user), timeout=60)


async def quiet_searches(
    stub: memory_pb2_grpc.MemoryServiceStub, queries: list[str]
) -> list[float]:
    latencies = []
    for query in queries:
        request = pb.SearchRequest(query=query, top_k=10, mode=pb.SEARCH_MODE_HYBRID)
        started = time.perf_counter()
        await stub.Search(request, metadata=call_metadata(QUIET), timeout=60)
        latencies.append(time.perf_counter() - started)
    return latencies


async def flood(
    stub: memory_pb2_grpc.MemoryServiceStub, stop: asyncio.Event, done: list[float]
) -> None:
    request = pb.SearchRequest(query=MAX_QUERY, top_k=10, mode=pb.SEARCH_MODE_HYBRID)
    while not stop.is_set():
        started = time.perf_counter()
        await stub.Search(request, metadata=call_metadata(FLOODING), timeout=120)
        done.append(time.perf_counter() - started)


async def run(rounds: int, queries: int, streams: int) -> int:
    texts = query_texts(queries, seed=11)
    idle: list[float] = []
    flooded: list[float] = []
    flood_latencies: list[float] = []
    flood_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-fairness-") as data_dir:
        async with MemoryServiceProcess(Path(data_dir)) as service, service.channel() as channel:
            stub = service.stub(channel)
            await seed(stub)
            await quiet_searches(stub, texts[:10])
            for _ in range(rounds):
                idle += await quiet_searches(stub, texts)
                stop = asyncio.Event()
                started = time.perf_counter()
                floods = [
                    asyncio.create_task(flood(stub, stop, flood_latencies)) for _ in range(streams)
                ]
                # The flood is under way before the quiet user's first search.
                await asyncio.sleep(1.0)
                flooded += await quiet_searches(stub, texts)
                stop.set()
                for task in floods:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                flood_seconds += time.perf_counter() - started
    ratio = p50_ms(flooded) / p50_ms(idle)
    print(f"quiet user's Search, {len(idle)} idle and {len(flooded)} flooded samples")
    print(f"  idle p50 {p50_ms(idle):.1f} ms (baseline, same run)")
    print(
        f"  while {FLOODING} keeps {streams} {MAX_TEXT_CHARS:,}-character queries in flight: "
        f"p50 {p50_ms(flooded):.1f} ms, p99 {np.percentile(flooded, 99) * 1000:.1f} ms"
    )
    print(
        f"  flooding user: {len(flood_latencies)} queries answered, "
        f"p50 {statistics.median(flood_latencies) * 1000:.0f} ms, "
        f"{len(flood_latencies) / max(flood_seconds, 1e-9):.1f}/s"
    )
    met = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"  ratio flooded/idle p50: {ratio:.2f} (target <= {TARGET_RATIO}, {met})")
    return 0 if ratio <= TARGET_RATIO else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=40, help="quiet searches per round")
    parser.add_argument("--flood-streams", type=int, default=8)
    args = parser.parse_args()
    return asyncio.run(run(args.rounds, args.queries, args.flood_streams))


if __name__ == "__main__":
    raise SystemExit(main())
