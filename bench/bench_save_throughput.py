"""Save throughput of memory_service under 32 concurrent gRPC clients, against the model's
own batched speed.

memory_service runs as a child process on a free loopback port with a temp data dir; 32
clients (one channel each) save chat-prompt-like texts (5-80 words) until all are stored.
The baseline is SentenceTransformer.encode(texts, batch_size=32) in float32 on the same texts
in this process while the service is idle. The service embeds at MEMORY_EMBED_PRECISION
(default auto: bfloat16 on CPUs that have it natively), so a second baseline encodes the
same texts at that precision too: the ratio against it is what batching, gRPC and the store
cost. The texts are split over --rounds rounds; in each, both baselines encode the round's
texts and then the service saves them, so that noise on a shared machine hits every side,
and the reported ratios are the medians of the rounds' ratios. Failed saves are reported
and not counted as stored.
Target: saves/s divided by float32 baseline texts/s >= 0.8.

    python bench/bench_save_throughput.py                  # 3,000 texts in 4 rounds
    python bench/bench_save_throughput.py --texts 500 --rounds 2
    MEMORY_EMBED_PRECISION=float32 python bench/bench_save_throughput.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from corpus import prompt_texts
from service_process import MemoryServiceProcess, call_metadata

from memory_service.model_loading import (
    Precision,
    load_sentence_transformer,
    precision_scope,
    resolve_precision,
)
from protos.memory.v1 import memory_pb2 as pb

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

TARGET_RATIO = 0.8


def encode_rate(
    model: SentenceTransformer, texts: list[str], precision: Precision = "float32"
) -> float:
    started = time.perf_counter()
    with precision_scope(precision):
        model.encode(
            texts,
            batch_size=32,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    return len(texts) / (time.perf_counter() - started)


@dataclass
class Round:
    texts: int
    baseline: float
    same_precision: float
    saves: float


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


async def run(args: argparse.Namespace) -> tuple[list[Round], Counter[str]]:
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
            encode_rate(model, warmup, args.precision)
            await save_rate(service, warmup, args.clients, "warmup")
            rounds = []
            failures: Counter[str] = Counter()
            per_round = -(-len(texts) // args.rounds)
            for r in range(args.rounds):
                part = texts[r * per_round : (r + 1) * per_round]
                baseline = encode_rate(model, part)
                same = (
                    baseline
                    if args.precision == "float32"
                    else encode_rate(model, part, args.precision)
                )
                saves, failed = await save_rate(service, part, args.clients, f"round{r}")
                failures += failed
                rounds.append(Round(len(part), baseline, same, saves))
                print(
                    f"  round {r + 1}: {len(part)} texts, float32 encode {baseline:.0f}/s, "
                    f"{args.precision} encode {same:.0f}/s, service {saves:.0f} saves/s"
                    + (f", failed saves {dict(failed)}" if failed else "")
                )
    return rounds, failures


def report(args: argparse.Namespace, rounds: list[Round], failures: Counter[str]) -> None:
    texts = prompt_texts(args.texts, seed=7)
    words = [len(t.split()) for t in texts]
    ratio = statistics.median(r.saves / r.baseline for r in rounds)
    overhead = statistics.median(r.saves / r.same_precision for r in rounds)
    print()
    print(
        f"Save throughput: {len(texts)} texts ({min(words)}-{max(words)} words, "
        f"median {statistics.median(words):.0f}) in {args.rounds} rounds, "
        f"{args.clients} concurrent gRPC clients; service embeds in {args.precision}"
    )
    same = f"{args.precision} encode/s"
    print(
        f"{'round':>6} {'float32 encode/s':>17} {same:>17} {'service saves/s':>16} "
        f"{'ratio':>6} {'vs same precision':>18}"
    )
    for n, r in enumerate(rounds, start=1):
        print(
            f"{n:>6} {r.baseline:17.1f} {r.same_precision:17.1f} {r.saves:16.1f} "
            f"{r.saves / r.baseline:6.2f} {r.saves / r.same_precision:18.2f}"
        )
    print(
        f"{'median':>6} {statistics.median(r.baseline for r in rounds):17.1f} "
        f"{statistics.median(r.same_precision for r in rounds):17.1f} "
        f"{statistics.median(r.saves for r in rounds):16.1f} {ratio:6.2f} {overhead:18.2f}"
    )
    print(
        "baseline: SentenceTransformer.encode(texts, batch_size=32) in float32 in the bench "
        f"process; 'vs same precision' divides by the same call in {args.precision}"
    )
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
    # The service process inherits this environment: pin it to the precision measured here.
    args.precision = resolve_precision(os.environ.get("MEMORY_EMBED_PRECISION", "auto"))
    os.environ["MEMORY_EMBED_PRECISION"] = args.precision
    rounds, failures = asyncio.run(run(args))
    report(args, rounds, failures)


if __name__ == "__main__":
    main()
