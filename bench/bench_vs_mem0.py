"""Side by side with mem0: the same chat-like saves, users and queries, at 3,000 and 20,000
memories.

Ours: memory_service and the gateway as child processes on loopback; saves are POST
/save-prompt from --clients concurrent HTTP clients (aiohttp), searches POST /search
(hybrid, top_k 10) one at a time. mem0: mem0ai 2.2.1 in process (bench/mem0_side.py) in a
venv of its own that this bench creates on first use (torch pinned to the project's, so pip
takes the local CPU wheel), with the same bundled all-MiniLM-L6-v2, `infer=False` (no LLM)
and its default local Qdrant store. mem0 is not a project dependency.

Saves go in up to the first checkpoint (3,000), then searches run, then saves go on to the
second (20,000) and searches run again; saves/s is measured over each checkpoint's part.
mem0 takes one add at a time (~15/s here), so past the first checkpoint its memories are
loaded the way add(infer=False) stores them but embedded in batches (--mem0-add-all: every
one through add()).
mem0 embeds in float32, ours in MEMORY_EMBED_PRECISION (int8 by default). In the same run,
the first checkpoint's texts (at most --encode-texts of them) are also encoded in this
process by the service's encoder (ONNX Runtime) and by SentenceTransformer.encode
(batch_size=32) in float32, the in-process baseline, on all cores.
Targets: saves/s at 3,000 >= 5x mem0's; search p50 at 20,000 >= 10x faster than mem0's.

    python bench/bench_vs_mem0.py
    python bench/bench_vs_mem0.py --checkpoints 300,1000 --queries 50     # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import torch
from bench_gateway_overhead import ISSUER, JWT_SECRET, gateway_stack
from corpus import prompt_texts, query_texts
from encoders import onnx_rate, reference_model, reference_rate, service_encoder
from service_process import service_precision

from gateway.tokens import mint_token
from memory_service.embedding.model_dir import bundled_model_path

MEM0_VERSION = "2.2.1"
TARGET_SAVES = 5.0
TARGET_SEARCH = 10.0
DEFAULT_VENV = Path(tempfile.gettempdir()) / "memory-layer-mem0-venv"
HERE = Path(__file__).resolve().parent


def ensure_mem0_venv(venv: Path) -> Path:
    """The venv's python, with mem0 installed in it (created on first use)."""
    python = venv / "bin" / "python"
    probe = [
        str(python),
        "-c",
        f"import importlib.metadata as m; assert m.version('mem0ai') == '{MEM0_VERSION}'",
    ]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"installing mem0ai {MEM0_VERSION} into {venv} (once)…", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    torch_pin = torch.__version__.split("+")[0]
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            f"mem0ai=={MEM0_VERSION}",
            "sentence-transformers",
            f"torch=={torch_pin}",
        ],
        check=True,
    )
    return python


def workload(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    users = [f"user-{i:03d}" for i in range(args.users)]
    texts = prompt_texts(max(args.checkpoints), seed=21)
    saves = [(users[i % len(users)], text) for i, text in enumerate(texts)]
    rng = random.Random(22)
    queries = [(rng.choice(users), q) for q in query_texts(args.queries, seed=23)]
    return saves, queries


def run_mem0(
    args: argparse.Namespace, saves: list[tuple[str, str]], queries: list[tuple[str, str]]
) -> dict[str, Any]:
    python = ensure_mem0_venv(args.mem0_venv)
    with tempfile.TemporaryDirectory(prefix="bench-mem0-") as tmp:
        plan = {
            "model_path": str(bundled_model_path()),
            "data_dir": tmp,
            "concurrency": args.mem0_concurrency,
            "saves": saves,
            "checkpoints": args.checkpoints,
            "queries": queries,
            "top_k": 10,
            "load_after_first": not args.mem0_add_all,
        }
        env = dict(os.environ, MEM0_TELEMETRY="false", HF_HUB_OFFLINE="1", MEM0_DIR=tmp)
        done = subprocess.run(
            [str(python), str(HERE / "mem0_side.py")],
            input=json.dumps(plan).encode(),
            capture_output=True,
            env=env,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"mem0 side failed:\n{done.stderr.decode()[-3000:]}")
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))


async def run_ours(
    args: argparse.Namespace,
    saves: list[tuple[str, str]],
    queries: list[tuple[str, str]],
    data_dir: Path,
) -> list[dict[str, Any]]:
    async with gateway_stack(data_dir) as (_, gateway_url):
        return await measure_ours(args, gateway_url, saves, queries)


async def measure_ours(
    args: argparse.Namespace,
    gateway_url: str,
    saves: list[tuple[str, str]],
    queries: list[tuple[str, str]],
) -> list[dict[str, Any]]:
    users = sorted({u for u, _ in saves} | {u for u, _ in queries} | {"warmup"})
    tokens = {
        u: {"Authorization": f"Bearer {mint_token(JWT_SECRET, u, issuer=ISSUER)}"} for u in users
    }
    connector = aiohttp.TCPConnector(limit=args.clients, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        base_url=gateway_url, connector=connector, timeout=timeout
    ) as http:

        async def save(user: str, text: str) -> None:
            body = {"prompt": text, "provider": "chatgpt"}
            async with http.post("/save-prompt", json=body, headers=tokens[user]) as response:
                response.raise_for_status()
                await response.read()

        async def search(user: str, query: str) -> None:
            body = {"query": query, "top_k": 10, "mode": "hybrid"}
            async with http.post("/search", json=body, headers=tokens[user]) as response:
                response.raise_for_status()
                await response.read()

        await save("warmup", "warm up the model and the store")
        await search("warmup", "warm up")
        results = []
        done = 0
        for checkpoint in args.checkpoints:
            pending = iter(saves[done:checkpoint])

            async def client() -> None:
                for user, text in pending:  # noqa: B023 - one shared iterator per part
                    await save(user, text)

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(args.clients)))
            rate = (checkpoint - done) / (time.perf_counter() - started)
            done = checkpoint
            latencies = []
            for user, query in queries:
                started = time.perf_counter()
                await search(user, query)
                latencies.append(time.perf_counter() - started)
            results.append({"memories": checkpoint, "saves_per_s": rate, "search_s": latencies})
            print(f"  ours at {checkpoint}: {rate:.1f} saves/s", flush=True)
    return results


def ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def encode_rates(texts: list[str]) -> dict[str, float]:
    """Texts/s of the service's encoder and of sentence-transformers float32 on the same texts,
    in this process, after a warm-up of each."""
    encoder, model = service_encoder(), reference_model()
    onnx_rate(encoder, texts[:64])
    reference_rate(model, texts[:64])
    return {"onnx": onnx_rate(encoder, texts), "reference": reference_rate(model, texts)}


def report(
    args: argparse.Namespace,
    ours: list[dict[str, Any]],
    mem0: dict[str, Any],
    rates: dict[str, float],
    encoded: int,
) -> None:
    print()
    print(
        f"Side by side: {args.users} users, chat-like texts, {len(ours[0]['search_s'])} queries "
        f"per checkpoint; ours embeds in {service_precision()} (ONNX Runtime) through HTTP with "
        f"{args.clients} clients, mem0 {mem0['mem0_version']} in process with "
        f"{args.mem0_concurrency} at a time"
    )
    print(
        f"encode in this process, {encoded} of the saved texts, batches of 32: ONNX Runtime "
        f"{rates['onnx']:.1f} texts/s, sentence-transformers float32 {rates['reference']:.1f} "
        f"texts/s ({rates['onnx'] / rates['reference']:.2f}x)"
    )
    print(
        f"{'memories':>9} {'ours saves/s':>13} {'mem0 saves/s':>13} {'ratio':>6} "
        f"{'ours p50 ms':>12} {'mem0 p50 ms':>12} {'ratio':>6} {'ours p99':>9} {'mem0 p99':>9}"
    )
    for o, m in zip(ours, mem0["checkpoints"], strict=True):
        o50, m50 = ms(o["search_s"], 0.5), ms(m["search_s"], 0.5)
        m_rate = m["saves_per_s"]
        mem0_saves = f"{m_rate:13.1f}" if m_rate else f"{'(loaded)':>13}"
        ratio = f"{o['saves_per_s'] / m_rate:6.2f}" if m_rate else f"{'':6}"
        print(
            f"{o['memories']:>9} {o['saves_per_s']:13.1f} {mem0_saves} {ratio} "
            f"{o50:12.2f} {m50:12.2f} {m50 / o50:6.2f} "
            f"{ms(o['search_s'], 0.99):9.2f} {ms(m['search_s'], 0.99):9.2f}"
        )
    first, last = ours[0], ours[-1]
    m_first, m_last = mem0["checkpoints"][0], mem0["checkpoints"][-1]
    saves_ratio = first["saves_per_s"] / m_first["saves_per_s"]
    search_ratio = ms(m_last["search_s"], 0.5) / ms(last["search_s"], 0.5)
    for label, value, target in (
        (f"saves/s at {first['memories']}", saves_ratio, TARGET_SAVES),
        (f"search p50 at {last['memories']}", search_ratio, TARGET_SEARCH),
    ):
        verdict = "MET" if value >= target else "NOT MET"
        print(f"{label}: {value:.2f}x mem0 (target >= {target}x) -> {verdict}")


def main() -> None:
    print(f"embedding precision: {service_precision()}", flush=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoints", type=lambda s: [int(x) for x in s.split(",")], default=[3_000, 20_000]
    )
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--mem0-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument(
        "--mem0-add-all",
        action="store_true",
        help="every mem0 memory through add() (~20 min at 20,000), not only the first part",
    )
    parser.add_argument(
        "--mem0-concurrency",
        type=int,
        default=1,
        help="mem0 adds in flight at once; more than 1 breaks its local Qdrant file here",
    )
    parser.add_argument("--encode-texts", type=int, default=1_000)
    args = parser.parse_args()
    saves, queries = workload(args)
    print(f"mem0: {len(saves)} saves, {len(queries)} queries per checkpoint…", flush=True)
    mem0 = run_mem0(args, saves, queries)
    for c in mem0["checkpoints"]:
        rate = f"{c['saves_per_s']:.1f} saves/s" if c["saves_per_s"] else "loaded"
        print(f"  mem0 at {c['memories']}: {rate}", flush=True)
    print("ours…", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-vs-mem0-") as tmp:
        ours = asyncio.run(run_ours(args, saves, queries, Path(tmp)))
    encoded = [text for _, text in saves[: min(args.checkpoints[0], args.encode_texts)]]
    print(f"encoding {len(encoded)} texts in this process…", flush=True)
    report(args, ours, mem0, encode_rates(encoded), len(encoded))


if __name__ == "__main__":
    main()
