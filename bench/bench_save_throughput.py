"""Save throughput of memory_service under 32 concurrent gRPC clients, against the model's
own batched speed.

memory_service runs as a child process on a free loopback port with a temp data dir; 32
clients (one channel each) save chat-prompt-like texts (5-80 words) until all are stored.
The baseline is SentenceTransformer.encode(texts, batch_size=32) in float32 (torch) on the
same texts in this process while the service is idle. A second figure runs the service's own
encoder (ONNX Runtime, one batch of 32 per core at once) in this process on the same texts:
its ratio to the baseline is the encoder's speed-up, and the service's saves against it are what
batching, gRPC and the store cost. The texts are split over --rounds rounds; in each, both
encoders run on the round's texts and then the service saves them, so that noise on a shared
machine hits every side, and the reported ratios are the medians of the rounds' ratios.
Failed saves are reported and not counted as stored.
Target: saves/s divided by the float32 baseline's texts/s >= 0.8.

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
from dataclasses import dataclass
from pathlib import Path

import grpc
from corpus import prompt_texts
from encoders import onnx_rate, reference_model, reference_rate, service_encoder
from service_process import MemoryServiceProcess, call_metadata

from protos.memory.v1 import memory_pb2 as pb

TARGET_RATIO = 0.8


@dataclass
class Round:
    texts: int
    baseline: float
    onnx: float
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
        loading = asyncio.create_task(asyncio.to_thread(reference_model))
        async with service_proc as service:
            model = await loading
            encoder = service_encoder()
            print(f"memory_service pid {service.pid} serving on {service.address}; warming up")
            reference_rate(model, warmup)
            onnx_rate(encoder, warmup)
            await save_rate(service, warmup, args.clients, "warmup")
            rounds = []
            failures: Counter[str] = Counter()
            per_round = -(-len(texts) // args.rounds)
            for r in range(args.rounds):
                part = texts[r * per_round : (r + 1) * per_round]
                baseline = reference_rate(model, part)
                onnx = onnx_rate(encoder, part)
                saves, failed = await save_rate(service, part, args.clients, f"round{r}")
                failures += failed
                rounds.append(Round(len(part), baseline, onnx, saves))
                print(
                    f"  round {r + 1}: {len(part)} texts, sentence-transformers float32 "
                    f"{baseline:.0f}/s, ONNX Runtime {onnx:.0f}/s, service {saves:.0f} saves/s"
                    + (f", failed saves {dict(failed)}" if failed else "")
                )
    return rounds, failures


def report(args: argparse.Namespace, rounds: list[Round], failures: Counter[str]) -> None:
    texts = prompt_texts(args.texts, seed=7)
    words = [len(t.split()) for t in texts]
    ratio = statistics.median(r.saves / r.baseline for r in rounds)
    speedup = statistics.median(r.onnx / r.baseline for r in rounds)
    overhead = statistics.median(r.saves / r.onnx for r in rounds)
    print()
    print(
        f"Save throughput: {len(texts)} texts ({min(words)}-{max(words)} words, "
        f"median {statistics.median(words):.0f}) in {args.rounds} rounds, "
        f"{args.clients} concurrent gRPC clients"
    )
    print(
        f"{'round':>6} {'st float32/s':>13} {'onnx/s':>8} {'onnx/st':>8} {'saves/s':>8} "
        f"{'saves/st':>9} {'saves/onnx':>11}"
    )
    for n, r in enumerate(rounds, start=1):
        print(
            f"{n:>6} {r.baseline:13.1f} {r.onnx:8.1f} {r.onnx / r.baseline:8.2f} "
            f"{r.saves:8.1f} {r.saves / r.baseline:9.2f} {r.saves / r.onnx:11.2f}"
        )
    print(
        f"{'median':>6} {statistics.median(r.baseline for r in rounds):13.1f} "
        f"{statistics.median(r.onnx for r in rounds):8.1f} {speedup:8.2f} "
        f"{statistics.median(r.saves for r in rounds):8.1f} {ratio:9.2f} {overhead:11.2f}"
    )
    print(
        "st: SentenceTransformer.encode(texts, batch_size=32) in float32 in the bench process; "
        "onnx: the service's encoder (ONNX Runtime, float32) in the bench process, batches "
        "of 32, one per core at once"
    )
    if failures:
        print(f"failed saves (not counted as stored): {dict(failures)}")
    verdict = "MET" if ratio >= TARGET_RATIO else "NOT MET"
    print(f"target saves/st >= {TARGET_RATIO}: median {ratio:.2f} -> {verdict}")


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
