"""How a memory longer than the model's window is represented for search (MEMORY_LONG_TEXT),
measured offline with the service's own encoder: dense-only and hybrid-proxy recall@10 and
MRR@10 on LongMemEval and LoCoMo dev, and texts/s of LongMemEval turns, same run.

Representations, each from the same window vectors:
- mean: the normalized mean of all windows (MAX_WINDOWS_PER_TEXT at most, spread), the
  default before first and the baseline;
- first: the first window only;
- first:N: the normalized mean of the first N windows;
- maxsim: every window a vector of its own, a memory scored by its best window (a multivector
  with the MaxSim comparator), the same windows as mean.

Every window of every distinct turn is embedded once (the windows mean picks and the first
FIRST_MAX from the start), and cached under /tmp keyed by the texts, the model and the
precision (MEMORY_EMBED_PRECISION, int8 by default). Each question ranks its own user's turns
(LongMemEval: its haystack; LoCoMo: its conversation) against the question embedded from its
first window, as the service embeds a query. Recall@10 is the share of a question's evidence
turns in the top 10, MRR@10 the reciprocal rank of the first one, averaged over questions.

Hybrid proxy, the same for every representation: BM25 by qdrant_edge.Bm25, the sparse vectors
the service stores, with the engine's IDF (ln(1 + (N - n + 0.5) / (n + 0.5))) over all stored
turns of the set; the dense and BM25 top CANDIDATES fused by reciprocal rank (RRF, k=60) and
by the service's own score (each signal min-max normalized, dense_weight of ranking.DEFAULT),
without the service's neighbour, time and other rules.

Speed: texts/s of the service's encoder (batches of 32, one call per core at once) on 640
LongMemEval turns per representation, alternated ROUNDS times, medians (maxsim embeds what
mean embeds).

    python bench/bench_long_text.py
    python bench/bench_long_text.py --per-type 5
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import qdrant_edge
from encoders import cores, encode, service_encoder
from retrieval_data import Dataset, load_locomo, load_longmemeval

from memory_service.embedding.encoder import (
    DEFAULT_LONG_TEXT,
    LongText,
    contiguous_windows,
    mean_of_windows,
    token_windows,
)
from memory_service.embedding.onnx_encoder import OnnxEncoder
from memory_service.ranking import DEFAULT

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CACHE = Path("/tmp/memory-layer-long-text")
FIRST_MAX = 4
REPRESENTATIONS = ("mean", "first", "first:2", "first:3", "first:4", "maxsim")
TIMED = ("mean", "first", "first:2", "first:3")
K = 10
CANDIDATES = DEFAULT.candidate_depth
RRF_K = 60
ROUNDS = 2
# Sequences per model call of the cache's embedding, sorted by length; texts per cached chunk.
CALL_SEQUENCES = 64
CHUNK_TEXTS = 1_000


@dataclass(slots=True)
class TextWindows:
    tokens: int
    # Start token of each embedded window, in order, and its row in the vectors.
    starts: list[int]
    rows: list[int]

    def pick(self, spans: Sequence[tuple[int, int]]) -> list[int]:
        at = dict(zip(self.starts, self.rows, strict=True))
        return [at[start] for start, _ in spans]


def embedded_spans(tokens: int, window: int) -> list[tuple[int, int]]:
    return sorted(
        set(token_windows(tokens, window)) | set(contiguous_windows(tokens, window)[:FIRST_MAX])
    )


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def load_cache(encoder: OnnxEncoder) -> tuple[Path, dict[str, np.ndarray]]:
    """The cached window vectors of this model and precision, by text_key: every file of
    the cache's directory (one per chunk embedded), so that a run cut short is resumed."""
    tag = hashlib.sha256(f"{encoder.model_name}\0{encoder.precision}\0{encoder.window}".encode())
    directory = CACHE / tag.hexdigest()[:12]
    directory.mkdir(parents=True, exist_ok=True)
    cached: dict[str, np.ndarray] = {}
    for path in sorted(directory.glob("*.npz")):
        with np.load(path) as chunk:
            cached.update({key: chunk[key] for key in chunk.files})
    return directory, cached


def window_vectors(
    encoder: OnnxEncoder, texts: list[str]
) -> tuple[dict[str, TextWindows], np.ndarray]:
    """Every embedded window of each distinct text, from the cache or embedded now (in
    chunks of CHUNK_TEXTS, each saved when done)."""
    directory, cached = load_cache(encoder)
    ids = encoder.token_ids(texts)
    spans = {
        text: embedded_spans(len(tokens), encoder.window)
        for text, tokens in zip(texts, ids, strict=True)
    }
    missing = [
        (t, tokens) for t, tokens in zip(texts, ids, strict=True) if text_key(t) not in cached
    ]
    print(f"  {len(texts) - len(missing)} of {len(texts)} texts cached, embedding {len(missing)}")
    started = time.perf_counter()
    for at in range(0, len(missing), CHUNK_TEXTS):
        chunk = missing[at : at + CHUNK_TEXTS]
        sequences: list[list[int]] = []
        for text, tokens in chunk:
            sequences.extend(encoder.sequence(tokens[s:e]) for s, e in spans[text])
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        parts = [order[i : i + CALL_SEQUENCES] for i in range(0, len(order), CALL_SEQUENCES)]
        vectors = np.empty((len(sequences), encoder.dimension), dtype=np.float32)

        def run(
            part: list[int], vectors: np.ndarray = vectors, sequences: list[list[int]] = sequences
        ) -> None:
            vectors[part] = encoder.encode_sequences([sequences[i] for i in part])

        with ThreadPoolExecutor(cores()) as pool:
            list(pool.map(run, parts))
        saved: dict[str, np.ndarray] = {}
        row = 0
        for text, _ in chunk:
            n = len(spans[text])
            saved[text_key(text)] = vectors[row : row + n]
            row += n
        np.savez(directory / f"{time.time_ns()}.npz", **saved)  # type: ignore[arg-type]
        cached.update(saved)
        took = time.perf_counter() - started
        print(f"  {at + len(chunk)} of {len(missing)} texts embedded in {took:.0f} s", flush=True)
    layout: dict[str, TextWindows] = {}
    rows: list[np.ndarray] = []
    count = 0
    for text, tokens in zip(texts, ids, strict=True):
        vectors = cached[text_key(text)]
        layout[text] = TextWindows(
            len(tokens), [s for s, _ in spans[text]], list(range(count, count + len(vectors)))
        )
        rows.append(vectors)
        count += len(vectors)
    return layout, np.concatenate(rows)


def representation(
    name: str, layout: dict[str, TextWindows], vectors: np.ndarray, window: int
) -> Callable[[str], np.ndarray]:
    """A text's vectors under `name`: one row, or one per window for maxsim."""

    def rows(text: str) -> np.ndarray:
        w = layout[text]
        if name == "maxsim":
            return vectors[w.pick(token_windows(w.tokens, window))]
        spans = LongText.parse(name).spans(w.tokens, window)
        return mean_of_windows(vectors[w.pick(spans)])[None, :]

    return rows


class Bm25Index:
    """The stored turns' BM25 vectors and the engine's IDF over all of them."""

    def __init__(self, stored: list[str]):
        self.bm25 = qdrant_edge.Bm25()
        self.docs: dict[str, dict[int, float]] = {}
        for text in set(stored):
            vec = self.bm25.embed_document(text)
            self.docs[text] = dict(zip(vec.indices, vec.values, strict=True))
        frequency: Counter[int] = Counter()
        for text in stored:
            frequency.update(self.docs[text].keys())
        n = len(stored)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in frequency.items()}

    def scores(self, query: str, texts: list[str]) -> np.ndarray:
        vec = self.bm25.embed_query(query)
        terms = [
            (t, v * self.idf.get(t, 0.0)) for t, v in zip(vec.indices, vec.values, strict=True)
        ]
        return np.array(
            [sum(w * self.docs[text].get(t, 0.0) for t, w in terms) for text in texts],
            dtype=np.float64,
        )


def top(scores: np.ndarray, n: int, positive: bool = False) -> list[int]:
    order = np.argsort(-scores, kind="stable")[:n]
    return [int(i) for i in order if not positive or scores[i] > 0]


def rrf(dense: np.ndarray, sparse: np.ndarray) -> list[int]:
    fused: dict[int, float] = {}
    for ranking in (top(dense, CANDIDATES), top(sparse, CANDIDATES, positive=True)):
        for rank, i in enumerate(ranking, 1):
            fused[i] = fused.get(i, 0.0) + 1 / (RRF_K + rank)
    return sorted(fused, key=lambda i: -fused[i])


def own_score(dense: np.ndarray, sparse: np.ndarray) -> list[int]:
    d, s = top(dense, CANDIDATES), top(sparse, CANDIDATES, positive=True)

    def share(scores: np.ndarray, hits: list[int]) -> dict[int, float]:
        if not hits:
            return {}
        low, high = min(scores[hits]), max(scores[hits])
        span = high - low
        return {i: (scores[i] - low) / span if span > 1e-12 else 1.0 for i in hits}

    ds, ss = share(dense, d), share(sparse, s)
    w = DEFAULT.dense_weight
    fused = {i: w * ds.get(i, 0.0) + (1 - w) * ss.get(i, 0.0) for i in {*d, *s}}
    return sorted(fused, key=lambda i: -fused[i])


@dataclass(slots=True)
class Score:
    recall: float = 0.0
    mrr: float = 0.0
    n: int = 0
    by_category: dict[str, list[float]] = field(default_factory=dict)

    def add(self, ranked: list[str], evidence: frozenset[str], category: str) -> None:
        found = [i for i, turn in enumerate(ranked[:K]) if turn in evidence]
        recall = len(set(ranked[:K]) & evidence) / len(evidence)
        mrr = 1 / (found[0] + 1) if found else 0.0
        self.recall += recall
        self.mrr += mrr
        self.n += 1
        row = self.by_category.setdefault(category, [0.0, 0.0, 0])
        row[0] += recall
        row[1] += mrr
        row[2] += 1

    def cells(self) -> str:
        return f"{self.recall / self.n:>7.3f}{self.mrr / self.n:>7.3f}"


def score_set(encoder: OnnxEncoder, data: Dataset) -> dict[str, dict[str, Score]]:
    stored = [t.text for turns in data.conversations for t in turns]
    distinct = sorted(set(stored))
    layout, vectors = window_vectors(encoder, distinct)
    multi = sum(len(token_windows(w.tokens, encoder.window)) > 1 for w in layout.values())
    print(
        f"  {len(stored)} stored turns, {len(distinct)} distinct, {multi} longer than one "
        f"window ({multi / len(distinct):.0%})"
    )
    bm25 = Bm25Index(stored)
    by_user = {turns[0].user: turns for turns in data.conversations}
    queries = encoder.encode([q.text for q in data.questions], [True] * len(data.questions))
    results: dict[str, dict[str, Score]] = {}
    for name in REPRESENTATIONS:
        rows = representation(name, layout, vectors, encoder.window)
        scores = results[name] = {"dense": Score(), "rrf": Score(), "own": Score()}
        for question, query in zip(data.questions, queries, strict=True):
            turns = by_user[question.user]
            dense = np.array([float((rows(t.text) @ query).max()) for t in turns])
            sparse = bm25.scores(question.text, [t.text for t in turns])
            ids = [t.turn_id for t in turns]
            for kind, ranked in (
                ("dense", top(dense, K)),
                ("rrf", rrf(dense, sparse)),
                ("own", own_score(dense, sparse)),
            ):
                scores[kind].add([ids[i] for i in ranked], question.evidence, question.category)
    return results


def report(name: str, results: dict[str, dict[str, Score]], per_category: bool) -> None:
    print(f"\n{name}: recall@10 and MRR@10 (baseline: mean, the default before first)")
    columns = ("dense R", "MRR", "RRF R", "MRR", "own R", "MRR")
    print(f"{'representation':<15}" + "".join(f"{c:>7}" for c in columns))
    for rep, scores in results.items():
        print(f"{rep:<15}" + "".join(scores[k].cells() for k in ("dense", "rrf", "own")))
    if not per_category:
        return
    categories = sorted(results["mean"]["dense"].by_category)
    for kind in ("dense", "own"):
        print(f"\n{name} {kind} MRR@10 (recall@10) per type")
        print(f"{'representation':<15}" + "".join(f"{c[:22]:>24}" for c in categories))
        for rep, scores in results.items():
            cells = []
            for c in categories:
                r, m, n = scores[kind].by_category[c]
                cells.append(f"{m / n:>15.3f} ({r / n:.3f})")
            print(f"{rep:<15}" + "".join(f"{c:>24}" for c in cells))


def rates(encoder: OnnxEncoder, texts: list[str]) -> dict[str, float]:
    """Median texts/s per representation, ROUNDS rounds alternated."""
    runs: dict[str, list[float]] = {name: [] for name in TIMED}
    for _ in range(ROUNDS):
        for name in TIMED:
            encoder.long_text = LongText.parse(name)
            started = time.perf_counter()
            encode(encoder, texts)
            runs[name].append(len(texts) / (time.perf_counter() - started))
    encoder.long_text = DEFAULT_LONG_TEXT
    return {name: statistics.median(r) for name, r in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--per-type", type=int, default=0, help="LongMemEval questions per type (0: all)"
    )
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args()
    encoder = service_encoder()
    print(f"encoder: {encoder.mode}, window {encoder.window} tokens, {cores()} cores")
    lme = load_longmemeval(DATA / "longmemeval-dev" / "longmemeval-dev.json", args.per_type)
    print(f"LongMemEval dev: {len(lme.questions)} questions")
    lme_results = score_set(encoder, lme)
    locomo = load_locomo(DATA / "locomo-dev" / "locomo-dev.json")
    print(f"LoCoMo dev: {len(locomo.questions)} questions")
    locomo_results = score_set(encoder, locomo)
    report("LongMemEval dev", lme_results, per_category=True)
    report("LoCoMo dev", locomo_results, per_category=False)
    if args.no_speed:
        return
    turns = sorted({t.text for turns in lme.conversations for t in turns})
    random.Random(7).shuffle(turns)
    sample = turns[:640]
    chars = sum(map(len, sample)) / len(sample)
    print(f"\ntexts/s on 640 LongMemEval turns ({chars:.0f} chars avg), medians of {ROUNDS}:")
    measured = rates(encoder, sample)
    for name, rate in measured.items():
        print(f"  {name:<10}{rate:>8.1f} texts/s  {rate / measured['mean']:.2f}x mean")
    print(f"  {'maxsim':<10}  embeds the windows mean embeds: {measured['mean']:.1f} texts/s")


if __name__ == "__main__":
    main()
