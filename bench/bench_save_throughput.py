"""Save throughput of memory_service under 32 concurrent gRPC clients, against the model's
own batched speed.

memory_service runs as a child process on a free loopback port with a temp data dir; 32
clients (one channel each) save chat-prompt-like texts (5-80 words) until all are stored.
The baseline is SentenceTransformer.encode(texts, batch_size=32) on the same texts in this
process while the service is idle. The texts are split over --rounds rounds; in each, the
baseline encodes the round's texts and then the service saves them, so that noise on a
shared machine hits both sides, and the reported ratio is the median of the rounds' ratios.
Failed saves are reported and not counted as stored.
Target: saves/s divided by baseline texts/s >= 0.8.

    python bench/bench_save_throughput.py                  # 3,000 texts in 4 rounds
    python bench/bench_save_throughput.py --texts 500 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from corpus import prompt_texts
from service_process import MemoryServiceProcess, call_metadata

from memory_service.embedder import load_sentence_transformer
from protos.memory.v1 import memory_pb2 as pb

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

TARGET_RATIO = 0.8


def encode_rate(model: SentenceTransformer, texts: list[str]) -> float:
    started = time.perf_counter()
    model.encode(
        texts,
        batch_size=32,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return len(texts) / (time.perf_counter() - started)


async def save_rate(
    service: MemoryServiceProcess, texts: list[str], clients: int, tag: str
) -> tuple[float, Counter[str]]:
    """Stored saves per second with `clients` concurrent clients draining one shared list,
    and the status codes of the saves that failed."""
    channels = [service.channel() for _ in range(clients)]
    try:
        stubs = [service.stub(ch) for ch in channels]
        # Connect first so channel setup is not part of the measurement.
        await asyncio.gather(*(ch.channel_ready() for ch in channels))
        work = iter(enumerate(texts))
        failures: Counter[str] = Counter()

        async def client(n: int) -> None:
            metadata = call_metadata(f"bench-user-{n:02d}")
            for i, text in work:
                request = pb.SaveMemoryRequest(
                    text=text, provider="chatgpt", message_id=f"{tag}-{i}"
                )
                try:
                    await stubs[n].SaveMemory(request, metadata=metadata, timeout=120)
                except grpc.aio.AioRpcError as exc:
                    failures[exc.code().name] += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed = time.perf_counter() - started
        return (len(texts) - failures.total()) / elapsed, failures
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))


async def run(args: argparse.Namespace) -> tuple[list[tuple[float, float]], Counter[str]]:
    texts = prompt_texts(args.texts, seed=7)
    warmup = prompt_texts(args.warmup, seed=99)
    with tempfile.TemporaryDirectory(prefix="bench-save-") as tmp:
        service_proc = MemoryServiceProcess(Path(tmp) / "data")
        # Load the baseline model while the service loads its own.
        loading = asyncio.create_task(asyncio.to_thread(load_sentence_transformer, None))
        async with service_proc as service:
            model, _ = await loading
            print(f"memory_service pid {service.pid} serving on {service.address}; warming up")
            encode_rate(model, warmup)
            await save_rate(service, warmup, args.clients, "warmup")
            rounds = []
            failures: Counter[str] = Counter()
            per_round = -(-len(texts) // args.rounds)
            for r in range(args.rounds):
                part = texts[r * per_round : (r + 1) * per_round]
                baseline = encode_rate(model, part)
                saves, failed = await save_rate(service, part, args.clients, f"round{r}")
                failures += failed
                rounds.append((baseline, saves))
                print(
                    f"  round {r + 1}: {len(part)} texts, baseline {baseline:.0f} texts/s, "
                    f"service {saves:.0f} saves/s, ratio {saves / baseline:.2f}"
                    + (f", failed saves {dict(failed)}" if failed else "")
                )
    return rounds, failures


def report(
    args: argparse.Namespace, rounds: list[tuple[float, float]], failures: Counter[str]
) -> None:
    texts = prompt_texts(args.texts, seed=7)
    words = [len(t.split()) for t in texts]
    ratios = [saves / baseline for baseline, saves in rounds]
    ratio = statistics.median(ratios)
    print()
    print(
        f"Save throughput: {len(texts)} texts ({min(words)}-{max(words)} words, "
        f"median {statistics.median(words):.0f}) in {args.rounds} rounds, "
        f"{args.clients} concurrent gRPC clients"
    )
    print(f"{'round':>5} {'baseline texts/s':>17} {'service saves/s':>16} {'ratio':>7}")
    for r, ((baseline, saves), rr) in enumerate(zip(rounds, ratios, strict=True), start=1):
        print(f"{r:>5} {baseline:17.1f} {saves:16.1f} {rr:7.2f}")
    print(
        f"{'median':>5} {statistics.median(b for b, _ in rounds):17.1f} "
        f"{statistics.median(s for _, s in rounds):16.1f} {ratio:7.2f}"
    )
    print("baseline: SentenceTransformer.encode(texts, batch_size=32) in the bench process")
    if failures:
        print(f"failed saves (not counted as stored): {dict(failures)}")
    verdict = "MET" if ratio >= TARGET_RATIO else "NOT MET"
    print(f"target ratio >= {TARGET_RATIO}: median {ratio:.2f} -> {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=3_000, help="texts, split over the rounds")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=256)
    args = parser.parse_args()
    rounds, failures = asyncio.run(run(args))
    report(args, rounds, failures)


if __name__ == "__main__":
    main()
