"""How search results are ordered and scored, the same for every store backend.

The default (hybrid) ranking fuses the two signals by their scores, not only their ranks:
each candidate list is min-max normalised within the query and combined with weights. A
question that asks when lifts the memories that say when something happened (yesterday,
last week, two years ago). A memory then gains a share of the score of the memory next to
it in the same conversation (a question's answer is often the turn after the one that
matches its words), and a share of its conversation's weight among the candidates (a
conversation many candidates come from is about the query). The constants live in one
`RankingParams`; bench/bench_retrieval.py cross-validates them by conversation on LoCoMo's
development split, choosing them on some conversations and scoring them on the others, with
today's ranking (`TODAY`) measured beside them in the same run. Recall is flat around the
shipped values. Feedback from the keyword side's first pass (a second BM25 query with the
best matches' heaviest terms) is measured there too; it is off, as it added nothing the
other rules do not.

Every returned score is in [0, 1] and means the same for every query and mode: the top
result carries the calibrated dense similarity of the query's best semantic match
(`calibrated_cosine`), and the rest are scaled down by how far below the top they rank.
A query no memory is about scores low everywhere, which is what the relevance floor uses.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from memory_service.models import ScoredMemory, SparseVector, normalised_text

# Cosine similarities of all-MiniLM-L6-v2 between unrelated texts sit below ~0.2 and between
# a question and the text that answers it mostly above ~0.45; the calibration maps
# COSINE_UNRELATED to 0 and COSINE_RELATED to 1, linearly between.
COSINE_UNRELATED = 0.15
COSINE_RELATED = 0.65
# Extra results asked of the engine so that collapsing duplicates still fills top_k.
DUPLICATE_MARGIN = 10
# Feedback for the keyword side's second pass: the terms that weigh most in the first
# pass's best BM25 matches.
FEEDBACK_MEMORIES = 5
FEEDBACK_TERMS = 10


@dataclass(frozen=True, slots=True)
class RankingParams:
    """The tunable constants of the hybrid ranking. The default instance is what the service
    ranks by; bench/bench_retrieval.py chooses each value on some LoCoMo conversations and
    scores it on others, and `TODAY` (every newer signal off) is the ranking it is measured
    against."""

    # Share of the dense signal in the fused score; BM25 gets the rest.
    dense_weight: float = 0.3
    # Share of its better conversation neighbour's fused score a candidate gains.
    neighbour_weight: float = 0.5
    # Candidates fetched from each signal before fusing: deep enough that the neighbour of a
    # strong match is usually among them.
    candidate_depth: int = 50
    # Added to the fused score of a memory that says when something happened (yesterday,
    # last week, two years ago, on Friday), for a question that asks when.
    time_weight: float = 0.4
    # Weight of the feedback terms (FEEDBACK_TERMS of the FEEDBACK_MEMORIES best keyword
    # matches) added to the query for the keyword side's second pass; 0: one pass.
    feedback_weight: float = 0.0
    # Share of its conversation's weight among the candidates (their summed scores, relative
    # to the best conversation's) a candidate gains.
    conversation_weight: float = 0.2


DEFAULT = RankingParams()
# The ranking before the time and conversation rules: scores of both signals, neighbours.
TODAY = RankingParams(
    dense_weight=0.35,
    neighbour_weight=0.4,
    time_weight=0.0,
    feedback_weight=0.0,
    conversation_weight=0.0,
)

T = TypeVar("T")


def calibrated_cosine(cosine: float) -> float:
    """A cosine similarity on the score scale: 0 unrelated, 1 clearly about the query."""
    scaled = (cosine - COSINE_UNRELATED) / (COSINE_RELATED - COSINE_UNRELATED)
    return min(max(scaled, 0.0), 1.0)


def collapse_duplicates(results: Iterable[ScoredMemory], limit: int) -> list[ScoredMemory]:
    """The best-ranked copy of each (kind, normalised text), in order, at most `limit`."""
    seen: set[tuple[str, str]] = set()
    kept: list[ScoredMemory] = []
    for result in results:
        key = (result.memory.kind.value, normalised_text(result.memory.text))
        if key in seen:
            continue
        seen.add(key)
        kept.append(result)
        if len(kept) == limit:
            break
    return kept


@dataclass(frozen=True, slots=True)
class Candidate:
    """A hit of one signal before fusion: its raw score (cosine or BM25) and what the
    neighbour, time and feedback rules need; the rest of the memory is fetched only for the
    results kept."""

    id: str
    score: float
    conversation_id: str
    created_at: float
    text: str = ""


# A question about when: "When did…", "How long ago…", "What year…", "…since when…".
_ASKS_WHEN = re.compile(
    r"\bwhen\b|\bhow long\b|\bwhat (?:year|month|day|date|time)\b|\bwhich (?:year|month|day)\b",
    re.IGNORECASE,
)
# Words that place an event in time relative to when it was said, or on a weekday. Absolute
# dates are left to the keyword side, which matches them where the question names one.
_SAYS_WHEN = re.compile(
    r"\b(?:yesterday|today|tonight|tomorrow|last|next|ago|recently|lately|since|weekend|"
    r"weeks?|months?|years?|monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b",
    re.IGNORECASE,
)


def asks_when(query: str) -> bool:
    """Whether a query asks when something happened or for how long."""
    return _ASKS_WHEN.search(query) is not None


@functools.lru_cache(maxsize=4096)
def says_when(text: str) -> bool:
    """Whether a memory says when something happened, relative to when it was said."""
    return _SAYS_WHEN.search(text) is not None


def with_feedback(
    query: SparseVector, feedback: Sequence[SparseVector], weight: float
) -> SparseVector:
    """The query plus the FEEDBACK_TERMS terms that weigh most in the feedback memories'
    BM25 vectors (terms of the query left out), at `weight` times their share of the
    heaviest; the engine's IDF weighs them as it weighs the query's own terms."""
    own = set(query.indices)
    mass: dict[int, float] = {}
    for vector in feedback:
        for index, value in zip(vector.indices, vector.values, strict=True):
            if index not in own:
                mass[index] = mass.get(index, 0.0) + value
    terms = sorted(mass, key=lambda i: (-mass[i], i))[:FEEDBACK_TERMS]
    if not terms or weight <= 0:
        return query
    heaviest = mass[terms[0]]
    return SparseVector(
        [*query.indices, *terms],
        [*query.values, *(weight * mass[i] / heaviest for i in terms)],
    )


def _min_max(hits: Sequence[Candidate]) -> dict[str, float]:
    if not hits:
        return {}
    scores = [h.score for h in hits]
    low, high = min(scores), max(scores)
    if high - low <= 1e-12:
        return {h.id: 1.0 for h in hits}
    return {h.id: (h.score - low) / (high - low) for h in hits}


def _with_neighbours(
    fused: dict[str, float], candidates: dict[str, Candidate], weight: float
) -> dict[str, float]:
    """Each candidate plus `weight` times its better neighbour's score, neighbours being the
    candidates just before and after it in the same conversation."""
    conversations: dict[str, list[str]] = {}
    for memory_id in fused:
        conversation = candidates[memory_id].conversation_id
        if conversation:
            conversations.setdefault(conversation, []).append(memory_id)
    boosted = dict(fused)
    for ids in conversations.values():
        if len(ids) < 2:
            continue
        ids.sort(key=lambda i: (candidates[i].created_at, i))
        for position, memory_id in enumerate(ids):
            neighbours = ids[max(position - 1, 0) : position] + ids[position + 1 : position + 2]
            boosted[memory_id] += weight * max(fused[n] for n in neighbours)
    return boosted


def _with_conversation(
    scores: dict[str, float], candidates: dict[str, Candidate], weight: float
) -> dict[str, float]:
    """Each candidate plus `weight` times its conversation's share of the query: the sum of
    its candidates' scores, relative to the best conversation's (a memory outside any
    conversation is one of its own)."""
    totals: dict[str, float] = {}
    for memory_id, score in scores.items():
        key = candidates[memory_id].conversation_id or f"\x00{memory_id}"
        totals[key] = totals.get(key, 0.0) + score
    best = max(totals.values(), default=0.0)
    if best <= 0:
        return scores
    return {
        memory_id: score
        + weight * totals[candidates[memory_id].conversation_id or f"\x00{memory_id}"] / best
        for memory_id, score in scores.items()
    }


def _scaled(ranked: list[tuple[T, float]], confidence: float) -> list[tuple[T, float]]:
    """Scores relative to the top, times the query's confidence: the top gets `confidence`."""
    if not ranked:
        return []
    top = ranked[0][1]
    return [(item, confidence * (value / top if top > 0 else 1.0)) for item, value in ranked]


def fuse(
    dense_hits: Sequence[Candidate],
    sparse_hits: Sequence[Candidate],
    params: RankingParams = DEFAULT,
    *,
    query: str = "",
) -> list[tuple[str, float]]:
    """Every candidate's id and score, best first, in the hybrid ranking of `query`."""
    dense = _min_max(dense_hits)
    sparse = _min_max(sparse_hits)
    candidates = {h.id: h for h in (*sparse_hits, *dense_hits)}
    weight = params.dense_weight
    fused = {
        memory_id: weight * dense.get(memory_id, 0.0) + (1 - weight) * sparse.get(memory_id, 0.0)
        for memory_id in candidates
    }
    if params.time_weight > 0 and asks_when(query):
        for memory_id, hit in candidates.items():
            if says_when(hit.text):
                fused[memory_id] += params.time_weight
    boosted = _with_neighbours(fused, candidates, params.neighbour_weight)
    if params.conversation_weight > 0:
        boosted = _with_conversation(boosted, candidates, params.conversation_weight)
    order = sorted(boosted, key=lambda i: (-boosted[i], i))
    confidence = calibrated_cosine(max((h.score for h in dense_hits), default=0.0))
    return _scaled([(i, boosted[i]) for i in order], confidence)


def semantic(dense_hits: Sequence[ScoredMemory], limit: int) -> list[ScoredMemory]:
    """Dense order, each score its own calibrated cosine."""
    scored = (ScoredMemory(h.memory, calibrated_cosine(h.score)) for h in dense_hits)
    return collapse_duplicates(scored, limit)


def keyword(
    sparse_hits: Sequence[ScoredMemory], best_cosine: float | None, limit: int
) -> list[ScoredMemory]:
    """BM25 order, scaled by the query's best dense match like hybrid (by 1 when the caller
    has no dense vector to measure it with)."""
    confidence = 1.0 if best_cosine is None else calibrated_cosine(best_cosine)
    scaled = _scaled([(h.memory, h.score) for h in sparse_hits], confidence)
    return collapse_duplicates((ScoredMemory(m, score) for m, score in scaled), limit)
