"""Retrieval quality on LoCoMo's development split and LongMemEval's development subset, in the
product's shape, through the real gateway, in one run.

LoCoMo (Maharana et al., ACL 2024) is two people talking; LongMemEval (Wu et al., ICLR 2025)
is a person's chats with an assistant, the data the extension captures. retrieval_data.py
says how each becomes what the product would have stored: words as said, the session's time
as `created_at`, answers linked to their prompts, saved in order through POST /memories/batch
by each conversation's (LoCoMo) or question's (LongMemEval) own user. memory_service and the
gateway run as child processes on loopback with an embedded store.

Every question is then searched by its user with top_k=10, through the gateway:

- default: POST /search naming no mode (the server's default ranking);
- dense-only and BM25-only: POST /search with mode "semantic" / "keyword";
- floor on: POST /context with top_k=10 (only memories at or above the relevance floor).

A hit is a returned memory whose metadata "turn" is one of the question's evidence turns.
Reported per dataset, overall and per category: recall@1/5/10 (share of a question's evidence
turns found), hit@1/5/10 (at least one found) and MRR@10. Search latency over gRPC is timed
for the default and plain reciprocal-rank fusion (rrf), alternating so noise hits both.

The gateway's figures are in-sample. With --folds K the services then stop and
retrieval_cv.py cross-validates the ranking's constants on both sets together (folds by
conversation for LoCoMo, by question for LongMemEval), in process, on the same stored data.

Embedding LongMemEval's 30,000 long turns takes tens of minutes: with --data-dir the store is
kept, and a later run with the same directory and data saves nothing and searches it again.

    python bench/bench_retrieval.py --locomo ../shared/data/locomo-dev/locomo-dev.json \
        --longmemeval ../shared/data/longmemeval-dev/longmemeval-dev.json \
        --data-dir /tmp/bench-retrieval --folds 5
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
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
from retrieval_cv import fold_assignment, prepare
from retrieval_cv import report as report_cv
from retrieval_data import Dataset, Question, Turn, load_locomo, load_longmemeval
from service_process import service_precision

from gateway.tokens import mint_token
from memory_service.config import MemorySettings
from protos.memory.v1 import memory_pb2 as pb
from protos.memory.v1 import memory_pb2_grpc
from service_kit.identity import Identity, outgoing_metadata

TOP_K = 10
KS = (1, 5, 10)
TARGET_FLOOR_RATIO = 0.95
TARGET_P50_RATIO = 1.5
# int8 recall@10 against float32's, default and dense-only.
TARGET_PRECISION_DELTA = 0.005
BATCH_ITEMS = 32
SAVE_ATTEMPTS = 5
# Written into the data directory once every turn is stored: which data it holds, and each
# stored memory's evidence id.
STORED = "stored.json"


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
        for rank, turn_id in enumerate(ranked[:TOP_K], start=1):
            if turn_id in evidence:
                self.mrr += 1 / rank
                break

    def row(self) -> list[float]:
        n = max(self.questions, 1)
        return [
            *(self.recall[k] / n for k in KS),
            *(self.hit[k] / n for k in KS),
            self.mrr / n,
        ]


async def bounded(calls: Iterable[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    pending = iter(calls)

    async def worker() -> None:
        for call in pending:
            await call()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def datasets(args: argparse.Namespace) -> list[Dataset]:
    loaded = []
    if args.locomo is not None:
        loaded.append(load_locomo(args.locomo))
    if args.longmemeval is not None:
        loaded.append(load_longmemeval(args.longmemeval, args.per_type))
    return loaded


def data_key(args: argparse.Namespace, precision: str) -> str:
    """What a stored directory holds: the data files' contents, the shape they were saved in
    (retrieval_data.py's source), the precision they were embedded in and how long texts
    were (MEMORY_LONG_TEXT)."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for path in (args.locomo, args.longmemeval, here / "retrieval_data.py"):
        digest.update(path.read_bytes() if path is not None else b"-")
    digest.update(str(args.per_type).encode())
    digest.update(precision.encode())
    long_text = MemorySettings.model_fields["long_text"].default
    digest.update(os.environ.get("MEMORY_LONG_TEXT", long_text).encode())
    return digest.hexdigest()


async def bench(args: argparse.Namespace, base_dir: Path) -> None:
    sets = datasets(args)
    runs: dict[str, tuple[Path, dict[str, str], dict[str, dict[str, list[list[str]]]]]] = {}
    for precision in args.precisions:
        data_dir = base_dir / precision if len(args.precisions) > 1 else base_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        # The services inherit this process's environment.
        os.environ["MEMORY_EMBED_PRECISION"] = precision
        print(f"\nembedding precision: {precision}, store in {data_dir}", flush=True)
        async with gateway_stack(data_dir) as (memory_addr, gateway_url):
            turn_of = await store_all(args, sets, data_dir, gateway_url, precision)
            rankings = {
                dataset.name: await measure(args, dataset, memory_addr, gateway_url, turn_of)
                for dataset in sets
            }
        runs[precision] = (data_dir, turn_of, rankings)
    if len(runs) > 1:
        report_precisions(sets, {p: rankings for p, (_, _, rankings) in runs.items()})
    if args.folds < 2:
        return
    data_dir, turn_of, rankings = runs[args.precisions[0]]
    # The store in process embeds its queries in the precision its memories were stored in.
    os.environ["MEMORY_EMBED_PRECISION"] = args.precisions[0]
    questions = [q for dataset in sets for q in dataset.questions]
    print(f"\nopening the {args.precisions[0]} store in process; candidates for {len(questions)}…")
    prepared = await prepare(data_dir / "memory", questions, turn_of, SERVICE_TOKEN)
    folds: dict[str, int] = {}
    for dataset in sets:
        units = (
            [turns[0].user for turns in dataset.conversations if turns]
            if dataset.fold_unit == "conversation"
            else [q.user for q in dataset.questions]
        )
        folds.update(fold_assignment(units, args.folds))
    report_cv(
        [(dataset.name, dataset.fold_unit, dataset.questions) for dataset in sets],
        prepared,
        rankings,
        args.folds,
        folds,
    )


def report_precisions(
    sets: list[Dataset], runs: dict[str, dict[str, dict[str, list[list[str]]]]]
) -> None:
    """Recall@10 and MRR@10 of the default and dense-only searches in each precision, and
    each one's difference from the first precision's, per set."""
    first, *others = runs
    print(f"\nprecision against {first} (target: recall@10 within {TARGET_PRECISION_DELTA})")
    print(f"{'set':<14}{'ranking':<12}{'precision':<11}{'R@10':>8}{'MRR@10':>8}{'Δ R@10':>9}")
    for dataset in sets:
        for way in ("default", "dense-only"):
            rows = {}
            for precision, rankings in runs.items():
                scores = Scores()
                for ranked, question in zip(
                    rankings[dataset.name][way], dataset.questions, strict=True
                ):
                    scores.add(ranked, question.evidence)
                rows[precision] = scores.row()
            for precision in (first, *others):
                recall, mrr = rows[precision][2], rows[precision][-1]
                delta = recall - rows[first][2]
                mark = "" if precision == first else f"{delta:>+9.3f}"
                print(f"{dataset.name:<14}{way:<12}{precision:<11}{recall:>8.3f}{mrr:>8.3f}{mark}")


async def store_all(
    args: argparse.Namespace,
    sets: list[Dataset],
    data_dir: Path,
    gateway_url: str,
    precision: str,
) -> dict[str, str]:
    """Saves every turn of every set in order through /memories/batch, or nothing where the
    directory already holds this data; returns each memory id's evidence id."""
    marker = data_dir / STORED
    key = data_key(args, precision)
    if marker.exists():
        stored = json.loads(marker.read_text())
        if stored["key"] == key:
            print(f"the store in {data_dir} holds this data already: nothing saved")
            return dict(stored["turn_of"])
        raise SystemExit(f"{data_dir} holds other data: name an empty or matching --data-dir")
    conversations = [turns for dataset in sets for turns in dataset.conversations]
    users = {turns[0].user for turns in conversations if turns}
    tokens = {user: mint_token(JWT_SECRET, user, issuer=ISSUER) for user in users}
    turn_of: dict[str, str] = {}
    total = sum(len(turns) for turns in conversations)
    print(f"saving {total} turns of {len(conversations)} users through /memories/batch…")
    started = time.perf_counter()
    done = 0
    limits = httpx.Limits(max_connections=args.concurrency, keepalive_expiry=30)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=600, limits=limits) as http:

        async def save(turns: list[Turn]) -> None:
            nonlocal done
            headers = {"Authorization": f"Bearer {tokens[turns[0].user]}"}
            # In order, a batch after the one before: an answer's prompt is stored first.
            for first in range(0, len(turns), BATCH_ITEMS):
                batch = turns[first : first + BATCH_ITEMS]
                for turn, result in zip(batch, await save_batch(http, headers, batch), strict=True):
                    turn_of[result["id"]] = turn.turn_id
                done += len(batch)
            print(f"  {done}/{total} turns, {time.perf_counter() - started:.0f} s", flush=True)

        await bounded((lambda t=t: save(t) for t in conversations), args.concurrency)
    elapsed = time.perf_counter() - started
    print(f"  saved in {elapsed:.0f} s ({total / elapsed:.1f} turns/s)")
    marker.write_text(json.dumps({"key": key, "turn_of": turn_of}))
    return turn_of


async def save_batch(
    http: httpx.AsyncClient, headers: dict[str, str], batch: list[Turn]
) -> list[dict[str, Any]]:
    """One POST /memories/batch of `batch` (one user's turns, in order); its results, in the
    turns' order, none refused."""
    body = {"items": [turn.batch_item() for turn in batch]}
    for attempt in range(SAVE_ATTEMPTS):
        response = await http.post("/memories/batch", json=body, headers=headers)
        # A batch that waited past its deadline behind others is sent again: its message ids
        # make the items already stored present, not twice stored.
        if response.status_code not in (503, 504) or attempt == SAVE_ATTEMPTS - 1:
            break
    response.raise_for_status()
    results: list[dict[str, Any]] = response.json()["results"]
    for turn, result in zip(batch, results, strict=True):
        if result["status"] == "refused":
            raise RuntimeError(f"{turn.turn_id} refused: {result['reason']}")
    return results


async def measure(
    args: argparse.Namespace,
    dataset: Dataset,
    memory_addr: str,
    gateway_url: str,
    turn_of: dict[str, str],
) -> dict[str, list[list[str]]]:
    """Searches every question of a set each way; prints the in-sample table and returns each
    way's evidence ids per question."""
    questions = dataset.questions
    users = {q.user for q in questions}
    tokens = {user: mint_token(JWT_SECRET, user, issuer=ISSUER) for user in users}

    def auth(user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[user]}"}

    ways = ("default", "dense-only", "BM25-only", "floor on", "rrf (gRPC)")
    rankings: dict[str, list[list[str]]] = {way: [[] for _ in questions] for way in ways}
    limits = httpx.Limits(max_connections=args.concurrency, keepalive_expiry=30)
    async with (
        httpx.AsyncClient(base_url=gateway_url, timeout=60, limits=limits) as http,
        grpc.aio.insecure_channel(memory_addr) as channel,
    ):
        stub = memory_pb2_grpc.MemoryServiceStub(channel)

        async def search(way: str, index: int, question: Question) -> None:
            if way == "floor on":
                body: dict[str, Any] = {"prompt": question.text, "top_k": TOP_K}
                body["max_tokens"] = 8000
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
            rankings[way][index] = [turn_of.get(r["id"], "") for r in results]

        print(f"\n{dataset.name}: searching {len(questions)} questions four ways…")
        await bounded(
            (
                lambda way=way, i=i, q=q: search(way, i, q)
                for i, q in enumerate(questions)
                for way in ways[:4]
            ),
            args.concurrency,
        )

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
                if index >= min(args.warmup, len(questions) // 4):
                    latencies[name].append(elapsed)
                if name == "rrf":
                    ranked = [turn_of.get(r.memory.id, "") for r in reply.results]
                    rankings["rrf (gRPC)"][index] = ranked

    overall = {way: Scores() for way in ways}
    by_category = {(way, c): Scores() for way in ways for c in dataset.categories}
    for index, question in enumerate(questions):
        for way in ways:
            ranked = rankings[way][index]
            overall[way].add(ranked, question.evidence)
            by_category[way, question.category].add(ranked, question.evidence)
    report(dataset, overall, by_category, latencies)
    return rankings


def report(
    dataset: Dataset,
    overall: dict[str, Scores],
    by_category: dict[tuple[str, str], Scores],
    latencies: dict[str, list[float]],
) -> None:
    header = f"{'':<14}" + "".join(f"{h:>8}" for h in ("R@1", "R@5", "R@10", "H@1", "H@5"))
    header += f"{'H@10':>8}{'MRR@10':>8}"
    print(f"\n{dataset.name}, in-sample, {len(dataset.questions)} questions, top_k={TOP_K}")
    print(header)
    for way, scores in overall.items():
        print(f"{way:<14}" + "".join(f"{v:>8.3f}" for v in scores.row()))
    for category in dataset.categories:
        count = by_category["default", category].questions
        print(f"\n{category} ({count} questions)")
        for way in overall:
            row = by_category[way, category].row()
            print(f"{way:<14}" + "".join(f"{v:>8.3f}" for v in row))

    default = overall["default"].row()
    floor = overall["floor on"].row()
    p50 = {name: statistics.median(samples) * 1000 for name, samples in latencies.items()}
    floor_ratio = floor[2] / default[2] if default[2] else 0.0
    p50_ratio = p50["default"] / p50["rrf"]
    print(
        f"\nfloor on: recall@10 {floor[2]:.3f} = {floor_ratio:.3f} x default "
        f"(target >= {TARGET_FLOOR_RATIO})"
    )
    print(
        f"Search p50 over gRPC: default {p50['default']:.1f} ms, rrf {p50['rrf']:.1f} ms, "
        f"ratio {p50_ratio:.2f} (target <= {TARGET_P50_RATIO})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--locomo", type=Path, help="LoCoMo's JSON (locomo-dev.json)")
    parser.add_argument("--longmemeval", type=Path, help="longmemeval-dev.json")
    parser.add_argument(
        "--per-type",
        type=int,
        default=0,
        help="LongMemEval: only the first N questions of each type and their haystacks (0: all)",
    )
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    parser.add_argument("--warmup", type=int, default=20, help="untimed latency queries")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where the store lives, kept between runs (default: a temporary directory); "
        "outside the repository",
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=5,
        help="cross-validate the ranking's constants over this many folds of each set "
        "(LoCoMo by conversation, LongMemEval by question; 0: skip)",
    )
    parser.add_argument(
        "--precisions",
        type=lambda value: value.split(","),
        default=[service_precision()],
        help="embedding precisions to store and search in, comma-separated (e.g. "
        "int8,float32: one store each under --data-dir, compared side by side; the CV runs "
        "on the first)",
    )
    args = parser.parse_args()
    if unknown := set(args.precisions) - {"int8", "float32"}:
        parser.error(f"unknown precision: {', '.join(sorted(unknown))}")
    if args.locomo is None and args.longmemeval is None:
        parser.error("name --locomo, --longmemeval or both")
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(bench(args, args.data_dir))
        return
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    main()
