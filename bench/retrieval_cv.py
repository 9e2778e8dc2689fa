"""Cross-validation of the hybrid ranking's constants by conversation, for bench_retrieval.py.

Once the gateway run has saved every turn and stopped, memory_service's own Memories and
store are opened in this process on the same data directory. Every question is embedded
once and its candidates fetched once per setting that changes what the store returns (the
feedback weight, and which conversations are read whole for the neighbour rules); ranking
a setting is then only ranking.fuse over what was fetched. That this path is the service's
own is checked in the run: with the shipped constants it must return, for every question,
what the gateway's default search returned.

Folds are conversations (each conversation is one user). For each fold, each family's
constants are chosen on the other folds' questions (best recall@10, ties: MRR@10) and
scored on the fold's own: every question is scored once, by constants that never saw it.
Today's ranking has two constants and is searched over its whole grid. The default has
one per rule, too many for a whole grid: starting from the middle of every axis (not from
the shipped values, which saw every conversation), each constant in turn takes the best
value of its axis with the others held, until a round changes nothing (coordinate ascent).
The same ascent on every conversation is what the service should ship; the report says
whether it does. What a rule adds is measured by setting its weight to 0 in
each fold's chosen constants; keyword feedback, off in the service, by choosing its weight
on the other folds on top of them. BM25-only and dense-only have nothing to tune; they are
the gateway's own results.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from memory_service import ranking
from memory_service.config import MemorySettings
from memory_service.models import SearchFilters, SearchMode, normalised_text
from memory_service.search import conversation_context, hybrid_candidates, search_memories
from memory_service.server import create_server
from service_kit.identity import Identity

TOP_K = 10
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
# Columns of a question's figures.
R1, R5, R10, MRR = range(4)

# The values each family's constants are chosen from; every other constant is the family's
# own (TODAY's, with the newer signals off, or the shipped DEFAULT's). The shipped values
# sit inside each axis where they are not 0, so that a choice at an edge would show.
TODAY_AXES: dict[str, tuple[float, ...]] = {
    "dense_weight": (0.25, 0.3, 0.35, 0.4, 0.45, 0.5),
    "neighbour_weight": (0.2, 0.3, 0.4, 0.5, 0.6),
}
DEFAULT_AXES: dict[str, tuple[float, ...]] = {
    "dense_weight": (0.2, 0.25, 0.3, 0.35, 0.4),
    "neighbour_weight": (0.3, 0.4, 0.5, 0.6, 0.7),
    "second_neighbour_weight": (0.0, 0.2, 0.3, 0.4, 0.5, 0.6),
    "answer_weight": (0.0, 0.3, 0.45, 0.6, 0.75, 0.9),
    "length_weight": (0.0, 0.1, 0.15, 0.2, 0.25, 0.3),
    "cosine_weight": (0.0, 0.25, 0.5, 0.75, 1.0),
    "time_weight": (0.0, 0.1, 0.2, 0.3, 0.4, 0.6),
    "time_neighbour_weight": (0.0, 0.2, 0.4, 0.6),
    "date_weight": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    "date_said_weight": (0.0, 0.3, 0.6),
    "conversation_weight": (0.0, 0.1, 0.2, 0.3),
}
# The rules the default adds to today's ranking, each set to 0 in turn to measure it.
SIGNALS = {
    "context": "context_memories",
    "second neighbours": "second_neighbour_weight",
    "answer": "answer_weight",
    "length": "length_weight",
    "cosine": "cosine_weight",
    "time": "time_weight",
    "time next to the words": "time_neighbour_weight",
    "date": "date_weight",
    "date in its own words": "date_said_weight",
    "conversation": "conversation_weight",
}
# Keyword feedback, measured beside the default but off in it.
FEEDBACK_WEIGHTS = (0.0, 0.15, 0.3)
# Acceptance: the default against today's ranking and BM25-only, cross-validated.
TARGET_RECALL_GAIN = 0.05
TARGET_TEMPORAL_GAIN = 0.05
TARGET_MARGIN_OVER_BM25 = 0.08
TARGET_P50_RATIO = 1.5
# Rounds of coordinate ascent at most.
ASCENT_ROUNDS = 4


class Question(Protocol):
    user: str
    text: str
    evidence: frozenset[str]
    category: int


def figures(ranked: Sequence[str], evidence: frozenset[str]) -> list[float]:
    """recall@1/5/10 and MRR@10 of one question's ranked evidence ids."""
    row = [len(evidence.intersection(ranked[:k])) / len(evidence) for k in (1, 5, 10)]
    reciprocal = next(
        (1 / rank for rank, found in enumerate(ranked[:TOP_K], 1) if found in evidence), 0.0
    )
    return [*row, reciprocal]


@dataclass
class Outcome:
    """A family's cross-validated result: every question's held-out figures, the constants
    each fold chose, and each fold's figures."""

    held_out: np.ndarray
    chosen: list[ranking.RankingParams | None]
    per_fold: np.ndarray


Hits = tuple[list[ranking.Candidate], list[ranking.Candidate]]


@dataclass
class Prepared:
    """What every setting ranks: each question's candidates per feedback weight, the
    context of each set of conversations a setting reads whole, the memory id → evidence id
    map, and the in-process default's results for the check."""

    candidates: dict[tuple[int, float], Hits]
    contexts: dict[tuple[int, float, tuple[str, ...]], ranking.Context]
    service_default: list[list[str]]
    dia_of: dict[str, str]
    timings: dict[str, list[float]]


def context_settings() -> list[ranking.RankingParams]:
    """Settings that between them pick every set of conversations a chosen setting can read
    whole: which ones depends only on the own score, so on the dense weight."""
    weights = {*DEFAULT_AXES["dense_weight"], ranking.DEFAULT.dense_weight}
    return [replace(ranking.DEFAULT, dense_weight=w) for w in sorted(weights)]


async def prepare(
    data_dir: Path,
    questions: Sequence[Question],
    dia_of: dict[str, str],
    feedback_weights: Iterable[float],
    warmup: int,
    service_token: str,
) -> Prepared:
    settings = MemorySettings(
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        data_dir=data_dir,
        maintenance_interval_seconds=0,
        service_token=service_token,
    )
    server = await create_server(settings)
    await server.start_serving()
    memories = server.memories
    assert memories is not None
    readers = context_settings()
    try:
        candidates: dict[tuple[int, float], Hits] = {}
        contexts: dict[tuple[int, float, tuple[str, ...]], ranking.Context] = {}
        service_default: list[list[str]] = []
        timings: dict[str, list[float]] = {"default": [], "today": []}
        for index, question in enumerate(questions):
            who = Identity(question.user)
            results = await memories.search(
                who, question.text, TOP_K, SearchMode.HYBRID, SearchFilters()
            )
            service_default.append([dia_of.get(r.memory.id, "") for r in results])
            dense = await memories.embedder.embed(
                question.text, who.user_id, first_window_only=True
            )
            sparse = memories._sparse_query(question.text)
            for weight in feedback_weights:
                hits = await hybrid_candidates(
                    memories.store,
                    who.user_id,
                    SearchFilters(),
                    dense=dense,
                    sparse=sparse,
                    depth=max(ranking.DEFAULT.candidate_depth, TOP_K + ranking.DUPLICATE_MARGIN),
                    document_terms=memories._sparse_document,
                    feedback_weight=weight,
                )
                candidates[index, weight] = hits
                for params in readers:
                    read = tuple(ranking.context_conversations(*hits, params))
                    if read and (index, weight, read) not in contexts:
                        contexts[index, weight, read] = await conversation_context(
                            memories.store,
                            who.user_id,
                            SearchFilters(),
                            read,
                            dense=dense,
                        )
            # Search as the service runs it (embedding included), shipped constants against
            # today's, alternating so that noise hits both.
            order = ("default", "today") if index % 2 == 0 else ("today", "default")
            for name in order:
                params = ranking.DEFAULT if name == "default" else ranking.TODAY
                began = time.perf_counter()
                vector = await memories.embedder.embed(
                    question.text, who.user_id, first_window_only=True
                )
                await search_memories(
                    memories.store,
                    who.user_id,
                    dense=vector,
                    sparse=memories._sparse_query(question.text),
                    mode=SearchMode.HYBRID,
                    filters=SearchFilters(),
                    limit=TOP_K,
                    query=question.text,
                    document_terms=memories._sparse_document,
                    params=params,
                )
                if index >= warmup:
                    timings[name].append(time.perf_counter() - began)
        return Prepared(candidates, contexts, service_default, dia_of, timings)
    finally:
        await server.stop(0)


def ranked_evidence(
    prepared: Prepared, index: int, question: Question, params: ranking.RankingParams
) -> list[str]:
    """The evidence ids of the top TOP_K under `params`, duplicates collapsed as the
    service collapses them."""
    dense_hits, sparse_hits = prepared.candidates[index, params.feedback_weight]
    read = tuple(ranking.context_conversations(dense_hits, sparse_hits, params))
    context = prepared.contexts[index, params.feedback_weight, read] if read else ranking.NO_CONTEXT
    every = (*dense_hits, *sparse_hits, *context.dense)
    texts = {h.id: h.text for h in every}
    seen: set[str] = set()
    kept: list[str] = []
    fused = ranking.fuse(dense_hits, sparse_hits, params, query=question.text, context=context)
    for memory_id, _ in fused:
        key = normalised_text(texts[memory_id])
        if key in seen:
            continue
        seen.add(key)
        kept.append(prepared.dia_of.get(memory_id, ""))
        if len(kept) == TOP_K:
            break
    return kept


class Scorer:
    """Every question's figures under a setting, ranked when first asked for and kept."""

    def __init__(self, prepared: Prepared, questions: Sequence[Question]) -> None:
        self.prepared = prepared
        self.questions = questions
        self.kept: dict[ranking.RankingParams, np.ndarray] = {}

    def __call__(self, params: ranking.RankingParams) -> np.ndarray:
        if params not in self.kept:
            self.kept[params] = np.array(
                [
                    figures(ranked_evidence(self.prepared, i, q, params), q.evidence)
                    for i, q in enumerate(self.questions)
                ]
            )
        return self.kept[params]


def better(score: Scorer, train: np.ndarray) -> Callable[[ranking.RankingParams], tuple]:
    """The order settings are chosen by: recall@10 on the training folds, then MRR@10."""
    return lambda p: (score(p)[train, R10].mean(), score(p)[train, MRR].mean())


def whole_grid(
    base: ranking.RankingParams, axes: dict[str, tuple[float, ...]]
) -> Callable[[Scorer, np.ndarray], ranking.RankingParams]:
    """Chooses the best of every combination of the axes' values."""
    names = list(axes)
    points = [
        replace(base, **dict(zip(names, values, strict=True)))
        for values in itertools.product(*axes.values())
    ]
    return lambda score, train: max(points, key=better(score, train))


def ascent_start() -> ranking.RankingParams:
    """Where the default's coordinate ascent starts: the middle value of each axis, not the
    shipped constants, which were chosen on every conversation, the held-out one included."""
    middle = {name: values[len(values) // 2] for name, values in DEFAULT_AXES.items()}
    return replace(ranking.DEFAULT, **middle)


def ascent(
    base: ranking.RankingParams, axes: dict[str, tuple[float, ...]]
) -> Callable[[Scorer, np.ndarray], ranking.RankingParams]:
    """Chooses by coordinate ascent from `base`: each constant in turn takes its axis's best
    value with the others held, until a round changes nothing."""

    def choose(score: Scorer, train: np.ndarray) -> ranking.RankingParams:
        key = better(score, train)
        current = base
        for _ in range(ASCENT_ROUNDS):
            start = current
            for name, values in axes.items():
                current = max(
                    (replace(current, **{name: v}) for v in values),
                    key=lambda p: (*key(p), p == current),
                )
            if current == start:
                break
        return current

    return choose


def cross_validate(
    way: Callable[[Scorer, np.ndarray, int], ranking.RankingParams] | np.ndarray,
    score: Scorer,
    folds: np.ndarray,
    fold_count: int,
) -> Outcome:
    """Constants chosen on the other folds, scored on each fold; an array is a way with
    nothing to tune."""
    held = np.zeros((len(folds), 4))
    chosen: list[ranking.RankingParams | None] = []
    per_fold = np.zeros((fold_count, 4))
    for fold in range(fold_count):
        train, test = folds != fold, folds == fold
        if isinstance(way, np.ndarray):
            rows = way
            chosen.append(None)
        else:
            params = way(score, train, fold)
            rows = score(params)
            chosen.append(params)
        held[test] = rows[test]
        per_fold[fold] = rows[test].mean(axis=0)
    return Outcome(held, chosen, per_fold)


def report(
    questions: Sequence[Question],
    prepared: Prepared,
    gateway: dict[str, list[list[str]]],
    fold_count: int,
    fold_of_user: dict[str, int],
    say: Callable[[str], None] = print,
) -> None:
    folds = np.array([fold_of_user[q.user] for q in questions])
    categories = np.array([q.category for q in questions])
    score = Scorer(prepared, questions)

    # The gateway's searches ran concurrently, so their query vectors were encoded in
    # batches, this process's one by one: the last bits of a cosine can differ, and two
    # candidates that tie to them swap. Where orders differ, say what it does to recall.
    replayed = [ranked_evidence(prepared, i, q, ranking.DEFAULT) for i, q in enumerate(questions)]
    for what, rankings in (
        ("in-process search with the shipped constants", prepared.service_default),
        ("the replay of the shipped constants", replayed),
    ):
        changed = [i for i, r in enumerate(rankings) if r != gateway["default"][i]]
        delta = sum(
            figures(rankings[i], questions[i].evidence)[R10]
            - figures(gateway["default"][i], questions[i].evidence)[R10]
            for i in changed
        )
        say(
            f"check: {what} returned what the gateway's default returned for "
            f"{len(questions) - len(changed)}/{len(questions)} questions"
            + (f" (recall@10 over all questions {delta / len(questions):+.4f})" if changed else "")
        )

    started = time.perf_counter()
    choose_today = whole_grid(ranking.TODAY, TODAY_AXES)
    choose_default = ascent(ascent_start(), DEFAULT_AXES)
    outcomes = {
        "default": cross_validate(
            lambda s, train, fold: choose_default(s, train), score, folds, fold_count
        ),
        "today": cross_validate(
            lambda s, train, fold: choose_today(s, train), score, folds, fold_count
        ),
    }
    default_chosen = [p for p in outcomes["default"].chosen if p is not None]
    for name, field in SIGNALS.items():
        outcomes[f"default, no {name}"] = cross_validate(
            lambda s, train, fold, field=field: replace(default_chosen[fold], **{field: 0}),
            score,
            folds,
            fold_count,
        )
    for base in ("default", "today"):
        picked = [p for p in outcomes[base].chosen if p is not None]

        def with_feedback(
            s: Scorer, train: np.ndarray, fold: int, picked: list = picked
        ) -> ranking.RankingParams:
            tried = (replace(picked[fold], feedback_weight=w) for w in FEEDBACK_WEIGHTS)
            return max(tried, key=better(s, train))

        outcomes[f"{base} + feedback"] = cross_validate(with_feedback, score, folds, fold_count)
    fixed = {
        way: np.array(
            [figures(r, q.evidence) for r, q in zip(gateway[way], questions, strict=True)]
        )
        for way in ("BM25-only", "dense-only")
    }
    outcomes.update(
        {name: cross_validate(rows, score, folds, fold_count) for name, rows in fixed.items()}
    )
    say(f"{len(score.kept)} settings ranked in {time.perf_counter() - started:.0f} s")

    say(f"\ncross-validated, {fold_count} folds by conversation ({len(questions)} questions):")
    say(f"{'':<28}{'R@5':>7}{'R@10':>7}{'MRR@10':>8}  worst fold R@5/R@10/MRR  R@10 by fold")
    for name, outcome in outcomes.items():
        mean = outcome.held_out.mean(axis=0)
        worst = outcome.per_fold.min(axis=0)
        by_fold = " ".join(f"{v:.3f}" for v in outcome.per_fold[:, R10])
        say(
            f"{name:<28}{mean[R5]:>7.3f}{mean[R10]:>7.3f}{mean[MRR]:>8.3f}  "
            f"{worst[R5]:>8.3f}{worst[R10]:>8.3f}{worst[MRR]:>8.3f}  {by_fold}"
        )
    for category, label in CATEGORIES.items():
        mask = categories == category
        say(f"\ncategory {category} ({label}, {mask.sum()} questions)")
        for name, outcome in outcomes.items():
            rows = outcome.held_out[mask]
            worst = min(
                outcome.held_out[mask & (folds == f), R10].mean()
                for f in range(fold_count)
                if (mask & (folds == f)).any()
            )
            say(
                f"{name:<28}{rows[:, R5].mean():>7.3f}{rows[:, R10].mean():>7.3f}"
                f"{rows[:, MRR].mean():>8.3f}  worst fold R@10 {worst:.3f}"
            )

    for family, shown in (
        ("default", [*DEFAULT_AXES, "feedback_weight"]),
        ("today", [*TODAY_AXES, "feedback_weight"]),
    ):
        say(f"\nconstants {family} chose per fold (" + ", ".join(shown) + "):")
        for name in (family, f"{family} + feedback"):
            chosen = [p for p in outcomes[name].chosen if p is not None]
            say(
                f"{name:<28}"
                + "  ".join("/".join(f"{getattr(p, a):g}" for a in shown) for p in chosen)
            )
    everything = choose_default(score, np.ones(len(questions), dtype=bool))
    say(
        f"{'chosen on every fold':<28}"
        + "/".join(f"{getattr(everything, a):g}" for a in [*DEFAULT_AXES, "feedback_weight"])
        + ("  (the shipped constants)" if everything == ranking.DEFAULT else "  (NOT shipped)")
    )
    flatness(score, outcomes["default"], folds, say)

    new, today, bm25 = outcomes["default"], outcomes["today"], outcomes["BM25-only"]
    gain = new.held_out[:, R10].mean() - today.held_out[:, R10].mean()
    mrr_gain = new.held_out[:, MRR].mean() - today.held_out[:, MRR].mean()
    fold_gain = new.per_fold[:, R10] - today.per_fold[:, R10]
    temporal = categories == 2
    temporal_gain = new.held_out[temporal, R10].mean() - today.held_out[temporal, R10].mean()
    margins = new.per_fold[:, R10] - bm25.per_fold[:, R10]
    p50 = {k: statistics.median(v) * 1000 for k, v in prepared.timings.items()}

    def verdict(ok: bool) -> str:
        return "holds" if ok else "FAILS"

    say("\nacceptance (cross-validated):")
    say(
        f"  recall@10 {gain:+.3f} over today's ranking (target >= +{TARGET_RECALL_GAIN}): "
        + verdict(gain >= TARGET_RECALL_GAIN)
    )
    say(f"  MRR@10 {mrr_gain:+.3f} over today's (target >= 0): {verdict(mrr_gain >= 0)}")
    say(
        "  per fold recall@10 vs today's: "
        + " ".join(f"{v:+.3f}" for v in fold_gain)
        + f" (target: none below 0): {verdict(bool((fold_gain >= 0).all()))}"
    )
    say(
        f"  temporal recall@10 {temporal_gain:+.3f} (target >= +{TARGET_TEMPORAL_GAIN}): "
        + verdict(temporal_gain >= TARGET_TEMPORAL_GAIN)
    )
    say(
        "  over BM25-only per fold: "
        + " ".join(f"{v:+.3f}" for v in margins)
        + f" (target >= +{TARGET_MARGIN_OVER_BM25} each): "
        + verdict(bool((margins >= TARGET_MARGIN_OVER_BM25).all()))
    )
    ratio = p50["default"] / p50["today"]
    say(
        f"  search p50 in process (embedding included): shipped {p50['default']:.1f} ms, "
        f"today's {p50['today']:.1f} ms, ratio {ratio:.2f} (target <= {TARGET_P50_RATIO}): "
        + verdict(ratio <= TARGET_P50_RATIO)
    )


def flatness(
    score: Scorer, outcome: Outcome, folds: np.ndarray, say: Callable[[str], None]
) -> None:
    """Held-out recall@10 with one constant moved over its axis and the others as each fold
    chose them: a rule that carries over is flat around the value chosen."""
    say("\nflatness: cross-validated recall@10 with one constant set, the rest chosen per fold")
    for name, values in DEFAULT_AXES.items():
        cells = []
        for value in values:
            held = np.zeros(len(folds))
            for fold, chosen in enumerate(outcome.chosen):
                assert chosen is not None
                rows = score(replace(chosen, **{name: value}))
                held[folds == fold] = rows[folds == fold, R10]
            cells.append(f"{value:g}: {held.mean():.3f}")
        say(f"  {name:<24}" + "  ".join(cells))


def fold_assignment(users: Sequence[str], fold_count: int) -> dict[str, int]:
    """Conversations dealt to folds in order; with as many folds as conversations, each is
    its own fold (leave one conversation out)."""
    return {user: i % fold_count for i, user in enumerate(users)}
