"""Cross-validation of the hybrid ranking's constants on both development sets together, for
bench_retrieval.py.

Once the gateway run has saved every turn and stopped, memory_service's own Memories and
store are opened in this process on the same data directory. Every question is embedded
once and its candidates fetched once (and the conversations a setting reads whole, once per
set of them); ranking a setting is then only ranking.fuse over what was fetched. That this
path is the service's own is checked in the run: with the shipped constants it must return
what the gateway's default search returned.

Folds are LoCoMo's conversations and LongMemEval's questions (each is one user), fold k of
both sets held out together. For each fold the constants are chosen on the other folds'
questions (recall@10, each set weighing SET_WEIGHTS, ties: MRR@10) and scored on the fold's
own: every question is scored once, by constants that never saw it. The default has one
constant per rule, too many for a whole grid: starting from the middle of every axis (not
from the shipped values, which saw every question), each constant in turn takes the best
value of its axis with the others held, until a round changes nothing (coordinate ascent).
The same ascent on every question is what the service should ship; the report says whether
it does. What a rule adds is measured by setting its weight to 0 in each fold's chosen
constants. BM25-only, dense-only and today's default have nothing to tune; they are the
gateway's own results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from memory_service import ranking, timeframes
from memory_service.config import MemorySettings
from memory_service.models import SearchFilters, SearchMode, normalised_text
from memory_service.search import conversation_context, hybrid_candidates
from memory_service.server import create_server
from memory_service.store.ownership import UserScope
from service_kit.identity import Identity

TOP_K = 10
# Columns of a question's figures.
R1, R5, R10, MRR = range(4)

# The values the default's constants are chosen from. 0 is on every rule's axis, so that a
# rule that does not hold on both sets can be chosen away.
DEFAULT_AXES: dict[str, tuple[float, ...]] = {
    "dense_weight": (0.2, 0.3, 0.45, 0.6),
    "neighbour_weight": (0.0, 0.25, 0.5),
    "second_neighbour_weight": (0.0, 0.3, 0.6),
    "answer_weight": (0.0, 0.4, 0.8),
    "length_weight": (0.0, 0.1, 0.2),
    "cosine_weight": (0.0, 0.5, 1.0),
    "time_weight": (0.0, 0.2),
    "time_neighbour_weight": (0.0, 0.4),
    "date_weight": (0.0, 0.4),
    "date_said_weight": (0.0, 0.3),
    "conversation_weight": (0.0, 0.1, 0.2),
    "diversity_weight": (0.0, 0.05, 0.1, 0.2, 0.4),
    "lean_chars": (0, 300),
    "prompt_weight": (0.0, 0.05, 0.1),
    "asked_weight": (0.0, 0.25, 0.5),
    "cover_weight": (0.0, 0.1, 0.2, 0.4),
    # Fewer candidates are cheaper, and more give every rule more to lift that does not belong.
    "candidate_depth": (30, 40, 50),
}
# The rules of the default, each set to 0 in turn to measure it.
SIGNALS = {
    "context": "context_memories",
    "neighbours": "neighbour_weight",
    "second neighbours": "second_neighbour_weight",
    "answer": "answer_weight",
    "length": "length_weight",
    "cosine": "cosine_weight",
    "time": "time_weight",
    "time next to the words": "time_neighbour_weight",
    "date": "date_weight",
    "date in its own words": "date_said_weight",
    "conversation": "conversation_weight",
    "diversity": "diversity_weight",
    "leaning only of short turns": "lean_chars",
    "prompt": "prompt_weight",
    "asked": "asked_weight",
    "cover": "cover_weight",
}
# Acceptance on LongMemEval: over the better single signal; on LoCoMo: recall@10 and over BM25.
TARGET_LME_RECALL_MARGIN = 0.05
TARGET_LME_MRR_MARGIN = 0.03
TARGET_LME_TYPE_SLACK = 0.03
TARGET_LOCOMO_RECALL = 0.78
TARGET_LOCOMO_MARGIN_OVER_BM25 = 0.08
# What each set weighs when constants are chosen (1 for a set not named). The two sets are
# told apart by their own shape, not by their size: LongMemEval's 60 questions each hold
# hundreds of long turns, LoCoMo's 760 a few short ones.
SET_WEIGHTS: dict[str, float] = {"LoCoMo": 3.0}
# Rounds of coordinate ascent at most.
ASCENT_ROUNDS = 2


class Question(Protocol):
    user: str
    text: str
    evidence: frozenset[str]
    category: str


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
    """What every setting ranks: each question's candidates at each candidate depth, the
    context of each set of conversations a setting reads whole, the memory id → evidence id
    map, the in-process default's results for the check, and the calendar they were asked in
    (the service's: UTC, today)."""

    candidates: list[dict[int, Hits]]
    contexts: dict[tuple[int, tuple[str, ...]], ranking.Context]
    service_default: list[list[str]]
    turn_of: dict[str, str]
    local: timeframes.LocalCalendar = timeframes.UTC_CALENDAR


def context_settings() -> list[ranking.RankingParams]:
    """Settings that between them pick every set of conversations a chosen setting can read
    whole: which ones depends only on the candidates and their own scores, so on the
    candidate depth and the dense weight."""
    weights = {*DEFAULT_AXES["dense_weight"], ranking.DEFAULT.dense_weight}
    depths = {*DEFAULT_AXES["candidate_depth"], ranking.DEFAULT.candidate_depth}
    return [
        replace(ranking.DEFAULT, dense_weight=w, candidate_depth=d)
        for w in sorted(weights)
        for d in sorted(depths)
    ]


def fetch_depth(params: ranking.RankingParams) -> int:
    """How deep a search with `params` fetches each signal's candidates, as the service does.
    Each depth is fetched on its own, not cut from a deeper fetch: where BM25 scores tie at
    the cut, the engine's choice among them is the one the service gets."""
    return max(params.candidate_depth, TOP_K + ranking.DUPLICATE_MARGIN)


async def prepare(
    data_dir: Path,
    questions: Sequence[Question],
    turn_of: dict[str, str],
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
    local = timeframes.LocalCalendar.at(UTC, datetime.now(UTC))
    try:
        candidates: list[dict[int, Hits]] = []
        contexts: dict[tuple[int, tuple[str, ...]], ranking.Context] = {}
        service_default: list[list[str]] = []
        for index, question in enumerate(questions):
            who = Identity(question.user)
            scope = UserScope.of(who.user_id, SearchFilters())
            results = await memories.search(
                who, question.text, TOP_K, SearchMode.HYBRID, SearchFilters()
            )
            service_default.append([turn_of.get(r.memory.id, "") for r in results])
            dense = await memories.embedder.embed(
                question.text, who.user_id, first_window_only=True
            )
            by_depth: dict[int, Hits] = {}
            for depth in sorted({fetch_depth(params) for params in readers}):
                by_depth[depth] = await hybrid_candidates(
                    memories.store,
                    scope,
                    dense=dense,
                    sparse=memories._sparse_query(question.text),
                    depth=depth,
                    document_terms=memories._sparse_document,
                    feedback_weight=0.0,
                )
            candidates.append(by_depth)
            for params in readers:
                own = by_depth[fetch_depth(params)]
                read = tuple(ranking.context_conversations(*own, params))
                if read and (index, read) not in contexts:
                    contexts[index, read] = await conversation_context(
                        memories.store, scope, read, dense=dense
                    )
        return Prepared(candidates, contexts, service_default, turn_of, local)
    finally:
        await server.stop(0)


def ranked_evidence(
    prepared: Prepared, index: int, question: Question, params: ranking.RankingParams
) -> list[str]:
    """The evidence ids of the top TOP_K under `params`, duplicates collapsed as the
    service collapses them."""
    dense_hits, sparse_hits = prepared.candidates[index][fetch_depth(params)]
    read = tuple(ranking.context_conversations(dense_hits, sparse_hits, params))
    context = prepared.contexts[index, read] if read else ranking.NO_CONTEXT
    every = (*dense_hits, *sparse_hits, *context.dense)
    texts = {h.id: h.text for h in every}
    seen: set[str] = set()
    kept: list[str] = []
    fused = ranking.fuse(
        dense_hits, sparse_hits, params, query=question.text, context=context, local=prepared.local
    ).ranked
    for memory_id, _ in fused:
        key = normalised_text(texts[memory_id])
        if key in seen:
            continue
        seen.add(key)
        kept.append(prepared.turn_of.get(memory_id, ""))
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


def better(
    score: Scorer, train: np.ndarray, sets: np.ndarray, weights: Sequence[float] = ()
) -> Callable[[ranking.RankingParams], tuple[float, float]]:
    """The order settings are chosen by: recall@10 on the training questions, each set
    weighing its weight (set i `weights[i]`, 1 where none is given) however many questions
    it has, then MRR@10 the same way."""
    groups = [
        (train & (sets == s), weights[s] if s < len(weights) else 1.0) for s in np.unique(sets)
    ]
    groups = [(g, w) for g, w in groups if g.any()]
    total = sum(w for _, w in groups)

    def key(params: ranking.RankingParams) -> tuple[float, float]:
        rows = score(params)
        return (
            float(sum(w * rows[g, R10].mean() for g, w in groups) / total),
            float(sum(w * rows[g, MRR].mean() for g, w in groups) / total),
        )

    return key


def ascent_start() -> ranking.RankingParams:
    """Where the coordinate ascent starts: the middle value of each axis, not the shipped
    constants, which were chosen on every question, the held-out ones included."""
    middle = {name: values[len(values) // 2] for name, values in DEFAULT_AXES.items()}
    return replace(ranking.DEFAULT, **middle)


def ascent(
    base: ranking.RankingParams, axes: dict[str, tuple[float, ...]], weights: Sequence[float] = ()
) -> Callable[[Scorer, np.ndarray, np.ndarray], ranking.RankingParams]:
    """Chooses by coordinate ascent from `base`: each constant in turn takes its axis's best
    value with the others held, until a round changes nothing; the sets weigh `weights`."""

    def choose(score: Scorer, train: np.ndarray, sets: np.ndarray) -> ranking.RankingParams:
        key = better(score, train, sets, weights)
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


DataSet = tuple[str, str, Sequence[Question]]


def report(
    sets: Sequence[DataSet],
    prepared: Prepared,
    gateway: dict[str, dict[str, list[list[str]]]],
    fold_count: int,
    fold_of_user: dict[str, int],
    say: Callable[[str], None] = print,
) -> None:
    """Cross-validates the default's constants on every set together (folds of each set by
    its own unit, fold k of every set held out at once) and prints each set's table beside
    BM25-only, dense-only and today's default from the same run."""
    questions = [q for _, _, qs in sets for q in qs]
    names = [name for name, _, _ in sets]
    set_of = np.array([i for i, (_, _, qs) in enumerate(sets) for _ in qs])
    folds = np.array([fold_of_user[q.user] for q in questions])
    categories = np.array([q.category for q in questions])
    score = Scorer(prepared, questions)

    replayed = [ranked_evidence(prepared, i, q, ranking.DEFAULT) for i, q in enumerate(questions)]
    shipped_gateway = [r for name in names for r in gateway[name]["default"]]
    for what, rankings in (
        ("in-process search with the shipped constants", prepared.service_default),
        ("the replay of the shipped constants", replayed),
    ):
        changed = [i for i, r in enumerate(rankings) if r != shipped_gateway[i]]
        say(
            f"check: {what} returned what the gateway's default returned for "
            f"{len(questions) - len(changed)}/{len(questions)} questions"
        )

    started = time.perf_counter()
    weights = [SET_WEIGHTS.get(name, 1.0) for name in names]
    say("sets weigh " + ", ".join(f"{n} {w:g}" for n, w in zip(names, weights, strict=True)))
    choose_default = ascent(ascent_start(), DEFAULT_AXES, weights)
    outcomes = {
        "default (CV)": cross_validate(
            lambda s, train, fold: choose_default(s, train, set_of), score, folds, fold_count
        ),
    }
    default_chosen = [p for p in outcomes["default (CV)"].chosen if p is not None]
    fixed = {
        way: np.array(
            [
                figures(r, q.evidence)
                for r, q in zip(
                    [r for name in names for r in gateway[name][source]], questions, strict=True
                )
            ]
        )
        for way, source in (
            ("today's default", "default"),
            ("BM25-only", "BM25-only"),
            ("dense-only", "dense-only"),
            ("floor on (today)", "floor on"),
        )
    }
    outcomes.update(
        {name: cross_validate(rows, score, folds, fold_count) for name, rows in fixed.items()}
    )
    for name, field in SIGNALS.items():
        outcomes[f"default, no {name}"] = cross_validate(
            lambda s, train, fold, field=field: replace(default_chosen[fold], **{field: 0}),
            score,
            folds,
            fold_count,
        )
    say(f"{len(score.kept)} settings ranked in {time.perf_counter() - started:.0f} s")

    for index, (name, unit, qs) in enumerate(sets):
        mask = set_of == index
        say(f"\n{name}, cross-validated, {fold_count} folds by {unit} ({len(qs)} questions):")
        say(f"{'':<32}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'MRR@10':>8}  R@10 by fold")
        for way, outcome in outcomes.items():
            mean = outcome.held_out[mask].mean(axis=0)
            by_fold = " ".join(
                f"{outcome.held_out[mask & (folds == f), R10].mean():.3f}"
                for f in range(fold_count)
                if (mask & (folds == f)).any()
            )
            say(
                f"{way:<32}{mean[R1]:>7.3f}{mean[R5]:>7.3f}{mean[R10]:>7.3f}{mean[MRR]:>8.3f}"
                f"  {by_fold}"
            )
        for category in sorted({q.category for q in qs}):
            part = mask & (categories == category)
            say(f"\n{name}: {category} ({part.sum()} questions)")
            for way in ("default (CV)", "today's default", "BM25-only", "dense-only"):
                rows = outcomes[way].held_out[part]
                say(
                    f"{way:<32}{rows[:, R1].mean():>7.3f}{rows[:, R5].mean():>7.3f}"
                    f"{rows[:, R10].mean():>7.3f}{rows[:, MRR].mean():>8.3f}"
                )

    acceptance(sets, outcomes, set_of, categories, say)
    shown = list(DEFAULT_AXES)
    say("\nconstants the default chose per fold (" + ", ".join(shown) + "):")
    for fold, p in enumerate(default_chosen):
        say(f"  fold {fold}: " + "/".join(f"{getattr(p, a):g}" for a in shown))
    everything = choose_default(score, np.ones(len(questions), dtype=bool), set_of)
    say(
        "  chosen on every fold: "
        + "/".join(f"{getattr(everything, a):g}" for a in shown)
        + ("  (the shipped constants)" if everything == ranking.DEFAULT else "  (NOT shipped)")
    )
    flatness(score, outcomes["default (CV)"], folds, set_of, names, say)


def acceptance(
    sets: Sequence[DataSet],
    outcomes: dict[str, Outcome],
    set_of: np.ndarray,
    categories: np.ndarray,
    say: Callable[[str], None],
) -> None:
    def verdict(ok: bool) -> str:
        return "holds" if ok else "FAILS"

    def mean(way: str, mask: np.ndarray, column: int) -> float:
        return float(outcomes[way].held_out[mask, column].mean())

    say("\nacceptance (cross-validated):")
    for index, (name, _, _) in enumerate(sets):
        mask = set_of == index
        default = {c: mean("default (CV)", mask, c) for c in (R10, MRR)}
        bm25 = {c: mean("BM25-only", mask, c) for c in (R10, MRR)}
        dense = {c: mean("dense-only", mask, c) for c in (R10, MRR)}
        floor = mean("floor on (today)", mask, R10) / max(mean("today's default", mask, R10), 1e-9)
        if name == "LongMemEval":
            best = {c: max(bm25[c], dense[c]) for c in (R10, MRR)}
            say(
                f"  {name} recall@10 {default[R10]:.3f}, better single signal {best[R10]:.3f}: "
                f"{default[R10] - best[R10]:+.3f} (target >= +{TARGET_LME_RECALL_MARGIN}): "
                + verdict(default[R10] - best[R10] >= TARGET_LME_RECALL_MARGIN)
            )
            say(
                f"  {name} MRR@10 {default[MRR]:.3f}, better single signal {best[MRR]:.3f}: "
                f"{default[MRR] - best[MRR]:+.3f} (target >= +{TARGET_LME_MRR_MARGIN}): "
                + verdict(default[MRR] - best[MRR] >= TARGET_LME_MRR_MARGIN)
            )
            gaps = []
            for category in sorted(set(categories[mask])):
                part = mask & (categories == category)
                single = max(mean("BM25-only", part, R10), mean("dense-only", part, R10))
                gaps.append((mean("default (CV)", part, R10) - single, category))
            say(
                "  per type, default recall@10 minus the better single signal: "
                + ", ".join(f"{c} {g:+.3f}" for g, c in gaps)
                + f" (none below -{TARGET_LME_TYPE_SLACK}): "
                + verdict(min(g for g, _ in gaps) >= -TARGET_LME_TYPE_SLACK)
            )
        else:
            say(
                f"  {name} recall@10 {default[R10]:.3f} (target >= {TARGET_LOCOMO_RECALL}): "
                + verdict(default[R10] >= TARGET_LOCOMO_RECALL)
            )
            margin = default[R10] - bm25[R10]
            say(
                f"  {name} over BM25-only {margin:+.3f} "
                f"(target >= +{TARGET_LOCOMO_MARGIN_OVER_BM25}): "
                + verdict(margin >= TARGET_LOCOMO_MARGIN_OVER_BM25)
            )
        say(f"  {name} floor on keeps {floor:.3f} of today's default recall@10 (target >= 0.95)")


def flatness(
    score: Scorer,
    outcome: Outcome,
    folds: np.ndarray,
    set_of: np.ndarray,
    names: Sequence[str],
    say: Callable[[str], None],
) -> None:
    """Held-out recall@10 per set with one constant moved over its axis and the others as
    each fold chose them: a rule that carries over is flat around the value chosen."""
    say("\nflatness: cross-validated recall@10 (" + " / ".join(names) + ") with one constant set")
    for name, values in DEFAULT_AXES.items():
        cells = []
        for value in values:
            held = np.zeros(len(folds))
            for fold, chosen in enumerate(outcome.chosen):
                assert chosen is not None
                rows = score(replace(chosen, **{name: value}))
                held[folds == fold] = rows[folds == fold, R10]
            per_set = "/".join(f"{held[set_of == i].mean():.3f}" for i in range(len(names)))
            cells.append(f"{value:g}: {per_set}")
        say(f"  {name:<24}" + "  ".join(cells))


def fold_assignment(units: Sequence[str], fold_count: int) -> dict[str, int]:
    """Units (a conversation's or a question's user) dealt to folds in order."""
    return {unit: i % fold_count for i, unit in enumerate(units)}
