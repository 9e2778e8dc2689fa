"""Time to first token through the gateway against the provider's own, measured in one run.

memory_service, chat_service and the gateway run as child processes on loopback
(`python -m ...`); a stand-in provider speaking OpenAI's streaming chat completions runs in
this process (tests/support/llm_stand_in.py) and sends its first token at once. One user
owns a few hundred memories, so every chat does a real retrieval. Each round sends, back
to back:

- a streaming request straight to the stand-in, timed to its first content chunk;
- POST /chat/stream through the gateway, timed to its first `delta` event.

- POST /search through the gateway with the same question and top_k: the retrieval part
  of the difference (embedding the question and the hybrid search), for attribution.

The difference is what Memory Layer adds before the first token: auth, rate limits,
two gRPC hops, embedding the question, the search and prompt assembly.
Target: p50(gateway) - p50(direct) <= 30 ms.

    python bench/bench_chat_ttft.py
    python bench/bench_chat_ttft.py --requests 100 --memories 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from service_process import NO_RATE_LIMITS, ProcessStack

from gateway.tokens import mint_token
from tests.support.llm_stand_in import StandInProvider

SERVICE_TOKEN = "bench-chat-service-token"  # noqa: S105 - a throwaway local stack
JWT_SECRET = "bench-chat-jwt-secret-0123456789abcdef0123"  # noqa: S105
ISSUER = "memory-layer-bench"
TARGET_MS = 30.0
STARTUP_SECONDS = 300.0

TOPICS = (
    "pnpm workspaces in a monorepo",
    "a vegetarian lasagna for six",
    "TCP versus UDP for game servers",
    "three days in Lisbon in spring",
    "asyncio event loops explained simply",
    "a sourdough starter that will not rise",
    "negotiating a data engineer salary",
    "terraform state in an S3 bucket",
    "training for a first marathon",
    "window seats on long flights",
)


async def direct_ttft(client: httpx.AsyncClient, url: str, question: str) -> float:
    body = {
        "model": "bench",
        "stream": True,
        "messages": [{"role": "user", "content": question}],
    }
    started = time.perf_counter()
    async with client.stream("POST", url, json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"content"' in line:
                return time.perf_counter() - started
    raise RuntimeError("the stand-in sent no content")


async def gateway_ttft(client: httpx.AsyncClient, question: str, top_k: int) -> float:
    started = time.perf_counter()
    event = ""
    async with client.stream(
        "POST", "/chat/stream", json={"message": question, "top_k": top_k}
    ) as response:
        if response.status_code != 200:
            raise RuntimeError(f"gateway answered {response.status_code}: {await response.aread()}")
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "delta":
                elapsed = time.perf_counter() - started
                json.loads(line.removeprefix("data: "))
                return elapsed
    raise RuntimeError("the gateway sent no delta")


async def search_seconds(client: httpx.AsyncClient, question: str, top_k: int) -> float:
    started = time.perf_counter()
    response = await client.post("/search", json={"query": question, "top_k": top_k})
    response.raise_for_status()
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def run(args: argparse.Namespace) -> int:
    stand_in = StandInProvider()
    await stand_in.start()
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        log_dir = Path(tmp)
        stack = ProcessStack(
            log_dir / "memory",
            jwt_secret=JWT_SECRET,
            issuer=ISSUER,
            service_token=SERVICE_TOKEN,
            chat={
                "CHAT_LLM_PROVIDER": "openai",
                "CHAT_LLM_BASE_URL": f"http://127.0.0.1:{stand_in.port}/v1",
                "CHAT_LLM_API_KEY": "sk-bench",
                "CHAT_LLM_MODEL": "bench",
            },
            gateway=NO_RATE_LIMITS,
            log_dir=log_dir,
            inherit_settings=True,
        )
        url = stack.url
        try:
            await stack.start_async(STARTUP_SECONDS)
            token = mint_token(JWT_SECRET, "bench-user", issuer=ISSUER, ttl_seconds=3600)
            headers = {"Authorization": f"Bearer {token}"}
            async with (
                httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as gateway,
                httpx.AsyncClient(timeout=30.0) as direct,
            ):
                for i in range(args.memories):
                    saved = await gateway.post(
                        "/save-prompt",
                        json={"prompt": f"Question {i} about {TOPICS[i % len(TOPICS)]}"},
                    )
                    saved.raise_for_status()
                provider_url = f"http://127.0.0.1:{stand_in.port}/v1/chat/completions"
                for i in range(args.warmup):
                    await direct_ttft(direct, provider_url, TOPICS[i % len(TOPICS)])
                    await gateway_ttft(gateway, TOPICS[i % len(TOPICS)], args.top_k)
                direct_s: list[float] = []
                gateway_s: list[float] = []
                search_s: list[float] = []
                for i in range(args.requests):
                    question = f"What did I ask about {TOPICS[i % len(TOPICS)]}?"
                    # Alternate the order so drift on a shared machine hits every side.
                    if i % 2:
                        direct_s.append(await direct_ttft(direct, provider_url, question))
                        gateway_s.append(await gateway_ttft(gateway, question, args.top_k))
                        search_s.append(await search_seconds(gateway, question, args.top_k))
                    else:
                        search_s.append(await search_seconds(gateway, question, args.top_k))
                        gateway_s.append(await gateway_ttft(gateway, question, args.top_k))
                        direct_s.append(await direct_ttft(direct, provider_url, question))
        finally:
            stack.stop()
            await stand_in.close()

    paired = [(g - d) * 1000 for g, d in zip(gateway_s, direct_s, strict=True)]
    rows = [
        ("provider direct (first content chunk)", [s * 1000 for s in direct_s]),
        ("gateway /chat/stream (first delta)", [s * 1000 for s in gateway_s]),
        ("of which retrieval: gateway /search", [s * 1000 for s in search_s]),
    ]
    print(
        f"time to first token, {args.requests} requests each, "
        f"{args.memories} memories, top_k={args.top_k}"
    )
    print(f"{'':40} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in rows[:2]:
        print(f"{name:40} {percentile(values, 50):8.2f} {percentile(values, 99):8.2f}")
    diff50 = percentile(rows[1][1], 50) - percentile(rows[0][1], 50)
    diff99 = percentile(rows[1][1], 99) - percentile(rows[0][1], 99)
    print(f"{'difference (gateway - direct)':40} {diff50:8.2f} {diff99:8.2f}")
    print(
        f"{'per-request difference':40} {statistics.median(paired):8.2f} "
        f"{percentile(paired, 99):8.2f}"
    )
    retrieval = rows[2][1]
    print(f"{rows[2][0]:40} {percentile(retrieval, 50):8.2f} {percentile(retrieval, 99):8.2f}")
    beyond = [(g - d - r) * 1000 for g, d, r in zip(gateway_s, direct_s, search_s, strict=True)]
    print(
        f"{'difference beyond retrieval (per request)':40} {statistics.median(beyond):8.2f} "
        f"{percentile(beyond, 99):8.2f}"
    )
    verdict = "met" if diff50 <= TARGET_MS else "NOT met"
    print(f"target: difference p50 <= {TARGET_MS:.0f} ms: {verdict}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--memories", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=5)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
