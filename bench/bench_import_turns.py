"""Import of LongMemEval dev's turns through POST /memories/batch: the service's default
embedding against the float32 path it had before int8, in one run.

The turns are bench_retrieval.py's, in the product's shape (retrieval_data.py): the haystacks
of the first --questions questions (types taking turns; 0: every question), each question its
own user, saved in order in batches of 32 the way bench_retrieval.py stores them. Users are
imported side by side: each has one batch in flight at most, and --concurrency batches are in
flight in all, a free slot taking the next batch of the user waited on longest.

Two configurations of memory_service, each started with the gateway on a fresh temp data dir
for every run, alternated A, B, A, B (--rounds pairs) so that load from other work weighs on
both:

- A, float32: MEMORY_EMBED_PRECISION=float32 (and MEMORY_LONG_TEXT=mean, every window of a
  long text, where the service has that setting);
- B, as configured: the service's defaults, or the MEMORY_* settings this process has.

Each run's wall time from the first batch sent to the last answer gives turns/s (a short
warm-up goes first, untimed); every turn must come back from GET /export exactly once, under
its own message id. The ratio is B's turns over its seconds against A's. Beside it, turns per
CPU second of memory_service over the same span (/proc): on a machine shared with other work,
what the service did with the CPU it was given.
Target: B / A >= 1.6 (turns/s).

    python bench/bench_import_turns.py \
        --longmemeval ../shared/data/longmemeval-dev/longmemeval-dev.json
    python bench/bench_import_turns.py --longmemeval PATH --questions 0    # every haystack
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import deque
from pathlib import Path

import httpx
from bench_gateway_overhead import ISSUER, JWT_SECRET, gateway_stack
from bench_retrieval import BATCH_ITEMS, save_batch
from retrieval_data import Turn, load_longmemeval
from service_process import service_precision

from gateway.tokens import mint_token
from memory_service.config import MemorySettings

TARGET = 1.6
FLOAT32 = {"MEMORY_EMBED_PRECISION": "float32"}
if "long_text" in MemorySettings.model_fields:
    FLOAT32["MEMORY_LONG_TEXT"] = "mean"


def configured(variable: str, field: str) -> str:
    """The value memory_service takes for `field` from this process's environment."""
    return os.environ.get(variable, str(MemorySettings.model_fields[field].default))


def describe(settings: dict[str, str]) -> str:
    precision = settings.get("MEMORY_EMBED_PRECISION", service_precision())
    text = f"precision {precision}"
    if "long_text" in MemorySettings.model_fields:
        long_text = settings.get("MEMORY_LONG_TEXT", configured("MEMORY_LONG_TEXT", "long_text"))
        text += f", long text {long_text}"
    return text


def service_cpu_seconds() -> float:
    """CPU seconds (user and system) used so far by this process's memory_service children."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # fields[1] is the parent's pid, fields[11:13] utime and stime (proc(5)).
        if int(fields[1]) == os.getpid() and b"memory_service" in command:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(JWT_SECRET, user, issuer=ISSUER)}"}


async def import_users(
    http: httpx.AsyncClient, conversations: list[list[Turn]], concurrency: int
) -> dict[str, str]:
    """Saves every user's turns in order, users side by side; returns each turn's memory id."""
    batches = {
        turns[0].user: deque(
            turns[first : first + BATCH_ITEMS] for first in range(0, len(turns), BATCH_ITEMS)
        )
        for turns in conversations
        if turns
    }
    headers = {user: auth(user) for user in batches}
    waiting = deque(batches)
    stored: dict[str, str] = {}

    async def slot() -> None:
        while waiting:
            user = waiting.popleft()
            batch = batches[user].popleft()
            results = await save_batch(http, headers[user], batch)
            stored.update((turn.turn_id, r["id"]) for turn, r in zip(batch, results, strict=True))
            if batches[user]:
                waiting.append(user)

    await asyncio.gather(*(slot() for _ in range(concurrency)))
    return stored


async def exported_message_ids(http: httpx.AsyncClient, user: str) -> list[str]:
    async with http.stream("GET", "/export", headers=auth(user)) as response:
        response.raise_for_status()
        return [json.loads(line)["message_id"] async for line in response.aiter_lines() if line]


async def run(
    settings: dict[str, str], conversations: list[list[Turn]], concurrency: int
) -> tuple[float, float, bool]:
    """One import on a fresh stack: (seconds, memory_service's CPU seconds, every turn stored
    once under its own id)."""
    with tempfile.TemporaryDirectory(prefix="bench-import-turns-") as tmp:
        async with gateway_stack(Path(tmp), memory=settings) as (_, gateway_url):
            limits = httpx.Limits(max_connections=concurrency + 1, keepalive_expiry=30)
            async with httpx.AsyncClient(base_url=gateway_url, timeout=600, limits=limits) as http:
                warmup = [
                    Turn("warmup", f"warmup-{t.turn_id}", t.text, "warmup", t.created_at)
                    for t in conversations[0][:BATCH_ITEMS]
                ]
                await save_batch(http, auth("warmup"), warmup)
                started, cpu = time.perf_counter(), service_cpu_seconds()
                stored = await import_users(http, conversations, concurrency)
                seconds = time.perf_counter() - started
                cpu = service_cpu_seconds() - cpu
                once = len(set(stored.values())) == len(stored)
                for turns in conversations:
                    ids = await exported_message_ids(http, turns[0].user)
                    expected = {turn.turn_id for turn in turns}
                    once &= len(ids) == len(expected) and set(ids) == expected
                    once &= all(turn.turn_id in stored for turn in turns)
    return seconds, cpu, once


async def bench(args: argparse.Namespace, conversations: list[list[Turn]]) -> None:
    sides = {"A": FLOAT32, "B": {}}
    turns = sum(map(len, conversations))
    seconds: dict[str, float] = {"A": 0.0, "B": 0.0}
    cpu_seconds: dict[str, float] = {"A": 0.0, "B": 0.0}
    every_turn_once = True
    for round_ in range(args.rounds):
        for side, settings in sides.items():
            load = os.getloadavg()[0]
            took, cpu, once = await run(settings, conversations, args.concurrency)
            seconds[side] += took
            cpu_seconds[side] += cpu
            every_turn_once &= once
            print(
                f"round {round_ + 1}, {side} ({describe(settings)}): {turns} turns in "
                f"{took:.1f} s = {turns / took:.1f} turns/s, {turns / cpu:.1f} turns per CPU "
                f"second of memory_service; each stored once: {once} "
                f"(load average {load:.2f} before, {os.getloadavg()[0]:.2f} after)",
                flush=True,
            )
    rates = {side: args.rounds * turns / s for side, s in seconds.items()}
    per_cpu = {side: args.rounds * turns / s for side, s in cpu_seconds.items()}
    ratio = rates["B"] / rates["A"]
    print()
    for side, settings in sides.items():
        print(
            f"{side} ({describe(settings)}): {rates[side]:.1f} turns/s, {per_cpu[side]:.1f} "
            f"turns per CPU second of memory_service, over {args.rounds} runs"
        )
    print(f"per CPU second of memory_service: B / A = {per_cpu['B'] / per_cpu['A']:.2f}")
    met = ratio >= TARGET and every_turn_once
    print(
        f"B / A = {ratio:.2f} (target >= {TARGET}); every turn stored once in every run: "
        f"{every_turn_once} -> {'MET' if met else 'NOT MET'}"
    )


def main() -> None:
    print(f"embedding precision: A float32, B {service_precision()}", flush=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--longmemeval", type=Path, required=True, help="longmemeval-dev.json")
    parser.add_argument(
        "--questions", type=int, default=5, help="haystacks of the first N questions (0: all)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="A, B pairs")
    parser.add_argument("--concurrency", type=int, default=4, help="batches in flight")
    args = parser.parse_args()
    dataset = load_longmemeval(args.longmemeval)
    conversations = dataset.conversations[: args.questions or None]
    texts = [turn.text for turns in conversations for turn in turns]
    print(
        f"{len(texts)} turns of {len(conversations)} LongMemEval haystacks "
        f"({sum(map(len, texts)) / len(texts):.0f} characters on average), "
        f"{args.concurrency} batches of {BATCH_ITEMS} in flight"
    )
    asyncio.run(bench(args, conversations))


if __name__ == "__main__":
    main()
