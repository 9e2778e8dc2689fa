"""Soak: minutes of mixed extension traffic at a steady rate through the real stack
(memory_service, chat_service in offline mode and the gateway, each its own process on
loopback), reporting the error rate, latency and the resident memory of every service over time.

Pass: error rate <= 0.1 % and, for every service, resident memory after the warm-up stays
within 10 % of its first post-warm-up sample.

    python bench/soak.py                     # 10 minutes at 10 requests/s
    python bench/soak.py --minutes 2 --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from jose import jwt
from service_process import NO_RATE_LIMITS, ProcessStack

from tests.support.processes import ServiceProcess

ISSUER = "http://127.0.0.1/auth/v1"
MAX_ERROR_RATE = 0.001
MAX_RSS_GROWTH = 0.10
USERS = [f"soak-user-{n}" for n in range(20)]
TOPICS = [
    "configure pnpm workspaces in a monorepo",
    "vegetarian lasagna recipe for six people",
    "difference between TCP and UDP",
    "three day trip to Lisbon in spring",
    "asyncio event loop explained simply",
    "how to negotiate a salary offer",
    "kubernetes readiness versus liveness probes",
    "best way to learn Portuguese quickly",
]
# Operation mix, weights summing to 100: mostly saves and the searches a prompt triggers.
MIX = {
    "save-prompt": 35,
    "save-response": 10,
    "search": 20,
    "context": 15,
    "list": 8,
    "get": 5,
    "chat": 4,
    "export": 2,
    "delete": 1,
}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Stack:
    data_dir: Path
    log_dir: Path
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    service_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    url: str = ""
    running: ProcessStack | None = None

    def start(self) -> None:
        """Builds the stack; wait_ready() starts it (chat_service in its offline mode)."""
        self.running = ProcessStack(
            self.data_dir,
            jwt_secret=self.secret,
            issuer=ISSUER,
            service_token=self.service_token,
            memory={"MEMORY_LOG_LEVEL": "WARNING"},
            chat={"CHAT_LOG_LEVEL": "WARNING"},
            gateway={"GATEWAY_LOG_LEVEL": "WARNING", **NO_RATE_LIMITS},
            log_dir=self.log_dir,
        )
        self.processes = self.running.processes
        self.url = self.running.url

    async def wait_ready(self, within: float = 300.0) -> None:
        assert self.running is not None
        try:
            await self.running.start_async(within)
        except RuntimeError as error:
            raise RuntimeError(f"stack not ready: {error}; logs in {self.log_dir}") from None

    def token(self, user: str) -> str:
        now = int(time.time())
        claims = {
            "sub": user,
            "aud": "authenticated",
            "iss": ISSUER,
            "iat": now,
            "exp": now + 86400,
        }
        return str(jwt.encode(claims, self.secret, algorithm="HS256"))

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()


@dataclass
class Traffic:
    stack: Stack
    rng: random.Random
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    saved: dict[str, list[str]] = field(default_factory=dict)
    sent: int = 0

    async def one(self, client: httpx.AsyncClient) -> None:
        user = self.rng.choice(USERS)
        headers = {"Authorization": f"Bearer {self.stack.token(user)}"}
        operation = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        topic = self.rng.choice(TOPICS)
        mine = self.saved.setdefault(user, [])
        self.sent += 1
        n = self.sent
        ok = {200}
        if operation == "save-prompt":
            request = client.post(
                "/save-prompt",
                headers=headers,
                json={
                    "prompt": f"{topic}, question {n}",
                    "message_id": f"m-{n}",
                    "provider": "chatgpt",
                },
            )
        elif operation == "save-response" and mine:
            request = client.post(
                "/save-response",
                headers=headers,
                json={
                    "response": f"An answer about {topic} ({n})",
                    "prompt_id": self.rng.choice(mine),
                },
            )
        elif operation == "search":
            request = client.post("/search", headers=headers, json={"query": topic, "top_k": 10})
        elif operation == "context":
            request = client.post("/context", headers=headers, json={"prompt": topic, "top_k": 5})
        elif operation == "get" and mine:
            request = client.get(f"/memories/{self.rng.choice(mine)}", headers=headers)
        elif operation == "chat":
            request = client.post(
                "/chat", headers=headers, json={"message": f"what did I ask about {topic}?"}
            )
        elif operation == "export":
            request = client.get("/export", headers=headers)
        elif operation == "delete" and mine:
            victim = mine.pop(self.rng.randrange(len(mine)))
            request = client.delete(f"/memories/{victim}", headers=headers)
            ok = {204}
        else:
            operation = "list"
            request = client.get("/memories", headers=headers, params={"limit": 50})
        started = time.perf_counter()
        try:
            response = await request
        except httpx.HTTPError as exc:
            self.errors[f"{operation}: {type(exc).__name__}"] += 1
            return
        self.latencies.setdefault(operation, []).append(time.perf_counter() - started)
        self.statuses[str(response.status_code)] += 1
        if response.status_code not in ok:
            self.errors[f"{operation}: {response.status_code}"] += 1
        elif operation == "save-prompt":
            mine.append(response.json()["id"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def soak(minutes: float, rate: float, warmup: float, sample_every: float, seed: int) -> int:
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        stack = Stack(Path(tmp) / "data", Path(tmp))
        stack.start()
        try:
            await stack.wait_ready()
            print(f"stack ready at {stack.url}; {minutes} min at {rate} req/s, seed {seed}")
            return await _drive(stack, minutes, rate, warmup, sample_every, seed)
        finally:
            stack.stop()


async def _drive(
    stack: Stack, minutes: float, rate: float, warmup: float, sample_every: float, seed: int
) -> int:
    traffic = Traffic(stack, random.Random(seed))
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in stack.processes}
    in_flight: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    end = started + minutes * 60
    next_sample = started
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=stack.url, timeout=30.0, limits=limits) as client:
        tick = 0
        # Open loop: requests start on schedule whether or not earlier ones have finished,
        # so a slowing service shows up as latency and errors, not as a lower rate.
        while (now := time.monotonic()) < end:
            if now >= next_sample:
                for name, process in stack.processes.items():
                    samples[name].append((now - started, rss_kb(process.pid)))
                next_sample += sample_every
            task = asyncio.create_task(traffic.one(client))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            tick += 1
            await asyncio.sleep(max(0.0, started + tick / rate - time.monotonic()))
        if in_flight:
            await asyncio.wait(in_flight, timeout=60)
    return report(traffic, samples, minutes * 60, warmup)


def report(
    traffic: Traffic, samples: dict[str, list[tuple[float, int]]], seconds: float, warmup: float
) -> int:
    total = traffic.statuses.total() + sum(
        n for key, n in traffic.errors.items() if not key.split(": ")[1].isdigit()
    )
    failed = traffic.errors.total()
    error_rate = failed / total if total else 1.0
    print(
        f"\nrequests: {total} in {seconds:.0f}s ({total / seconds:.1f}/s), "
        f"statuses {dict(traffic.statuses)}"
    )
    print(f"errors: {failed} ({error_rate:.3%}) {dict(traffic.errors) if failed else ''}")
    print("latency ms (p50 / p95 / p99):")
    for operation, values in sorted(traffic.latencies.items()):
        print(
            f"  {operation:14s} n={len(values):5d}  {percentile(values, 0.5) * 1000:7.1f} "
            f"{percentile(values, 0.95) * 1000:7.1f} {percentile(values, 0.99) * 1000:7.1f}"
        )
    passed = error_rate <= MAX_ERROR_RATE
    print(f"resident memory (MB), warm-up {warmup:.0f}s excluded from the growth figure:")
    for name, series in samples.items():
        after = [kb for t, kb in series if t >= warmup]
        if not after:
            print(f"  {name}: no samples after warm-up")
            passed = False
            continue
        growth = (max(after) - after[0]) / after[0]
        trail = " ".join(f"{kb / 1024:.0f}" for _, kb in series)
        verdict = "ok" if growth <= MAX_RSS_GROWTH else "GREW"
        print(
            f"  {name:15s} start {series[0][1] / 1024:6.0f}  after warm-up {after[0] / 1024:6.0f}  "
            f"max {max(after) / 1024:6.0f}  end {after[-1] / 1024:6.0f}  "
            f"growth {growth:+.1%} {verdict}\n    samples: {trail}"
        )
        passed = passed and growth <= MAX_RSS_GROWTH
    print(f"\nsoak {'PASSED' if passed else 'FAILED'}")
    return 0 if passed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds; default 20%% of the run"
    )
    parser.add_argument(
        "--sample-every", type=float, default=5.0, help="seconds between RSS samples"
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else args.minutes * 60 * 0.2
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    return asyncio.run(soak(args.minutes, args.rate, warmup, args.sample_every, seed))


if __name__ == "__main__":
    sys.exit(main())
