"""Cross-validation of the hybrid ranking's constants by conversation, for bench_retrieval.py.

Once the gateway run has saved every turn and stopped, memory_service's own Memories and
store are opened in this process on the same data directory. Every question is embedded
once and its candidates fetched once per setting that changes what the store returns (the
feedback weight); each grid point is then only ranking.fuse over those candidates, so
hundreds of settings cost a minute or two. That this path is the service's own is checked in the
run: with the shipped constants it must return, for every question, what the gateway's
default search returned.

Folds are conversations (each conversation is one user). For each fold and each family of
settings, the setting with the best recall@10 (ties: MRR@10) on the other folds' questions
is chosen and scored on the fold's own: every question is scored once, by constants that
never saw it. Families: the default (each of its rules' weights in the grid, 0 included),
today's ranking (the same fusion with the newer rules off, its own two weights chosen the
same way), to say what each rule adds the default with that rule held off, and signals
measured but off in the service (keyword feedback) added to the default and to today's.
BM25-only and dense-only have nothing to tune; they are the gateway's own results.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from memory_service import ranking
from memory_service.config import MemorySettings
from memory_service.models import SearchFilters, SearchMode, normalised_text
from memory_service.search import hybrid_candidates, search_memories
from memory_service.server import create_server
from service_kit.identity import Identity

TOP_K = 10
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
# Columns of a question's figures.
R1, R5, R10, MRR = range(4)

# The grids each family's constants are chosen from; every other constant is the family's
# own (TODAY's, with the newer signals off, or the shipped DEFAULT's). The shipped values
# sit inside each axis, so that a choice at an edge would show.
TODAY_AXES: dict[str, tuple[float, ...]] = {
    "dense_weight": (0.25, 0.3, 0.35, 0.4, 0.45, 0.5),
    "neighbour_weight": (0.2, 0.3, 0.4, 0.5, 0.6),
}
DEFAULT_AXES: dict[str, tuple[float, ...]] = {
    "dense_weight": (0.25, 0.3, 0.35, 0.4),
    "neighbour_weight": (0.4, 0.5, 0.6),
    "time_weight": (0.0, 0.2, 0.4, 0.6),
    "conversation_weight": (0.0, 0.1, 0.2, 0.3),
}
# Signals measured beside the default but off in it: the default's grid with each one's
# weights added, so that what it would add is measured the same way.
MEASURED_AXES: dict[str, tuple[float, ...]] = {"feedback_weight": (0.15, 0.3)}
# The signals the default adds to today's ranking, each held off in turn to measure it.
SIGNALS = {"time": "time_weight", "conversation": "conversation_weight"}
FEEDBACK_WEIGHTS = (0.0, *MEASURED_AXES["feedback_weight"])
# Acceptance: the default against today's ranking and BM25-only, cross-validated.
TARGET_RECALL_GAIN = 0.05
TARGET_TEMPORAL_GAIN = 0.05
TARGET_MARGIN_OVER_BM25 = 0.08
TARGET_P50_RATIO = 1.5


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
class Family:
    """A way of ranking with tunable constants: its grid and each point's per-question
    figures (rows in question order)."""

    name: str
    grid: list[ranking.RankingParams]
    figures: dict[ranking.RankingParams, np.ndarray]


@dataclass
class Outcome:
    """A family's cross-validated result: every question's held-out figures, the constants
    each fold chose, and each fold's figures."""

    held_out: np.ndarray
    chosen: list[ranking.RankingParams | None]
    per_fold: np.ndarray


def cross_validate(family: Family | np.ndarray, folds: np.ndarray, fold_count: int) -> Outcome:
    """Constants chosen on the other folds, scored on each fold; an array is a way with
    nothing to tune."""
    held = np.zeros((len(folds), 4))
    chosen: list[ranking.RankingParams | None] = []
    per_fold = np.zeros((fold_count, 4))
    for fold in range(fold_count):
        train, test = folds != fold, folds == fold
        if isinstance(family, Family):
            scores = family.figures
            best = max(
                family.grid,
                key=lambda p: (scores[p][train, R10].mean(), scores[p][train, MRR].mean()),
            )
            rows = scores[best]
            chosen.append(best)
        else:
            rows = family
            chosen.append(None)
        held[test] = rows[test]
        per_fold[fold] = rows[test].mean(axis=0)
    return Outcome(held, chosen, per_fold)


def grid(
    base: ranking.RankingParams, axes: dict[str, tuple[float, ...]]
) -> list[ranking.RankingParams]:
    """Every combination of the axes' values, the other constants as in `base`."""
    names = list(axes)
    return [
        replace(base, **dict(zip(names, values, strict=True)))
        for values in itertools.product(*axes.values())
    ]


@dataclass
class Prepared:
    """What every grid point ranks: each question's candidates per feedback weight, the
    memory id → evidence id map, and the in-process default's results for the check."""

    candidates: dict[tuple[int, float], tuple[list[ranking.Candidate], list[ranking.Candidate]]]
    service_default: list[list[str]]
    dia_of: dict[str, str]
    timings: dict[str, list[float]]


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
    try:
        candidates: dict[tuple[int, float], Any] = {}
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
                candidates[index, weight] = await hybrid_candidates(
                    memories.store,
                    who.user_id,
                    SearchFilters(),
                    dense=dense,
                    sparse=sparse,
                    depth=max(ranking.DEFAULT.candidate_depth, TOP_K + ranking.DUPLICATE_MARGIN),
                    document_terms=memories._sparse_document,
                    feedback_weight=weight,
                    with_text=True,
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
        return Prepared(candidates, service_default, dia_of, timings)
    finally:
        await server.stop(0)


def ranked_evidence(
    prepared: Prepared, index: int, question: Question, params: ranking.RankingParams
) -> list[str]:
    """The evidence ids of the top TOP_K under `params`, duplicates collapsed as the
    service collapses them."""
    dense_hits, sparse_hits = prepared.candidates[index, params.feedback_weight]
    texts = {h.id: h.text for h in (*dense_hits, *sparse_hits)}
    seen: set[str] = set()
    kept: list[str] = []
    for memory_id, _ in ranking.fuse(dense_hits, sparse_hits, params, query=question.text):
        key = normalised_text(texts[memory_id])
        if key in seen:
            continue
        seen.add(key)
        kept.append(prepared.dia_of.get(memory_id, ""))
        if len(kept) == TOP_K:
            break
    return kept


def evaluate(
    prepared: Prepared, questions: Sequence[Question], points: Iterable[ranking.RankingParams]
) -> dict[ranking.RankingParams, np.ndarray]:
    out = {}
    for params in points:
        out[params] = np.array(
            [
                figures(ranked_evidence(prepared, i, q, params), q.evidence)
                for i, q in enumerate(questions)
            ]
        )
    return out


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

    # The gateway's searches ran concurrently, so their query vectors were encoded in
    # batches, this process's one by one: the last bits of a cosine can differ, and two
    # candidates that tie to them swap. Where orders differ, say what it does to recall.
    service = [ranked != gateway["default"][i] for i, ranked in enumerate(prepared.service_default)]
    replay = [
        ranked_evidence(prepared, i, q, ranking.DEFAULT) != gateway["default"][i]
        for i, q in enumerate(questions)
    ]
    for what, differs, rankings in (
        ("in-process search with the shipped constants", service, prepared.service_default),
        (
            "the grid's replay of the shipped constants",
            replay,
            [ranked_evidence(prepared, i, q, ranking.DEFAULT) for i, q in enumerate(questions)],
        ),
    ):
        changed = [i for i, d in enumerate(differs) if d]
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
    today_grid = grid(ranking.TODAY, TODAY_AXES)
    default_grid = grid(ranking.DEFAULT, DEFAULT_AXES)
    measured = {
        field: [replace(p, **{field: value}) for p in default_grid for value in values]
        for field, values in MEASURED_AXES.items()
    }
    every = [*today_grid, *default_grid, *itertools.chain(*measured.values())]
    scored = evaluate(prepared, questions, dict.fromkeys(every))
    say(f"{len(scored)} grid points ranked in {time.perf_counter() - started:.0f} s")

    def family(name: str, points: list[ranking.RankingParams]) -> Family:
        return Family(name, points, {p: scored[p] for p in points})

    families = {"default": family("default", default_grid), "today": family("today", today_grid)}
    for signal, field in SIGNALS.items():
        kept = [p for p in default_grid if getattr(p, field) == 0]
        families[f"default, no {signal}"] = family(signal, kept)
    for field, extra in measured.items():
        signal = field.removesuffix("_weight")
        with_it = [*default_grid, *extra]
        families[f"default + {signal}"] = family(signal, with_it)
        alone = [p for p in with_it if not any(getattr(p, f) for f in SIGNALS.values())]
        families[f"today + {signal}"] = family(signal, alone)
    fixed = {
        way: np.array(
            [figures(r, q.evidence) for r, q in zip(gateway[way], questions, strict=True)]
        )
        for way in ("BM25-only", "dense-only")
    }
    outcomes = {name: cross_validate(f, folds, fold_count) for name, f in families.items()}
    outcomes.update({name: cross_validate(rows, folds, fold_count) for name, rows in fixed.items()})

    say(f"\ncross-validated, {fold_count} folds by conversation ({len(questions)} questions):")
    say(f"{'':<26}{'R@5':>7}{'R@10':>7}{'MRR@10':>8}  worst fold R@5/R@10/MRR  R@10 by fold")
    for name, outcome in outcomes.items():
        mean = outcome.held_out.mean(axis=0)
        worst = outcome.per_fold.min(axis=0)
        by_fold = " ".join(f"{v:.3f}" for v in outcome.per_fold[:, R10])
        say(
            f"{name:<26}{mean[R5]:>7.3f}{mean[R10]:>7.3f}{mean[MRR]:>8.3f}  "
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
                f"{name:<26}{rows[:, R5].mean():>7.3f}{rows[:, R10].mean():>7.3f}"
                f"{rows[:, MRR].mean():>8.3f}  worst fold R@10 {worst:.3f}"
            )

    shown = [*DEFAULT_AXES, *MEASURED_AXES]
    say("\nconstants chosen per fold (" + ", ".join(shown) + "):")
    for name in families:
        chosen = [p for p in outcomes[name].chosen if p is not None]
        say(
            f"{name:<26}" + "  ".join("/".join(f"{getattr(p, a):g}" for a in shown) for p in chosen)
        )
    flatness(families["default"], outcomes["default"], folds, say)

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
    family: Family, outcome: Outcome, folds: np.ndarray, say: Callable[[str], None]
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
                rows = family.figures[replace(chosen, **{name: value})]
                held[folds == fold] = rows[folds == fold, R10]
            cells.append(f"{value:g}: {held.mean():.3f}")
        say(f"  {name:<18}" + "  ".join(cells))


def fold_assignment(users: Sequence[str], fold_count: int) -> dict[str, int]:
    """Conversations dealt to folds in order; with as many folds as conversations, each is
    its own fold (leave one conversation out)."""
    return {user: i % fold_count for i, user in enumerate(users)}
