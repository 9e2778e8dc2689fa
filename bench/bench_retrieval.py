"""Retrieval quality on LoCoMo-format conversations, through the real gateway, in one run.

LoCoMo (Maharana et al., "Evaluating Very Long-Term Conversational Memory of LLM Agents",
ACL 2024) gives long two-person conversations and questions about them, each annotated with
the turns that hold its answer. memory_service and the gateway run as child processes on
loopback with a fresh embedded store. Every turn of a conversation is saved, in order, by
that conversation's own user through POST /save-prompt:

    text             "({session date_time}) {speaker}: {text}" [+ " [shares a photo: {caption}]"]
    message_id       "{sample_id}:{dia_id}"
    conversation_id  "{sample_id}:session_{n}"
    metadata         {"dia_id": dia_id}

Then every question (category 5, adversarial questions with no answer in the conversation,
left out) is searched by its conversation's user with top_k=10:

- default: POST /search naming no mode (the server's default ranking);
- dense-only and BM25-only: POST /search with mode "semantic" / "keyword";
- floor on: POST /context with top_k=10 (only memories at or above the relevance floor).
  Target: recall@10 with the floor >= 0.95 x the default's;
- rrf: the Search RPC with SEARCH_MODE_RRF, plain reciprocal-rank fusion (the ranking the
  default used before score fusion), straight to memory_service.

A hit is a returned memory whose metadata dia_id is one of the question's evidence turns.
Reported overall and per category: recall@1/5/10 (share of a question's evidence turns
found), hit@1/5/10 (at least one found) and MRR@10. Search latency is measured over gRPC,
default and rrf alternating for each question so noise hits both.
Targets: default recall@10 >= BM25-only + 0.04; p50(default) / p50(rrf) <= 1.5.

Those figures are in-sample: the ranking's constants were chosen on these conversations.
With --folds K (5 by default; the development split's 5 conversations make that leave one
conversation out) the services then stop and retrieval_cv.py cross-validates the constants
by conversation on the same stored data, in process, with today's ranking, BM25-only and
dense-only beside the default in the same run.

    python bench/bench_retrieval.py --data ../shared/data/locomo-dev/locomo-dev.json --folds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from bench_gateway_overhead import ISSUER, JWT_SECRET, SERVICE_TOKEN, gateway_stack
from retrieval_cv import FEEDBACK_WEIGHTS, fold_assignment, prepare
from retrieval_cv import report as report_cv
from service_process import service_precision

from gateway.tokens import mint_token
from memory_service import ranking
from memory_service.models import memory_point_id
from protos.memory.v1 import memory_pb2 as pb
from protos.memory.v1 import memory_pb2_grpc
from service_kit.identity import Identity, outgoing_metadata

TOP_K = 10
KS = (1, 5, 10)
SKIPPED_CATEGORY = 5
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
TARGET_MARGIN_OVER_BM25 = 0.04
TARGET_FLOOR_RATIO = 0.95
TARGET_P50_RATIO = 1.5


@dataclass(frozen=True, slots=True)
class Turn:
    user: str
    text: str
    message_id: str
    conversation_id: str
    dia_id: str


@dataclass(frozen=True, slots=True)
class Question:
    user: str
    text: str
    evidence: frozenset[str]
    category: int


@dataclass
class Scores:
    """Running sums of the per-question figures of one way of searching."""

    questions: int = 0
    recall: dict[int, float] = field(default_factory=lambda: dict.fromkeys(KS, 0.0))
    hit: dict[int, float] = field(default_factory=lambda: dict.fromkeys(KS, 0.0))
    mrr: float = 0.0

    def add(self, ranked: list[str], evidence: frozenset[str]) -> None:
        self.questions += 1
        for k in KS:
            found = evidence.intersection(ranked[:k])
            self.recall[k] += len(found) / len(evidence)
            self.hit[k] += bool(found)
        for rank, dia_id in enumerate(ranked[:TOP_K], start=1):
            if dia_id in evidence:
                self.mrr += 1 / rank
                break

    def row(self) -> list[float]:
        n = max(self.questions, 1)
        return [
            *(self.recall[k] / n for k in KS),
            *(self.hit[k] / n for k in KS),
            self.mrr / n,
        ]


def load(path: Path) -> tuple[list[list[Turn]], list[Question]]:
    """Turns per conversation in order, and the questions that have evidence to find."""
    conversations, questions = [], []
    for sample in json.loads(path.read_text()):
        sample_id = str(sample["sample_id"])
        user = f"locomo-{sample_id}"
        body = sample["conversation"]
        turns = []
        session = 1
        while f"session_{session}" in body:
            when = body.get(f"session_{session}_date_time", "")
            for turn in body[f"session_{session}"]:
                text = f"({when}) {turn['speaker']}: {turn['text']}"
                if turn.get("blip_caption"):
                    text += f" [shares a photo: {turn['blip_caption']}]"
                turns.append(
                    Turn(
                        user=user,
                        text=text,
                        message_id=f"{sample_id}:{turn['dia_id']}",
                        conversation_id=f"{sample_id}:session_{session}",
                        dia_id=turn["dia_id"],
                    )
                )
            session += 1
        conversations.append(turns)
        for qa in sample["qa"]:
            if qa.get("category") == SKIPPED_CATEGORY:
                continue
            # A few annotations list two turns in one string ("D8:6; D9:17").
            evidence = frozenset(
                part.strip() for item in qa["evidence"] for part in item.split(";") if part.strip()
            )
            if evidence:
                questions.append(Question(user, qa["question"], evidence, int(qa["category"])))
    return conversations, questions


async def bounded(calls: Iterable[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    pending = iter(calls)

    async def worker() -> None:
        for call in pending:
            await call()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def bench(args: argparse.Namespace, data_dir: Path) -> None:
    async with gateway_stack(data_dir) as (memory_addr, gateway_url):
        rankings = await measure(args, memory_addr, gateway_url)
    if args.folds < 2:
        return
    conversations, questions = load(args.data)
    dia_of = {
        memory_point_id(turn.user, turn.message_id): turn.dia_id
        for turns in conversations
        for turn in turns
    }
    weights = sorted({*FEEDBACK_WEIGHTS, ranking.DEFAULT.feedback_weight})
    print(f"\nopening the store in process; candidates for {len(questions)} questions…")
    prepared = await prepare(
        data_dir / "memory", questions, dia_of, weights, args.warmup, SERVICE_TOKEN
    )
    users = [turns[0].user for turns in conversations if turns]
    gateway = {
        way: [rankings[way, i] for i in range(len(questions))]
        for way in ("default", "BM25-only", "dense-only")
    }
    report_cv(questions, prepared, gateway, args.folds, fold_assignment(users, args.folds))


def dia_ids(results: list[dict[str, Any]]) -> list[str]:
    return [r["metadata"].get("dia_id", "") for r in results]


async def measure(
    args: argparse.Namespace, memory_addr: str, gateway_url: str
) -> dict[tuple[str, int], list[str]]:
    """Saves every turn, searches every question each way; prints the in-sample table and
    returns each way's evidence ids per question."""
    conversations, questions = load(args.data)
    users = {turns[0].user for turns in conversations if turns}
    tokens = {user: mint_token(JWT_SECRET, user, issuer=ISSUER) for user in users}

    def auth(user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[user]}"}

    limits = httpx.Limits(max_connections=args.concurrency, keepalive_expiry=30)
    async with (
        httpx.AsyncClient(base_url=gateway_url, timeout=60, limits=limits) as http,
        grpc.aio.insecure_channel(memory_addr) as channel,
    ):
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        total = sum(len(turns) for turns in conversations)
        print(f"saving {total} turns of {len(conversations)} conversations through the gateway…")
        started = time.perf_counter()

        async def save_conversation(turns: list[Turn]) -> None:
            # In order: a conversation's neighbours are the turns saved next to each other.
            for turn in turns:
                body = {
                    "prompt": turn.text,
                    "message_id": turn.message_id,
                    "conversation_id": turn.conversation_id,
                    "metadata": {"dia_id": turn.dia_id},
                }
                response = await http.post("/save-prompt", json=body, headers=auth(turn.user))
                response.raise_for_status()

        await asyncio.gather(*(save_conversation(turns) for turns in conversations))
        print(f"  saved in {time.perf_counter() - started:.0f} s")

        ways = ("default", "dense-only", "BM25-only", "floor on", "rrf (gRPC)")
        overall = {way: Scores() for way in ways}
        by_category = {(way, c): Scores() for way in ways for c in CATEGORIES}
        rankings: dict[tuple[str, int], list[str]] = {}

        async def search(way: str, index: int, question: Question) -> None:
            if way == "floor on":
                body = {"prompt": question.text, "top_k": TOP_K, "max_tokens": 8000}
                response = await http.post("/context", json=body, headers=auth(question.user))
                response.raise_for_status()
                results = response.json()["memories"]
            else:
                body = {"query": question.text, "top_k": TOP_K}
                if way != "default":
                    body["mode"] = "semantic" if way == "dense-only" else "keyword"
                response = await http.post("/search", json=body, headers=auth(question.user))
                response.raise_for_status()
                results = response.json()["results"]
            rankings[way, index] = dia_ids(results)

        print(f"searching {len(questions)} questions four ways through the gateway…")
        await bounded(
            (
                lambda way=way, i=i, q=q: search(way, i, q)
                for i, q in enumerate(questions)
                for way in ways[:4]
            ),
            args.concurrency,
        )

        print("timing Search over gRPC, default and rrf alternating…")
        latencies: dict[str, list[float]] = {"default": [], "rrf": []}
        modes = {"default": pb.SEARCH_MODE_UNSPECIFIED, "rrf": pb.SEARCH_MODE_RRF}
        for index, question in enumerate(questions):
            metadata = outgoing_metadata(Identity(question.user), SERVICE_TOKEN)
            order = ("default", "rrf") if index % 2 == 0 else ("rrf", "default")
            for name in order:
                request = pb.SearchRequest(query=question.text, top_k=TOP_K, mode=modes[name])
                began = time.perf_counter()
                reply = await stub.Search(request, metadata=metadata, timeout=30)
                elapsed = time.perf_counter() - began
                if index >= args.warmup:
                    latencies[name].append(elapsed)
                if name == "rrf":
                    ranked = [r.memory.metadata.get("dia_id", "") for r in reply.results]
                    rankings["rrf (gRPC)", index] = ranked

        for index, question in enumerate(questions):
            for way in ways:
                ranked = rankings[way, index]
                overall[way].add(ranked, question.evidence)
                by_category[way, question.category].add(ranked, question.evidence)

    report(overall, by_category, latencies, len(questions))
    return rankings


def report(
    overall: dict[str, Scores],
    by_category: dict[tuple[str, int], Scores],
    latencies: dict[str, list[float]],
    questions: int,
) -> None:
    header = f"{'':<14}" + "".join(f"{h:>8}" for h in ("R@1", "R@5", "R@10", "H@1", "H@5"))
    header += f"{'H@10':>8}{'MRR@10':>8}"
    print(f"\n{questions} questions (category {SKIPPED_CATEGORY} left out), top_k={TOP_K}")
    print(header)
    for way, scores in overall.items():
        print(f"{way:<14}" + "".join(f"{v:>8.3f}" for v in scores.row()))
    for category, name in CATEGORIES.items():
        count = by_category["default", category].questions
        print(f"\ncategory {category} ({name}, {count} questions)")
        for way in overall:
            row = by_category[way, category].row()
            print(f"{way:<14}" + "".join(f"{v:>8.3f}" for v in row))

    default = overall["default"].row()
    bm25 = overall["BM25-only"].row()
    floor = overall["floor on"].row()
    p50 = {name: statistics.median(samples) * 1000 for name, samples in latencies.items()}
    margin = default[2] - bm25[2]
    floor_ratio = floor[2] / default[2] if default[2] else 0.0
    p50_ratio = p50["default"] / p50["rrf"]
    print(
        f"\ndefault recall@10 {default[2]:.3f}, MRR@10 {default[6]:.3f}; "
        f"{margin:+.3f} over BM25-only (target >= +{TARGET_MARGIN_OVER_BM25})"
    )
    print(
        f"floor on: recall@10 {floor[2]:.3f} = {floor_ratio:.3f} x default "
        f"(target >= {TARGET_FLOOR_RATIO})"
    )
    print(
        f"Search p50 over gRPC: default {p50['default']:.1f} ms, rrf {p50['rrf']:.1f} ms, "
        f"ratio {p50_ratio:.2f} (target <= {TARGET_P50_RATIO})"
    )


def main() -> None:
    print(f"embedding precision: {service_precision()}", flush=True)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a LoCoMo-format JSON file")
    parser.add_argument("--concurrency", type=int, default=4, help="searches in flight")
    parser.add_argument("--warmup", type=int, default=20, help="untimed latency queries")
    parser.add_argument("--data-dir", type=Path, help="where the store lives (default: temp)")
    parser.add_argument(
        "--folds",
        type=int,
        default=5,
        help="cross-validate the ranking's constants over this many folds of conversations "
        "(as many as there are conversations: leave one out; 0: skip)",
    )
    args = parser.parse_args()
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(bench(args, args.data_dir))
        return
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    main()
