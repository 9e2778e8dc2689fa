"""How search results are ordered and scored, the same for every store backend.

The default (hybrid) ranking fuses the two signals by their scores, not only their ranks:
each candidate list is min-max normalised within the query and combined with weights, a
memory's own score. The conversations of the best few candidates are then read whole, so
that a memory's neighbours are known even where neither signal returned them, and a memory
gains shares of its neighbours' own scores: of the turns next to it and two away (a
conversation stays on a topic for a few turns), and of the turn before it when that turn
asks a question (the memory is its answer, and a question's words are often only in the
question). It also gains by its raw cosine similarity, by how much it says (a one-line
acknowledgement rarely holds what a question needs), by saying when something happened
(yesterday, last week, two years ago) when the question asks when, the more so next to the
turns with the question's words, by being about a date the query names, the more so where
its own words say so, and by its conversation's weight among the candidates (a conversation
many candidates come from is about the query). A prompt gains a little for being what the
person wrote and a share of its answer's score (the more, the longer the answer), and a
greedy pass lifts the memory with the query's words no memory above it has (a question
naming two things needs a memory of each). Each of these is a named feature (FEATURES)
and a memory's score is their values times their weights, which live in one frozen
`RankingParams`; `fuse` also returns each feature's contribution. bench/bench_retrieval.py
cross-validates the weights on LoCoMo's and LongMemEval's development sets together, in the
product's shape. Feedback from the keyword side's first pass (a second BM25 query with the
best matches' heaviest terms) is built and off, as it added nothing the other rules do not.

Every returned score is in [0, 1] and means the same for every query and mode: the top
result carries the calibrated dense similarity of the query's best semantic match
(`calibrated_cosine`), and the rest are scaled down by how far below the top they rank.
A query no memory is about scores low everywhere, which is what the relevance floor uses.
"""

from __future__ import annotations

import functools
import heapq
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from memory_service import timeframes
from memory_service.embedding.calibration import Calibration
from memory_service.models import MemoryKind, ScoredMemory, SparseVector, normalised_text

# What cosines mean is the model's (embedding/calibration.py, measured at startup); this one,
# all-MiniLM-L6-v2's, serves callers that rank without a model at hand.
REFERENCE_CALIBRATION = Calibration(unrelated=0.15, related=0.65)
# Extra results asked of the engine so that collapsing duplicates still fills top_k.
DUPLICATE_MARGIN = 10
# Feedback for the keyword side's second pass: the terms that weigh most in the first
# pass's best BM25 matches.
FEEDBACK_MEMORIES = 5
FEEDBACK_TERMS = 10
# The length rule's unit and cap, in characters.
LENGTH_UNIT = 100
LENGTH_CAP = 500
# At most this many memories of the best candidates' conversations are read.
CONTEXT_LIMIT = 200


@dataclass(frozen=True, slots=True)
class RankingParams:
    """The tunable constants of the hybrid ranking. The default instance is what the service
    ranks by; bench/bench_retrieval.py chooses each value on some questions of both development
    sets and scores it on others. Every weight is a feature's (`weight`)."""

    # Share of the dense signal in a memory's own score; BM25 gets the rest.
    dense_weight: float = 0.3
    # Share of the better of its two nearest conversation neighbours' own scores a memory
    # gains (the turn before or after it).
    neighbour_weight: float = 0.5
    # The same for the better of the two turns two away: a conversation stays on a topic for
    # a few turns, and an answer is often a turn or two from the words that ask for it.
    second_neighbour_weight: float = 0.6
    # Candidates fetched from each signal before fusing.
    candidate_depth: int = 40
    # Added to a memory that says when something happened (yesterday, last week, two years
    # ago, on Friday), for a question that asks when; not shared with its neighbours.
    time_weight: float = 0.2
    # Share of the best own score of the turns one and two away that such a memory gains as
    # well: the turn that says when is often next to the one with the question's words.
    time_neighbour_weight: float = 0.4
    # Weight of the feedback terms (FEEDBACK_TERMS of the FEEDBACK_MEMORIES best keyword
    # matches) added to the query for the keyword side's second pass; 0: one pass.
    feedback_weight: float = 0.0
    # Share of its conversation's weight among the candidates (their summed scores, relative
    # to the best conversation's) a memory gains.
    conversation_weight: float = 0.2
    # Share of the previous turn's own score a memory gains when that turn asks a question:
    # the memory is its answer, and a question's words are often only in the question.
    answer_weight: float = 0.4
    # Weight of how much a memory says: log(1 + length / LENGTH_UNIT), length capped at
    # LENGTH_CAP characters. A one-line acknowledgement rarely holds what a question needs.
    length_weight: float = 0.2
    # Weight of the raw cosine similarity, beside its min-max share in the own score: how
    # close the memory is to the query, not only to the other candidates.
    cosine_weight: float = 0.5
    # Added to a memory that is about a time the query names ("on 1 May, 2022", "in March
    # 2023", "in 2023"): saved then, a date written in it, or its "yesterday" or "last
    # month" counted from either (timeframes.py).
    date_weight: float = 0.4
    # Added as well where the memory's own words place it in that time: its relative words
    # or a date written after its first ("last month" in a turn saved in April, for "in
    # March"), not only the day it was said.
    date_said_weight: float = 0.3
    # The conversations of this many best candidates (by their own scores) are read whole,
    # CONTEXT_LIMIT memories at most, so that the neighbour and answer rules see turns
    # neither signal returned; 0: neighbours are other candidates only.
    context_memories: int = 5
    # Taken from a memory's score for each memory of its conversation ranked above it: an
    # assistant history spreads what one question needs over several conversations, and one
    # strong conversation's lifts would fill the top otherwise.
    diversity_weight: float = 0.0
    # A turn this long or shorter takes its whole share of its neighbours' and its question's
    # scores, a longer one that share times this over its length: a short reply ("last
    # week!") leans on the turns around it, a long answer says what it is about in its own
    # words. 0: every turn its whole share.
    lean_chars: int = 300
    # Added to a prompt: what the person wrote, not an answer to them. A question about
    # someone asks what they said; an answer (an assistant's most of all) restates it.
    prompt_weight: float = 0.0
    # Share of its answer's own score a prompt gains (the response saved for it, the turn
    # after it): a prompt and its answer are one exchange, and the answer's words often name
    # what the prompt only hints at. The answer rule is the other direction.
    asked_weight: float = 0.25
    # Weight of the share of the query's words (each by its rarity among the candidates) a
    # memory has that no memory ranked above it has: a question naming two things ("which
    # did I buy first, the kettle or the toaster?") needs a memory of each, and the second
    # thing's memory would otherwise sit below every turn about the first.
    cover_weight: float = 0.4


DEFAULT = RankingParams()
# The ranking before the time, conversation, answer, length and cosine rules and the second
# neighbours: scores of both signals, the nearest neighbours among the candidates. The tests
# start from it to see one rule at a time.
TODAY = RankingParams(
    dense_weight=0.35,
    neighbour_weight=0.4,
    second_neighbour_weight=0.0,
    time_weight=0.0,
    time_neighbour_weight=0.0,
    feedback_weight=0.0,
    conversation_weight=0.0,
    answer_weight=0.0,
    length_weight=0.0,
    cosine_weight=0.0,
    date_weight=0.0,
    date_said_weight=0.0,
    context_memories=0,
    lean_chars=0,
    diversity_weight=0.0,
    prompt_weight=0.0,
    asked_weight=0.0,
    cover_weight=0.0,
)

T = TypeVar("T")


def calibrated_cosine(cosine: float, calibration: Calibration = REFERENCE_CALIBRATION) -> float:
    """A cosine similarity on the score scale: 0 unrelated, 1 clearly about the query."""
    return calibration.score(cosine)


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
    neighbour, time and feedback rules need; the whole memory is read only for the results
    kept."""

    id: str
    score: float
    conversation_id: str
    created_at: float
    text: str = ""
    # The memory's kind (MemoryKind's value), "" where not known.
    kind: str = ""


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


@dataclass(frozen=True, slots=True)
class Context:
    """The memories of the best candidates' conversations (read whole, up to CONTEXT_LIMIT),
    with their cosine similarities to the query."""

    dense: Sequence[Candidate] = ()


NO_CONTEXT = Context()


def asks_question(text: str) -> bool:
    """Whether a memory asks something, so that the memory after it may be its answer."""
    return "?" in text


def _normaliser(hits: Sequence[Candidate]) -> tuple[float, float]:
    """The lowest and highest score of a signal's first-pass hits, which min-max maps to 0 and
    1; a context memory below the lowest maps to 0."""
    scores = [h.score for h in hits]
    return (min(scores), max(scores)) if scores else (0.0, 0.0)


def _share(score: float | None, bounds: tuple[float, float]) -> float:
    if score is None:
        return 0.0
    low, high = bounds
    if high - low <= 1e-12:
        return 1.0 if score >= high else 0.0
    return max(score - low, 0.0) / (high - low)


def _own_scores(
    dense_hits: Sequence[Candidate],
    sparse_hits: Sequence[Candidate],
    params: RankingParams,
    context: Context,
) -> tuple[dict[str, float], dict[str, Candidate], dict[str, float]]:
    """Each memory's own score (both signals' min-max shares), every memory's candidate, and
    the cosines known."""
    dense_bounds, sparse_bounds = _normaliser(dense_hits), _normaliser(sparse_hits)
    cosines = {h.id: h.score for h in (*context.dense, *dense_hits)}
    bm25 = {h.id: h.score for h in sparse_hits}
    candidates = {h.id: h for h in (*context.dense, *sparse_hits, *dense_hits)}
    weight = params.dense_weight
    own = {
        memory_id: weight * _share(cosines.get(memory_id), dense_bounds)
        + (1 - weight) * _share(bm25.get(memory_id), sparse_bounds)
        for memory_id in candidates
    }
    return own, candidates, cosines


def context_conversations(
    dense_hits: Sequence[Candidate],
    sparse_hits: Sequence[Candidate],
    params: RankingParams = DEFAULT,
) -> list[str]:
    """The conversations of the `context_memories` best candidates by their own scores, whose
    other memories the neighbour and answer rules read."""
    rules = params.neighbour_weight, params.second_neighbour_weight, params.answer_weight
    if params.context_memories <= 0 or not any(rules):
        return []
    own, candidates, _ = _own_scores(dense_hits, sparse_hits, params, NO_CONTEXT)
    best = sorted(own, key=lambda i: (-own[i], i))[: params.context_memories]
    return sorted({candidates[i].conversation_id for i in best} - {""})


def _scaled(ranked: list[tuple[T, float]], confidence: float) -> list[tuple[T, float]]:
    """Scores relative to the top, times the query's confidence: the top gets `confidence`."""
    if not ranked:
        return []
    top = ranked[0][1]
    return [(item, confidence * (value / top if top > 0 else 1.0)) for item, value in ranked]


# The hybrid ranking's features, in the order `explain` lists them. A memory's score is the
# sum of each feature's value times its weight (RankingParams.weight):
#   dense, keyword        its min-max share of each signal's first pass (its own score)
#   cosine                its raw cosine similarity to the query
#   length                log(1 + length / LENGTH_UNIT), capped at LENGTH_CAP characters
#   neighbours            the better own score of the turns before and after it
#   second_neighbours     the better own score of the turns two away
#   answer                the own score of the turn before it, when that turn asks something
#   asked                 for a prompt, the own score of its answer (the response after it)
#   prompt                1 for a prompt
#   says_when             1 when it says when something happened and the query asks when
#   when_near_words       for such a memory, the best own score of the turns one and two away
#   date                  1 when it is about a time the query names
#   date_said             1 when its own words place it in that time
#   conversation          its conversation's summed score, relative to the best conversation's
#   diversity             minus the number of memories of its conversation ranked above it
#   cover                 the weighted share of the query's words it has that none above has
FEATURES = (
    "dense",
    "keyword",
    "cosine",
    "length",
    "neighbours",
    "second_neighbours",
    "answer",
    "asked",
    "prompt",
    "says_when",
    "when_near_words",
    "date",
    "date_said",
    "conversation",
    "diversity",
    "cover",
)
_PROMPT, _RESPONSE = MemoryKind.PROMPT.value, MemoryKind.RESPONSE.value
_WEIGHT_OF = {
    "cosine": "cosine_weight",
    "length": "length_weight",
    "neighbours": "neighbour_weight",
    "second_neighbours": "second_neighbour_weight",
    "answer": "answer_weight",
    "asked": "asked_weight",
    "prompt": "prompt_weight",
    "says_when": "time_weight",
    "when_near_words": "time_neighbour_weight",
    "date": "date_weight",
    "date_said": "date_said_weight",
    "conversation": "conversation_weight",
    "diversity": "diversity_weight",
    "cover": "cover_weight",
}


def weight(params: RankingParams, feature: str) -> float:
    """The weight of one of FEATURES under `params`."""
    if feature == "dense":
        return params.dense_weight
    if feature == "keyword":
        return 1 - params.dense_weight
    return float(getattr(params, _WEIGHT_OF[feature]))


@dataclass(frozen=True, slots=True)
class Fused:
    """The hybrid ranking of one query: ids and scores best first, and, when asked for, each
    id's contribution of every feature (value times weight) to its score before scaling."""

    ranked: list[tuple[str, float]]
    contributions: dict[str, dict[str, float]]


@dataclass(frozen=True, slots=True)
class Features:
    """Every candidate of one query and each feature's value (before its weight) for every
    memory it is not 0 for, but the conversation and diversity features, which read the fused
    scores; and the query's best cosine, which the scores are scaled by."""

    values: dict[str, dict[str, float]]
    candidates: dict[str, Candidate]
    best_cosine: float
    # What the query is about (query_words), for the cover feature.
    words: dict[str, int]


def features(
    dense_hits: Sequence[Candidate],
    sparse_hits: Sequence[Candidate],
    params: RankingParams = DEFAULT,
    *,
    query: str = "",
    context: Context = NO_CONTEXT,
    local: timeframes.LocalCalendar = timeframes.UTC_CALENDAR,
) -> Features:
    """The features of every candidate of `query`: the candidates and the context's memories
    of the best conversations. Days are counted in `local`'s time zone."""
    dense_bounds, sparse_bounds = _normaliser(dense_hits), _normaliser(sparse_hits)
    cosines = {h.id: h.score for h in (*context.dense, *dense_hits)}
    bm25 = {h.id: h.score for h in sparse_hits}
    candidates = {h.id: h for h in (*context.dense, *sparse_hits, *dense_hits)}
    values: dict[str, dict[str, float]] = {name: {} for name in FEATURES}
    # Hundreds of candidates a search: each feature's values are filled in one pass.
    dense, keyword, cosine, length = (values[n] for n in ("dense", "keyword", "cosine", "length"))
    prompt, telling, date, date_said = (
        values[n] for n in ("prompt", "says_when", "date", "date_said")
    )
    own: dict[str, float] = {}
    # A memory the dense side did not return is no closer than the last one it did.
    floor = min((h.score for h in dense_hits), default=0.0)
    when = (params.time_weight > 0 or params.time_neighbour_weight > 0) and asks_when(query)
    dated = params.date_weight > 0 or params.date_said_weight > 0
    periods = timeframes.named_periods(query, local.today) if dated else ()
    months = timeframes.named_months(query) if dated else ()
    zone = local.zone
    conversations: dict[str, list[str]] = {}
    for memory_id, hit in candidates.items():
        dense_share = dense[memory_id] = _share(cosines.get(memory_id), dense_bounds)
        keyword_share = keyword[memory_id] = _share(bm25.get(memory_id), sparse_bounds)
        own[memory_id] = params.dense_weight * dense_share + (1 - params.dense_weight) * (
            keyword_share
        )
        text = hit.text
        cosine[memory_id] = cosines.get(memory_id, floor)
        length[memory_id] = math.log1p(min(len(text), LENGTH_CAP) / LENGTH_UNIT)
        if hit.kind == _PROMPT:
            prompt[memory_id] = 1.0
        if when and says_when(text):
            telling[memory_id] = 1.0
        if (periods or months) and timeframes.is_about(periods, text, hit.created_at, months, zone):
            date[memory_id] = 1.0
            if timeframes.says_about(periods, text, hit.created_at, months, zone):
                date_said[memory_id] = 1.0
        if hit.conversation_id:
            conversations.setdefault(hit.conversation_id, []).append(memory_id)
    neighbours, second, answer, asked, near_words = (
        values[n] for n in ("neighbours", "second_neighbours", "answer", "asked", "when_near_words")
    )
    lean_chars = params.lean_chars
    for ids in conversations.values():
        ids.sort(key=lambda i: (candidates[i].created_at, i))
        turns_of = [candidates[i] for i in ids]
        # Own scores in conversation order, two zeros either side: turn k is turns[k + 2].
        turns = [0.0, 0.0, *(own[i] for i in ids), 0.0, 0.0]
        last = len(ids) - 1
        for k, memory_id in enumerate(ids):
            size = len(turns_of[k].text)
            lean = min(1.0, lean_chars / size) if lean_chars and size else 1.0
            neighbours[memory_id] = lean * max(turns[k + 1], turns[k + 3])
            second[memory_id] = lean * max(turns[k], turns[k + 4])
            if k > 0 and asks_question(turns_of[k - 1].text):
                answer[memory_id] = lean * turns[k + 1]
            if k < last and turns_of[k].kind == _PROMPT and turns_of[k + 1].kind == _RESPONSE:
                # A long answer restates what it was asked about; a short reply less so.
                reply = len(turns_of[k + 1].text)
                says = min(1.0, reply / lean_chars) if lean_chars else 1.0
                asked[memory_id] = says * turns[k + 3]
            if memory_id in telling:
                near_words[memory_id] = max(turns[k], turns[k + 1], turns[k + 3], turns[k + 4])
    best_cosine = max((h.score for h in dense_hits), default=0.0)
    return Features(values, candidates, best_cosine, query_words(query))


def scored(
    features: Features,
    params: RankingParams = DEFAULT,
    *,
    explain: bool = False,
    calibration: Calibration = REFERENCE_CALIBRATION,
    depth: int | None = None,
) -> Fused:
    """The candidates' ids and scores, best first (the `depth` best, all without one): the
    sum of each one's FEATURES' values times their weights, scaled so the top carries the
    query's calibrated best cosine. With `explain`, each memory's contribution of every
    feature that is not 0."""
    # The conversation and diversity features are added to a copy: `features` stays as built.
    values = dict(features.values)
    candidates = features.candidates
    weights = {name: weight(params, name) for name in FEATURES}
    scores = dict.fromkeys(candidates, 0.0)
    for name, by_memory in values.items():
        w = weights[name]
        if w:
            for memory_id, value in by_memory.items():
                scores[memory_id] += w * value
    if weights["conversation"] > 0:
        shares = _conversation_shares(scores, candidates)
        values["conversation"] = shares
        for memory_id, share in shares.items():
            scores[memory_id] += weights["conversation"] * share
    if weights["diversity"] > 0 or weights["cover"] > 0:
        ranked, above, covered = _greedy(
            scores, candidates, weights["diversity"], weights["cover"], features.words, depth
        )
        values["diversity"] = {i: -float(n) for i, n in above.items() if n}
        values["cover"] = {i: c for i, c in covered.items() if c}
    else:
        ranked = [(i, scores[i]) for i in sorted(scores, key=lambda i: (-scores[i], i))][:depth]
    contributions: dict[str, dict[str, float]] = {}
    if explain:
        for memory_id, _ in ranked:
            contributions[memory_id] = {
                name: weights[name] * values[name][memory_id]
                for name in FEATURES
                if weights[name] and values[name].get(memory_id)
            }
    confidence = calibration.score(features.best_cosine)
    return Fused(_scaled(ranked, confidence), contributions)


def fuse(
    dense_hits: Sequence[Candidate],
    sparse_hits: Sequence[Candidate],
    params: RankingParams = DEFAULT,
    *,
    query: str = "",
    context: Context = NO_CONTEXT,
    explain: bool = False,
    calibration: Calibration = REFERENCE_CALIBRATION,
    local: timeframes.LocalCalendar = timeframes.UTC_CALENDAR,
) -> Fused:
    """The hybrid ranking of `query` in one call: its `features`, `scored`. Neighbours are the
    memories known on either side: the candidates and the context's memories of the best
    conversations."""
    return scored(
        features(dense_hits, sparse_hits, params, query=query, context=context, local=local),
        params,
        explain=explain,
        calibration=calibration,
    )


def _conversation_shares(
    scores: dict[str, float], candidates: dict[str, Candidate]
) -> dict[str, float]:
    """Each candidate's conversation's share of the query: the sum of its candidates' scores,
    relative to the best conversation's (a memory outside any conversation is one of its
    own)."""
    totals: dict[str, float] = {}
    for memory_id, score in scores.items():
        key = candidates[memory_id].conversation_id or f"\x00{memory_id}"
        totals[key] = totals.get(key, 0.0) + score
    best = max(totals.values(), default=0.0)
    if best <= 0:
        return {}
    return {
        memory_id: totals[candidates[memory_id].conversation_id or f"\x00{memory_id}"] / best
        for memory_id in scores
    }


# Words too common to say what a query is about.
_COMMON_WORDS = (
    "a about after again all also am an and any are as at be been before being but by can "
    "could did do does doing done for from get got had has have having how i if in into is it "
    "its just me more most my myself no not now of on or our out over so some such than that "
    "the their them then there these they this those to too up very was we were what when "
    "where which while who whom why will with would you your yours"
)
_STOPWORDS = frozenset(_COMMON_WORDS.split())
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _stem(word: str) -> str:
    """A word without its plural or possessive ending: "devices" and "device's" are "device"."""
    word = word.removesuffix("'s")
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def query_words(query: str) -> dict[str, int]:
    """The query's words that say what it is about (stemmed, stop words left out), each with
    how often it occurs."""
    words: dict[str, int] = {}
    for word in _WORD.findall(query.lower()):
        if len(word) > 2 and word not in _STOPWORDS:
            stem = _stem(word)
            words[stem] = words.get(stem, 0) + 1
    return words


@functools.lru_cache(maxsize=8192)
def text_words(text: str) -> frozenset[str]:
    """A memory's words, stemmed as query_words stems them."""
    return frozenset(_stem(word) for word in _WORD.findall(text.lower()))


def _greedy(
    scores: dict[str, float],
    candidates: dict[str, Candidate],
    diversity: float,
    cover: float,
    words: dict[str, int],
    depth: int | None = None,
) -> tuple[list[tuple[str, float]], dict[str, int], dict[str, float]]:
    """Greedy order of the `depth` first places (all without one): each place goes to the
    memory with the best score, less `diversity` for each memory of its conversation already
    placed, plus `cover` times the weighted share of the query's `words` it has that no memory
    placed has (a word weighs by its rarity among the candidates). Each comes with that score
    (never below 0), how many of its conversation were above it and the share it covered.
    Both terms only fall as memories are placed."""
    has = {i: text_words(candidates[i].text) for i in scores} if cover and words else {}
    rarity: dict[str, float] = {}
    if has:
        count = len(has)
        for word in words:
            present = sum(1 for memory_words in has.values() if word in memory_words)
            if present:
                rarity[word] = words[word] * math.log((count + 1) / present)
    total = sum(rarity.values())
    uncovered = set(rarity)

    def share(memory_id: str) -> float:
        if not total:
            return 0.0
        # In the query's word order, so that the sum is the same in every process.
        words_of = has[memory_id]
        return sum(r for w, r in rarity.items() if w in uncovered and w in words_of) / total

    placed: dict[str, int] = {}
    above: dict[str, int] = {}
    covered: dict[str, float] = {}
    heap = []
    for memory_id, value in scores.items():
        new = share(memory_id)
        heap.append((-(value + cover * new), memory_id, 0, new))
    heapq.heapify(heap)
    ranked: list[tuple[str, float]] = []
    places = len(heap) if depth is None else depth
    while heap and len(ranked) < places:
        negative, memory_id, seen, new = heapq.heappop(heap)
        key = candidates[memory_id].conversation_id or f"\x00{memory_id}"
        count = placed.get(key, 0)
        now = share(memory_id) if new else 0.0
        if count != seen or now < new:
            value = scores[memory_id] - diversity * count + cover * now
            heapq.heappush(heap, (-value, memory_id, count, now))
            continue
        placed[key] = count + 1
        above[memory_id] = count
        covered[memory_id] = new
        if new:
            uncovered.difference_update(has[memory_id])
        ranked.append((memory_id, max(-negative, 0.0)))
    return ranked, above, covered


def semantic(
    dense_hits: Sequence[ScoredMemory],
    limit: int,
    calibration: Calibration = REFERENCE_CALIBRATION,
) -> list[ScoredMemory]:
    """Dense order, each score its own calibrated cosine."""
    scored = (ScoredMemory(h.memory, calibration.score(h.score)) for h in dense_hits)
    return collapse_duplicates(scored, limit)


def keyword(
    sparse_hits: Sequence[ScoredMemory],
    best_cosine: float | None,
    limit: int,
    calibration: Calibration = REFERENCE_CALIBRATION,
) -> list[ScoredMemory]:
    """BM25 order, scaled by the query's best dense match like hybrid (by 1 when the caller
    has no dense vector to measure it with)."""
    confidence = 1.0 if best_cosine is None else calibration.score(best_cosine)
    scaled = _scaled([(h.memory, h.score) for h in sparse_hits], confidence)
    return collapse_duplicates((ScoredMemory(m, score) for m, score in scaled), limit)
